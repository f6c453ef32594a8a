"""CORS: off by default; CORS_ORIGINS lets browser apps on those origins call the API."""

import os
from typing import Any
from unittest import mock

from tests.base import PASSWORD, TOKEN_MODE, AppTestCase, basic, bearer
from todo import accounts

TODOS = "/api/v1/todos"
TOKENS = "/api/v1/tokens"
HEALTH = "/api/v1/health"
APP = "https://app.example"
EXPOSED = {"etag", "location", "link", "retry-after", "idempotent-replayed"}
REQUESTED = {"authorization", "content-type", "if-match", "if-none-match", "idempotency-key"}


def header_set(value: str | None) -> set[str]:
    """Return the names in a comma-separated header, in lower case."""
    return {name.strip().lower() for name in (value or "").split(",") if name.strip()}


def preflight(client, path: str, origin: str = APP, method: str = "PUT"):
    """Ask as a browser does before a cross-origin request with the API's headers."""
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ", ".join(sorted(REQUESTED)),
        },
    )


class CorsTestCase(AppTestCase):
    config = TOKEN_MODE

    def user_token(self) -> str:
        """Register a user straight in the database and return a token of theirs."""
        with self.app.app_context():
            user = accounts.create_user("alice", PASSWORD)
            return accounts.create_token(user["id"], None, None)["token"]

    def assertCorsAllowed(self, response, origin: str = APP) -> None:  # noqa: N802
        """Assert that a browser on this origin may read the response and its headers."""
        self.assertEqual(response.headers.get("Access-Control-Allow-Origin"), origin)
        exposed = header_set(response.headers.get("Access-Control-Expose-Headers"))
        self.assertEqual(exposed, EXPOSED)
        # Tokens travel in a header, not in cookies: nothing asks the browser for those.
        self.assertNotIn("Access-Control-Allow-Credentials", response.headers)

    def assertPreflightAllowed(self, response, origin: str = APP, method: str = "PUT") -> None:  # noqa: N802
        self.assertTrue(200 <= response.status_code < 300, response.status_code)
        self.assertCorsAllowed(response, origin)
        methods = header_set(response.headers.get("Access-Control-Allow-Methods"))
        self.assertIn(method.lower(), methods)
        allowed = header_set(response.headers.get("Access-Control-Allow-Headers"))
        self.assertEqual(allowed, REQUESTED)
        self.assertNotIn("WWW-Authenticate", response.headers)

    def assertNoCors(self, response) -> None:  # noqa: N802
        cors = [
            name for name in response.headers.keys() if name.lower().startswith("access-control-")
        ]
        self.assertEqual(cors, [])


class TestCorsOffByDefault(CorsTestCase):
    """Without CORS_ORIGINS no response carries CORS headers, preflights included."""

    def test_no_response_has_cors_headers(self):
        token = self.user_token()
        origin = {"Origin": APP}
        responses = [
            self.client.get(HEALTH, headers=origin),
            self.client.get(TODOS, headers=origin),
            self.client.get(TODOS, headers=origin | bearer(token)),
            self.client.get(f"{TODOS}/999", headers=origin | bearer(token)),
            self.client.post(TOKENS, headers=origin),
            self.client.get("/api/v1/nowhere", headers=origin),
            preflight(self.client, f"{TODOS}/1"),
            preflight(self.client, TOKENS, method="POST"),
        ]
        for response in responses:
            with self.subTest(status=response.status_code):
                self.assertNoCors(response)

    def test_also_without_accounts(self):
        app = self.make_app(AUTH="none")
        self.assertNoCors(app.test_client().get(TODOS, headers={"Origin": APP}))
        self.assertNoCors(preflight(app.test_client(), f"{TODOS}/1"))


class TestCorsForListedOrigins(CorsTestCase):
    """CORS_ORIGINS as a list: those origins may call and read; others get no approval."""

    config = TOKEN_MODE | {"CORS_ORIGINS": [APP]}

    def test_a_simple_request_from_an_allowed_origin_may_be_read(self):
        response = self.client.get(HEALTH, headers={"Origin": APP})
        self.assertEqual(response.status_code, 200)
        self.assertCorsAllowed(response)
        # Whether the answer allows a reader depends on its Origin: caches must keep them apart.
        self.assertIn("Origin", response.vary)

    def test_an_authenticated_request_exposes_etag_and_location(self):
        token = self.user_token()
        headers = {"Origin": APP} | bearer(token)
        created = self.client.post(TODOS, json={"title": "from a browser"}, headers=headers)
        self.assertEqual(created.status_code, 201)
        self.assertCorsAllowed(created)
        self.assertIn("ETag", created.headers)
        self.assertIn("Location", created.headers)
        self.assertEqual(set(created.vary), {"Origin", "Authorization"})
        self.assertEqual(len(created.headers.getlist("Vary")), 1)

    def test_preflights_are_answered_without_a_token(self):
        for path, method in (
            (f"{TODOS}/1", "PUT"),
            (f"{TODOS}/1", "PATCH"),
            (f"{TODOS}/1", "DELETE"),
            (TODOS, "POST"),
            (TOKENS, "POST"),
            ("/api/v1/users/me", "DELETE"),
        ):
            with self.subTest(path=path, method=method):
                self.assertPreflightAllowed(
                    preflight(self.client, path, method=method), method=method
                )

    def test_another_origin_gets_no_approval(self):
        for origin in (
            "https://evil.example",
            "https://app.example.evil.example",
            "http://app.example",
        ):
            with self.subTest(origin=origin):
                response = self.client.get(HEALTH, headers={"Origin": origin})
                self.assertEqual(response.status_code, 200)
                self.assertNotIn("Access-Control-Allow-Origin", response.headers)
                response = preflight(self.client, f"{TODOS}/1", origin=origin)
                self.assertNotIn("Access-Control-Allow-Origin", response.headers)
                self.assertNotIn("Access-Control-Allow-Methods", response.headers)
                self.assertNotIn("Access-Control-Allow-Headers", response.headers)

    def test_error_answers_carry_cors_headers(self):
        token = self.user_token()
        origin = {"Origin": APP}
        errors = {
            401: self.client.get(TODOS, headers=origin),
            404: self.client.get(f"{TODOS}/999", headers=origin | bearer(token)),
            400: self.client.post(TODOS, json={"title": ""}, headers=origin | bearer(token)),
        }
        for status, response in errors.items():
            with self.subTest(status=status):
                self.assertProblem(response, status)
                self.assertCorsAllowed(response)

    def test_429s_carry_cors_headers_and_preflights_are_not_counted(self):
        client = self.make_app(RATE_LIMIT="2 per minute").test_client()
        origin = {"Origin": APP}
        self.assertEqual(client.get(HEALTH, headers=origin).status_code, 200)
        for _ in range(5):
            self.assertPreflightAllowed(preflight(client, f"{TODOS}/1"))
        self.assertEqual(client.post(TOKENS, headers=origin).status_code, 401)
        self.assertEqual(client.get(TODOS, headers=origin).status_code, 401)
        limited = client.get(TODOS, headers=origin)
        self.assertProblem(limited, 429)
        self.assertCorsAllowed(limited)
        self.assertIn("Retry-After", limited.headers)
        # A throttled browser app is still told so in a way it may read.
        self.assertPreflightAllowed(preflight(client, f"{TODOS}/1"))

    def test_throttled_logins_carry_cors_headers(self):
        origin = {"Origin": APP}
        for _ in range(10):
            self.assertEqual(self.client.post(TOKENS, headers=origin).status_code, 401)
        throttled = self.client.post(TOKENS, headers=origin | basic("alice", PASSWORD))
        self.assertProblem(throttled, 429)
        self.assertCorsAllowed(throttled)


class TestCorsOriginsFromTheEnvironment(CorsTestCase):
    """TODO_CORS_ORIGINS: JSON, a comma-separated list, or *."""

    def app_with(self, value: str):
        with mock.patch.dict(os.environ, {"TODO_CORS_ORIGINS": value}):
            return self.make_app()

    def allows(self, client, origin: str) -> bool:
        response = client.get(HEALTH, headers={"Origin": origin})
        return response.headers.get("Access-Control-Allow-Origin") in (origin, "*")

    def test_a_comma_separated_list(self):
        client = self.app_with("https://a.example, https://b.example").test_client()
        self.assertTrue(self.allows(client, "https://a.example"))
        self.assertTrue(self.allows(client, "https://b.example"))
        self.assertFalse(self.allows(client, "https://c.example"))
        self.assertPreflightAllowed(
            preflight(client, f"{TODOS}/1", origin="https://b.example"), "https://b.example"
        )

    def test_a_json_list(self):
        client = self.app_with(f'["{APP}"]').test_client()
        self.assertTrue(self.allows(client, APP))
        self.assertFalse(self.allows(client, "https://a.example"))

    def test_an_empty_value_is_off(self):
        client = self.app_with("").test_client()
        self.assertNoCors(client.get(HEALTH, headers={"Origin": APP}))


class TestCorsForAnyOrigin(CorsTestCase):
    """CORS_ORIGINS "*": every origin, answered with "*" itself, Authorization allowed."""

    config = TOKEN_MODE | {"CORS_ORIGINS": "*"}

    def test_any_origin_may_call_with_a_token(self):
        token = self.user_token()
        for origin in (APP, "https://elsewhere.example", "null"):
            with self.subTest(origin=origin):
                headers: dict[str, Any] = {"Origin": origin} | bearer(token)
                response = self.client.get(TODOS, headers=headers)
                self.assertEqual(response.status_code, 200)
                # "*" is accepted by browsers here: a request whose token is in the
                # Authorization header is not a credentialed request (no cookies).
                self.assertCorsAllowed(response, "*")
                self.assertPreflightAllowed(preflight(self.client, f"{TODOS}/1", origin), "*")

    def test_the_same_answer_for_every_origin(self):
        first = self.client.get(HEALTH, headers={"Origin": APP})
        second = self.client.get(HEALTH, headers={"Origin": "https://elsewhere.example"})
        self.assertEqual(first.headers["Access-Control-Allow-Origin"], "*")
        self.assertEqual(second.headers["Access-Control-Allow-Origin"], "*")
        self.assertNotIn("Origin", first.vary)

    def test_as_a_list_of_one_star_too(self):
        client = self.make_app(CORS_ORIGINS=["*"]).test_client()
        self.assertCorsAllowed(client.get(HEALTH, headers={"Origin": APP}), "*")
