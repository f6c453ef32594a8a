"""Users, tokens and access: registering, logging in for a token, bearer requests, revoking,
deleting an account, and AUTH none, where none of it exists."""

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from tests.accounts import (
    BAD_LOGIN,
    BAD_TOKEN,
    ME,
    NO_TOKEN,
    TODOS,
    TOKEN,
    TOKENS,
    UNICODE_PASSWORD,
    USERS,
    AccountsTestCase,
    dispose,
    read_timestamp,
)
from tests.base import (
    PASSWORD,
    AppTestCase,
    across_databases,
    basic,
    bearer,
)
from todo import accounts
from todo.models import db, utcnow
from todo.models.idempotency import IdempotencyKey
from todo.models.todo import Todo
from todo.models.user import Token, User


@contextmanager
def counted_verifications() -> Iterator[list[str]]:
    """Count the password hashes the app verifies, while still verifying them for real."""
    real = accounts._hasher

    class CountingHasher:
        def verify(self, password_hash: str, password: str) -> bool:
            verified.append(password_hash)
            return real.verify(password_hash, password)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    verified: list[str] = []
    accounts._hasher = CountingHasher()  # type: ignore[assignment]
    try:
        yield verified
    finally:
        accounts._hasher = real


@across_databases
class TestRegistration(AccountsTestCase):
    def test_a_new_user_is_answered_with_exactly_its_id_name_and_time(self):
        response = self.register("Alice.B_2-c")
        self.assertEqual(response.status_code, 201, response.get_data(as_text=True))
        user = response.get_json()
        self.assertEqual(set(user), {"id", "username", "created_at"})
        self.assertEqual(user["username"], "Alice.B_2-c")
        self.assertIsInstance(user["id"], int)
        read_timestamp(user["created_at"])
        self.assertEqual(response.headers["Location"], ME)
        self.assertNotIn(PASSWORD, response.get_data(as_text=True))

    def test_usernames_are_one_in_any_letter_case_and_shown_as_first_registered(self):
        first = self.register("Carol").get_json()
        body = self.assertProblem(self.register("carol", "another password"), 409)
        self.assertNotIn("another password", str(body))
        token = self.log_in("CAROL").get_json()["token"]
        self.assertEqual(self.client.get(ME, headers=bearer(token)).get_json(), first)

    def test_the_password_is_stored_only_as_an_argon2id_hash(self):
        self.register("dave", UNICODE_PASSWORD)
        (row,) = [row for row in self.rows(User) if row["username"] == "dave"]
        self.assertTrue(row["password_hash"].startswith("$argon2id$"), row["password_hash"])
        for value in row.values():
            self.assertNotIn(UNICODE_PASSWORD, str(value))


class TestRegistrationRules(AccountsTestCase):
    """What a registration must look like; validation needs no database server."""

    def test_registration_is_closed_by_default(self):
        for settings in ({"AUTH": "token"}, {"AUTH": "token", "REGISTRATION": "closed"}):
            with self.subTest(settings=settings):
                client = self.other_app(**settings).test_client()
                response = client.post(USERS, json={"username": "eve", "password": PASSWORD})
                self.assertProblem(response, 403)
                login = client.post(TOKENS, headers=basic("eve", PASSWORD))
                self.assertUnauthorized(login, BAD_LOGIN)

    def test_usernames_of_1_to_64_allowed_characters_are_accepted(self):
        for username in ("a", "Z" * 64):
            with self.subTest(username=username):
                self.assertEqual(self.register(username).status_code, 201)

    def test_any_other_username_is_400_naming_the_field(self):
        for username in ("", "a" * 65, "al ice", "alïce", "a/b", "a@b", "a:b", " alice", 7, None):
            with self.subTest(username=username):
                self.assertProblem(self.register(username), 400, "username")
        response = self.client.post(USERS, json={"password": PASSWORD})
        self.assertProblem(response, 400, "username")

    def test_passwords_of_8_to_1024_unicode_characters_spaces_included_are_accepted(self):
        for username, password in (("eight", "ü 🔑 клюя"), ("longest", "ж" * 1024)):
            with self.subTest(password=password[:10]):
                self.assertEqual(self.register(username, password).status_code, 201)

    def test_any_other_password_is_400_without_echoing_it(self):
        for password in ("", "seven!7", "ü" * 7, "x" * 1025, 12345678, None, ["password"]):
            with self.subTest(password=str(password)[:10]):
                response = self.register("frank", password)
                self.assertProblem(response, 400, "password")
                if password:
                    self.assertNotIn(str(password), response.get_data(as_text=True))
        response = self.client.post(USERS, json={"username": "frank"})
        self.assertProblem(response, 400, "password")
        self.assertNotIn("frank", [row["username"] for row in self.rows(User)])

    def test_unknown_or_read_only_fields_are_400_naming_each(self):
        valid = {"username": "grace", "password": PASSWORD}
        for extra in ({"admin": True}, {"id": 1}, {"created_at": "2023-02-27T00:00:00"}):
            with self.subTest(extra=extra):
                response = self.client.post(USERS, json=valid | extra)
                self.assertProblem(response, 400, *extra)
                self.assertNotIn(PASSWORD, response.get_data(as_text=True))
        self.assertNotIn("grace", [row["username"] for row in self.rows(User)])

    def test_bodies_follow_the_bad_input_rules(self):
        valid = '{"username": "heidi", "password": "correct horse battery"}'
        for path in (USERS, TOKENS):
            with self.subTest(path=path, case="no JSON content type"):
                for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
                    response = self.client.post(
                        path, data=valid, content_type=content_type, headers=basic("x", PASSWORD)
                    )
                    self.assertProblem(response, 415)
            for body in ("{", "NaN", '{"username": "heidi",}', "[]", "null", '"heidi"', ""):
                with self.subTest(path=path, body=body):
                    response = self.client.post(
                        path, data=body, content_type="application/json", headers=basic("x", "y")
                    )
                    # An empty body asks POST /tokens for the defaults: the login is judged.
                    expected = 401 if (path, body) == (TOKENS, "") else 400
                    self.assertProblem(response, expected)
        self.assertNotIn("heidi", [row["username"] for row in self.rows(User)])


@across_databases
class TestTokens(AccountsTestCase):
    slow = True
    users = ("alice", "bob")

    def test_logging_in_answers_exactly_a_new_token_that_works(self):
        response = self.log_in("alice")
        self.assertEqual(response.status_code, 201, response.get_data(as_text=True))
        token = response.get_json()
        self.assertEqual(set(token), {"id", "name", "token", "created_at", "expires_at"})
        self.assertEqual((token["name"], token["expires_at"]), ("token", None))
        read_timestamp(token["created_at"])
        self.assertRegex(token["token"], TOKEN)
        secret = base64.urlsafe_b64decode(token["token"].removeprefix("todo_") + "=")
        self.assertGreaterEqual(len(secret) * 8, 256)
        me = self.client.get(ME, headers=bearer(token["token"]))
        self.assertEqual((me.status_code, me.get_json()["username"]), (200, "alice"))

    def test_the_server_keeps_only_a_hash_of_tokens_and_passwords(self):
        token = self.log_in("alice").get_json()["token"]
        secret = token.removeprefix("todo_")
        rows = self.rows(Token)
        self.assertEqual(len(rows), 3)
        for row in rows:
            for value in row.values():
                self.assertNotIn(secret, str(value))
        for row in self.rows(User):
            self.assertTrue(row["password_hash"].startswith("$argon2id$"))
            for value in row.values():
                self.assertNotIn(PASSWORD, str(value))

    def test_a_token_expires_the_given_number_of_days_after_it_was_made(self):
        for days in (1, 3650):
            with self.subTest(days=days):
                made = self.log_in("alice", name="laptop", expires_in_days=days).get_json()
                self.assertEqual(made["name"], "laptop")
                lifetime = read_timestamp(made["expires_at"]) - read_timestamp(made["created_at"])
                self.assertEqual(lifetime, timedelta(days=days))
                listed = self.client.get(TOKENS, headers=bearer(made["token"])).get_json()
                self.assertIn({key: made[key] for key in made if key != "token"}, listed)

    def test_an_expired_token_is_refused(self):
        token = self.log_in("alice", expires_in_days=1).get_json()["token"]
        self.assertEqual(self.client.get(ME, headers=bearer(token)).status_code, 200)
        with self.app.app_context():
            db.session.execute(
                update(Token)
                .where(Token.digest == accounts.digest(token))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            db.session.commit()
        self.assertUnauthorized(self.client.get(ME, headers=bearer(token)), BAD_TOKEN)
        self.assertUnauthorized(self.client.get(TODOS, headers=bearer(token)), BAD_TOKEN)

    def test_the_token_list_shows_the_callers_tokens_by_id_without_secrets(self):
        made = [self.log_in("alice", name=name).get_json() for name in ("laptop", "phone")]
        response = self.client.get(TOKENS, headers=self.as_user("alice"))
        listed = response.get_json()
        self.assertEqual([token["name"] for token in listed], ["token", "laptop", "phone"])
        self.assertEqual([token["id"] for token in listed], sorted(t["id"] for t in listed))
        for token in listed:
            self.assertEqual(set(token), {"id", "name", "created_at", "expires_at"})
        text = response.get_data(as_text=True)
        for secret in [token["token"] for token in made] + list(self.tokens.values()):
            self.assertNotIn(secret, text)
        bobs = self.client.get(TOKENS, headers=self.as_user("bob")).get_json()
        self.assertEqual([token["name"] for token in bobs], ["token"])
        self.assertNotIn(bobs[0]["id"], [token["id"] for token in listed])

    def test_a_revoked_token_is_answered_without_its_secret_and_refused_at_once(self):
        made = self.log_in("alice", name="laptop").get_json()
        revoke = f"{TOKENS}/{made['id']}"
        response = self.client.delete(revoke, headers=self.as_user("alice"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json(), {k: v for k, v in made.items() if k != "token"})
        self.assertUnauthorized(self.client.get(ME, headers=bearer(made["token"])), BAD_TOKEN)
        again = self.client.delete(revoke, headers=self.as_user("alice"))
        self.assertEqual((again.status_code, again.get_json()), (200, {}))
        listed = self.client.get(TOKENS, headers=self.as_user("alice")).get_json()
        self.assertNotIn(made["id"], [token["id"] for token in listed])

    def test_a_token_can_revoke_itself(self):
        made = self.log_in("alice").get_json()
        response = self.client.delete(f"{TOKENS}/{made['id']}", headers=bearer(made["token"]))
        self.assertEqual(response.get_json()["id"], made["id"])
        self.assertUnauthorized(self.client.get(TOKENS, headers=bearer(made["token"])), BAD_TOKEN)

    def test_another_users_token_is_answered_as_none_and_keeps_working(self):
        (bobs,) = self.client.get(TOKENS, headers=self.as_user("bob")).get_json()
        for token_id in (bobs["id"], 10**6, 0):
            with self.subTest(token_id=token_id):
                response = self.client.delete(f"{TOKENS}/{token_id}", headers=self.as_user("alice"))
                self.assertEqual((response.status_code, response.get_json()), (200, {}))
        self.assertEqual(self.client.get(ME, headers=self.as_user("bob")).status_code, 200)


class TestLogin(AccountsTestCase):
    """POST /tokens with HTTP Basic: what it accepts, and how it refuses."""

    users = ("alice",)

    def test_a_non_ascii_password_is_read_as_utf_8(self):
        self.register("ivan", UNICODE_PASSWORD)
        self.assertEqual(self.log_in("ivan", UNICODE_PASSWORD).status_code, 201)
        latin1 = base64.b64encode(f"ivan:{'pässwörd'}".encode("latin-1")).decode()
        response = self.client.post(TOKENS, headers={"Authorization": f"Basic {latin1}"})
        self.assertUnauthorized(response, BAD_LOGIN)

    def test_no_body_an_empty_object_or_nulls_give_a_token_named_token_that_never_expires(self):
        for body in (None, {}, {"name": None, "expires_in_days": None}):
            with self.subTest(body=body):
                response = self.client.post(TOKENS, headers=basic("alice", PASSWORD), json=body)
                self.assertEqual(response.status_code, 201, response.get_data(as_text=True))
                token = response.get_json()
                self.assertEqual((token["name"], token["expires_at"]), ("token", None))

    def test_a_chunked_body_is_refused_not_ignored(self):
        response = self.client.post(
            TOKENS,
            data='{"expires_in_days": 1}',
            content_type="application/json",
            headers=basic("alice", PASSWORD) | {"Transfer-Encoding": "chunked"},
        )
        self.assertProblem(response, 411)
        self.assertEqual(len(self.client.get(TOKENS, headers=self.as_user("alice")).get_json()), 1)

    def test_a_name_of_80_characters_is_accepted(self):
        self.assertEqual(self.log_in("alice", name="n" * 80).get_json()["name"], "n" * 80)

    def test_a_name_or_lifetime_out_of_range_is_400_naming_the_field(self):
        for field, value in (
            ("name", ""),
            ("name", "n" * 81),
            ("name", 5),
            ("expires_in_days", 0),
            ("expires_in_days", 3651),
            ("expires_in_days", -1),
            ("expires_in_days", "7"),
            ("expires_in_days", 1.5),
            ("expires_in_days", True),
            ("scope", "all"),
        ):
            with self.subTest(field=field, value=value):
                self.assertProblem(self.log_in("alice", **{field: value}), 400, field)
        self.assertEqual(len(self.client.get(TOKENS, headers=self.as_user("alice")).get_json()), 1)

    def test_a_wrong_password_and_an_unknown_user_get_the_same_answer_at_the_same_cost(self):
        answers = []
        for username, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
            with self.subTest(username=username), counted_verifications() as verified:
                response = self.log_in(username, password)
                self.assertUnauthorized(response, BAD_LOGIN)
                self.assertNotIn(password, response.get_data(as_text=True))
                self.assertEqual(len(verified), 1)
                answers.append((response.get_json(), dict(response.headers)))
        self.assertEqual(answers[0], answers[1])
        with counted_verifications() as verified:
            self.assertEqual(self.log_in("alice").status_code, 201)
        self.assertEqual(len(verified), 1)

    def test_missing_or_malformed_credentials_are_401_basic(self):
        plain = base64.b64encode(b"alice").decode()
        for headers in (
            {},
            {"Authorization": "Basic"},
            {"Authorization": "Basic !!!"},
            {"Authorization": f"Basic {plain}"},
            bearer(self.tokens["alice"]),
        ):
            with self.subTest(headers=headers):
                response = self.client.post(TOKENS, headers=headers)
                self.assertUnauthorized(response, BAD_LOGIN)


# Every route that needs a token, with a body where it takes one.
PRIVATE_ROUTES = (
    ("GET", TODOS, None),
    ("POST", TODOS, {"title": "x"}),
    ("GET", f"{TODOS}/1", None),
    ("PUT", f"{TODOS}/1", {"title": "x"}),
    ("PATCH", f"{TODOS}/1", {"completed": True}),
    ("DELETE", f"{TODOS}/1", None),
    ("GET", ME, None),
    ("DELETE", ME, None),
    ("GET", TOKENS, None),
    ("DELETE", f"{TOKENS}/1", None),
)


class TestBearerTokens(AccountsTestCase):
    users = ("alice",)

    def test_without_a_bearer_token_every_private_route_is_401(self):
        # Another scheme, even with alice's right password, counts as no token.
        for headers in ({}, basic("alice", PASSWORD), {"Authorization": "Token abc"}):
            for method, path, body in PRIVATE_ROUTES:
                with self.subTest(method=method, path=path, headers=headers):
                    response = self.client.open(path, method=method, json=body, headers=headers)
                    self.assertUnauthorized(response, NO_TOKEN)
        self.assertEqual(self.client.get(ME, headers=self.as_user("alice")).status_code, 200)

    def test_an_empty_malformed_or_unknown_token_is_401_invalid_token(self):
        token = self.tokens["alice"]
        for authorization in (
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearer garbage",
            "Bearer todo_" + "A" * 43,
            f"Bearer {token}x",
            f"Bearer {token[:-1]}",
            f"Bearer {token.upper()}",
            f"Bearer {token} {token}",
        ):
            for method, path, body in PRIVATE_ROUTES:
                with self.subTest(authorization=authorization, method=method, path=path):
                    response = self.client.open(
                        path, method=method, json=body, headers={"Authorization": authorization}
                    )
                    self.assertUnauthorized(response, BAD_TOKEN)

    def test_the_token_shows_its_user(self):
        me = self.client.get(ME, headers=self.as_user("alice")).get_json()
        self.assertEqual(set(me), {"id", "username", "created_at"})
        self.assertEqual((me["id"], me["username"]), (self.user_ids["alice"], "alice"))

    def test_public_routes_need_no_token(self):
        for path in ("/api/v1/health", "/api/v1/openapi.json", "/api/v1/docs"):
            with self.subTest(path=path):
                self.assertEqual(self.client.get(path).status_code, 200)
        self.assertEqual(self.register("judy").status_code, 201)
        self.assertEqual(self.log_in("judy").status_code, 201)


@across_databases
class TestDeletingAnAccount(AccountsTestCase):
    users = ("bob",)

    def test_deleting_the_account_removes_everything_it_owned_and_frees_its_name(self):
        user = self.register("Carol").get_json()
        token = self.log_in("carol").get_json()["token"]
        for headers in (bearer(token), self.as_user("bob")):
            created = self.client.post(
                TODOS, json={"title": "mine"}, headers=headers | {"Idempotency-Key": "k"}
            )
            self.assertEqual(created.status_code, 201)

        response = self.client.delete(ME, headers=bearer(token))
        self.assertEqual((response.status_code, response.get_json()), (200, user))

        carol, bob = user["id"], self.user_ids["bob"]
        self.assertEqual([row["id"] for row in self.rows(User)], [bob])
        self.assertEqual({row["user_id"] for row in self.rows(Token)}, {bob})
        self.assertEqual({row["owner_id"] for row in self.rows(Todo)}, {bob})
        self.assertEqual({row["owner_id"] for row in self.rows(IdempotencyKey)}, {bob})
        self.assertUnauthorized(self.client.get(ME, headers=bearer(token)), BAD_TOKEN)
        self.assertEqual(len(self.client.get(TODOS, headers=self.as_user("bob")).get_json()), 1)

        again = self.register("carol")
        self.assertEqual(again.status_code, 201)
        self.assertNotIn(again.get_json()["id"], (carol, bob))


class TestAuthNone(AppTestCase):
    """The default: no accounts, one shared list, exactly as before."""

    def test_users_and_tokens_do_not_exist(self):
        for method, path in (
            ("POST", USERS),
            ("GET", ME),
            ("DELETE", ME),
            ("POST", TOKENS),
            ("GET", TOKENS),
            ("DELETE", f"{TOKENS}/1"),
        ):
            with self.subTest(method=method, path=path):
                response = self.client.open(
                    path,
                    method=method,
                    json={"username": "alice", "password": PASSWORD},
                    headers=basic("alice", PASSWORD),
                )
                self.assertProblem(response, 404)

    def test_todos_work_without_a_token_and_ignore_one(self):
        for headers in ({}, bearer("garbage")):
            with self.subTest(headers=headers):
                todo = self.client.post(TODOS, json={"title": "shared"}, headers=headers)
                self.assertEqual(todo.status_code, 201)
                url = todo.headers["Location"]
                self.assertEqual(self.client.get(url, headers=headers).status_code, 200)
                changed = self.client.patch(url, json={"completed": True}, headers=headers)
                self.assertEqual(changed.get_json()["completed"], True)
                self.assertEqual(len(self.client.get(TODOS, headers=headers).get_json()), 1)
                self.assertEqual(self.client.delete(url, headers=headers).status_code, 200)
                self.assertEqual(self.client.get(TODOS, headers=headers).get_json(), [])


class CacheHeaderChecks:
    """Answers to a bearer request are private to it, whatever their status."""

    def assert_private(self, headers: dict[str, str], answers: dict[int, tuple]) -> None:
        for status, (method, path, body) in answers.items():
            with self.subTest(status=status, path=path):
                response = self.client.open(path, method=method, json=body, headers=headers)
                self.assertEqual(response.status_code, status)
                self.assertEqual(response.headers.get("Cache-Control"), "private")
                self.assertIn("authorization", [value.lower() for value in response.vary])

    def assert_not_private(self, answers: dict[int, tuple]) -> None:
        for status, (method, path, body) in answers.items():
            with self.subTest(status=status, path=path):
                response = self.client.open(path, method=method, json=body)
                self.assertEqual(response.status_code, status)
                self.assertNotIn("Cache-Control", response.headers)
                self.assertNotIn("authorization", [value.lower() for value in response.vary])


class TestCacheHeadersInTokenMode(CacheHeaderChecks, AccountsTestCase):
    users = ("alice",)

    def test_every_answer_to_a_bearer_request_is_private(self):
        self.assert_private(
            self.as_user("alice"),
            {
                200: ("GET", TODOS, None),
                201: ("POST", TODOS, {"title": "x"}),
                400: ("POST", TODOS, {"title": ""}),
                404: ("GET", f"{TODOS}/999", None),
            },
        )
        self.assert_private(bearer("garbage"), {401: ("GET", TODOS, None)})

    def test_answers_without_authorization_are_not_marked_private(self):
        self.assert_not_private(
            {
                200: ("GET", "/api/v1/health", None),
                401: ("GET", TODOS, None),
                400: ("POST", USERS, {"username": ""}),
            }
        )


class TestCacheHeadersInAuthNone(CacheHeaderChecks, AppTestCase):
    def test_every_answer_to_a_bearer_request_is_private(self):
        self.assert_private(
            bearer("anything"),
            {
                200: ("GET", TODOS, None),
                400: ("POST", TODOS, {"title": ""}),
                404: ("GET", f"{TODOS}/999", None),
            },
        )

    def test_answers_without_authorization_are_not_marked_private(self):
        self.assert_not_private({200: ("GET", TODOS, None), 404: ("GET", f"{TODOS}/999", None)})


class TestDatabaseDownWithAToken(AccountsTestCase):
    """A database that cannot be reached is a 503, never taken for a bad token."""

    users = ("alice",)
    sqlite_file = True

    def test_a_request_with_a_token_answers_503_not_401(self):
        # The database file's folder goes away: no new connection can open it.
        folder = os.path.dirname(self.url.removeprefix("sqlite:///"))
        dispose(self.app)
        os.rename(folder, folder + ".gone")
        self.addCleanup(os.rename, folder + ".gone", folder)
        for token in (self.tokens["alice"], "todo_" + "A" * 43):
            for path in (TODOS, ME, TOKENS):
                with self.subTest(path=path), self.assertLogs(self.app.logger, "WARNING"):
                    response = self.client.get(path, headers=bearer(token))
                    self.assertProblem(response, 503)
                    self.assertIn("Retry-After", response.headers)
                    self.assertNotIn("WWW-Authenticate", response.headers)
