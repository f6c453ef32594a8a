"""Each user's own todos (AUTH token): another user's todo is a missing one, everywhere."""

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from tests.accounts import AccountsTestCase
from tests.base import across_databases, bearer
from todo import lists
from todo.driver import Connection
from todo.models import db
from todo.models.todo import Todo

TODOS = "/api/v1/todos"


@across_databases
class TestOwnership(AccountsTestCase):
    users = ("alice", "bob")
    # The adoption test shares the database with an app in AUTH none.
    sqlite_file = True

    def create(self, user: str, **fields) -> dict:
        """Create a todo as a user and return it."""
        response = self.client.post(
            TODOS, json={"title": f"{user}'s"} | fields, headers=self.as_user(user)
        )
        self.assertEqual(response.status_code, 201, response.get_data(as_text=True))
        return response.get_json()

    def ids(self, user: str, query: str = "") -> list[int]:
        """Return the ids a user's list shows."""
        response = self.client.get(f"{TODOS}{query}", headers=self.as_user(user))
        self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
        return [todo["id"] for todo in response.get_json()]

    def pages(self, user: str, query: str) -> tuple[list[int], list[int]]:
        """Follow pages from `query`; return the ids shown and the ids the links start after."""
        shown, linked_after = [], []
        url: str | None = f"{TODOS}{query}"
        while url is not None:
            response = self.client.get(url, headers=self.as_user(user))
            self.assertEqual(response.status_code, 200)
            shown += [todo["id"] for todo in response.get_json()]
            url = None
            if "Link" in response.headers:
                url = response.headers["Link"].partition(">")[0].removeprefix("<")
                linked_after.append(int(parse_qs(urlsplit(url).query)["after"][0]))
        return shown, linked_after

    def answer(self, response) -> tuple:
        """Return all a client can see of an answer."""
        return response.status_code, response.get_data(as_text=True), sorted(response.headers)

    def test_another_users_todo_is_answered_exactly_as_a_missing_one(self):
        todo = self.create("alice", deadline_at="2023-02-27")
        url = f"{TODOS}/{todo['id']}"
        original = self.client.get(url, headers=self.as_user("alice"))
        tag = original.headers["ETag"]
        requests = [
            (method, body, precondition)
            for method, body in (
                ("GET", None),
                ("PUT", {"title": "taken over"}),
                ("PATCH", {"completed": True}),
                ("DELETE", None),
            )
            for precondition in (
                {},
                {"If-Match": tag},
                {"If-None-Match": tag},
                {"If-Match": "*"},
                {"If-None-Match": "*"},
            )
        ]
        expected = {"GET": 404, "PUT": 404, "PATCH": 404, "DELETE": 200}

        def ask_as_bob(method, body, precondition):
            headers = self.as_user("bob") | precondition
            return self.client.open(url, method=method, json=body, headers=headers)

        answers = []
        for method, body, precondition in requests:
            with self.subTest(method=method, precondition=precondition):
                response = ask_as_bob(method, body, precondition)
                self.assertEqual(response.status_code, expected[method])
                if method == "DELETE":
                    self.assertEqual(response.get_json(), {})
                else:
                    self.assertProblem(response, 404)
                answers.append(self.answer(response))
                now = self.client.get(url, headers=self.as_user("alice"))
                self.assertEqual(self.answer(now), self.answer(original))

        # Once alice's todo is really gone, bob gets the very same answers.
        self.client.delete(url, headers=self.as_user("alice"))
        for (method, body, precondition), answer in zip(requests, answers, strict=True):
            with self.subTest(method=method, precondition=precondition, missing=True):
                self.assertEqual(self.answer(ask_as_bob(method, body, precondition)), answer)

    def test_lists_filters_pages_and_links_show_only_the_callers_todos(self):
        soon = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        later = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
        owned: dict[str, list[dict]] = {"alice": [], "bob": []}
        # Interleaved ids, so that every page and link of one user straddles the other's.
        for number in range(8):
            user = ("alice", "bob")[number % 2]
            deadline = (soon, later, None)[number % 3]
            owned[user].append(self.create(user, completed=number % 4 < 2, deadline_at=deadline))
        # A filter is read through the users' index or walked, depending on how many todos
        # match (todo.lists); lists stream two todos a query, so that streams span batches.
        for index_batches in (0, 10**6):
            with (
                mock.patch.object(lists, "INDEX_BATCHES", index_batches),
                mock.patch.object(lists, "STREAM_BATCH", 2),
            ):
                self.check_lists_of(owned, later)

    def check_lists_of(self, owned: dict[str, list[dict]], later: str) -> None:
        """Assert that each user's lists, filtered and paged, show only that user's todos."""
        for user, todos in owned.items():
            mine = [todo["id"] for todo in todos]
            done = [todo["id"] for todo in todos if todo["completed"]]
            due = [
                todo["id"] for todo in todos if todo["deadline_at"] and todo["deadline_at"] < later
            ]
            for query, expected in (
                ("", mine),
                ("?completed=true", done),
                ("?completed=false", [i for i in mine if i not in done]),
                ("?window=7", due),
                ("?completed=false&window=7", [i for i in due if i not in done]),
            ):
                with self.subTest(user=user, query=query):
                    self.assertEqual(self.ids(user, query), expected)
            for query, expected in (
                ("?limit=1", mine),
                ("?limit=2", mine),
                ("?limit=1&completed=true", done),
                ("?limit=1&window=7", due),
            ):
                with self.subTest(user=user, query=query):
                    shown, linked_after = self.pages(user, query)
                    self.assertEqual(shown, expected)
                    self.assertTrue(set(linked_after) <= set(mine), linked_after)
            with self.subTest(user=user, query="after another user's todo"):
                other = owned["bob" if user == "alice" else "alice"][0]["id"]
                self.assertEqual(self.ids(user, f"?after={other}"), [i for i in mine if i > other])

    def test_the_same_idempotency_key_from_two_users_creates_two_todos(self):
        def post(user: str, title: str = "same"):
            return self.client.post(
                TODOS,
                json={"title": title},
                headers=self.as_user(user) | {"Idempotency-Key": "shared-key"},
            )

        firsts = {user: post(user) for user in ("alice", "bob")}
        self.assertEqual([first.status_code for first in firsts.values()], [201, 201])
        self.assertNotEqual(firsts["alice"].get_json()["id"], firsts["bob"].get_json()["id"])
        for user, first in firsts.items():
            with self.subTest(user=user):
                self.assertNotIn("Idempotent-Replayed", first.headers)
                retry = post(user)
                self.assertEqual(retry.get_json(), first.get_json())
                self.assertEqual(retry.headers["Idempotent-Replayed"], "true")
                self.assertEqual(self.ids(user), [first.get_json()["id"]])
        # Bob's key is his own: reusing it with another body is his mistake alone.
        self.assertProblem(post("bob", "changed"), 422)

    def test_ids_are_global_and_never_reused_so_a_user_sees_gaps(self):
        first = self.create("alice")["id"]
        bobs = self.create("bob")["id"]
        second = self.create("alice")["id"]
        self.assertLess(first, bobs)
        self.assertLess(bobs, second)
        self.assertEqual(self.ids("alice"), [first, second])
        self.client.delete(f"{TODOS}/{bobs}", headers=self.as_user("bob"))
        self.assertGreater(self.create("bob")["id"], second)

    def test_todos_from_before_accounts_are_invisible_until_adopted(self):
        # The same database, served first with AUTH none, as before accounts existed.
        shared = self.other_app(SQLALCHEMY_DATABASE_URI=self.url).test_client()
        old = [shared.post(TODOS, json={"title": f"old {n}"}).get_json()["id"] for n in (1, 2)]
        url = f"{TODOS}/{old[0]}"
        before = shared.get(url)
        for user in ("alice", "bob"):
            with self.subTest(user=user):
                self.assertEqual(self.ids(user), [])
                for method, body in (("GET", None), ("PATCH", {"completed": True})):
                    response = self.client.open(
                        url, method=method, json=body, headers=self.as_user(user)
                    )
                    self.assertProblem(response, 404)
                response = self.client.delete(f"{TODOS}/{old[1]}", headers=self.as_user(user))
                self.assertEqual(response.get_json(), {})

        adopted = self.flask("todos", "adopt", "alice")
        self.assertEqual(adopted.exit_code, 0, adopted.output)
        self.assertIn("Gave 2 todos", adopted.output)

        self.assertEqual(self.ids("alice"), old)
        self.assertEqual(self.ids("bob"), [])
        # Adopting changes no todo as clients see it: its body and ETag stay as they were.
        after = self.client.get(url, headers=self.as_user("alice"))
        self.assertEqual(after.get_json(), before.get_json())
        self.assertEqual(after.headers["ETag"], before.headers["ETag"])
        changed = self.client.patch(url, json={"completed": True}, headers=self.as_user("alice"))
        self.assertEqual((changed.status_code, changed.get_json()["completed"]), (200, True))
        deleted = self.client.delete(url, headers=self.as_user("alice"))
        self.assertEqual(deleted.get_json()["id"], old[0])
        self.assertEqual(self.ids("alice"), old[1:])
        # In AUTH none they are still one shared list, whoever owns them now.
        self.assertEqual([todo["id"] for todo in shared.get(TODOS).get_json()], old[1:])

    def test_a_todo_added_through_the_model_has_no_owner(self):
        with self.app.app_context():
            todo = Todo(title="from Python", completed=True)
            db.session.add(todo)
            db.session.commit()
            todo_id = todo.id
        for user in ("alice", "bob"):
            with self.subTest(user=user):
                self.assertEqual(self.ids(user), [])
                response = self.client.get(f"{TODOS}/{todo_id}", headers=self.as_user(user))
                self.assertProblem(response, 404)
        self.assertEqual(self.flask("todos", "adopt", "bob").exit_code, 0)
        self.assertEqual(self.ids("bob"), [todo_id])


@across_databases
class TestCostOfATokenRequest(AccountsTestCase):
    """A bearer request reads its token inside its own statement and writes nothing."""

    users = ("alice",)

    def statements(self, method: str, url: str, headers: dict) -> tuple[int, list[str]]:
        """Send a request; return its status and the SQL of each statement it ran."""
        with mock.patch.object(
            Connection, "_run", autospec=True, side_effect=Connection._run
        ) as run:
            response = self.client.open(url, method=method, headers=headers)
        sql = [str(call.args[1].statement) for call in run.call_args_list]
        return response.status_code, sql

    def test_getting_a_todo_runs_one_select_that_checks_the_token(self):
        todo = self.client.post(TODOS, json={"title": "mine"}, headers=self.as_user("alice"))
        status, sql = self.statements("GET", todo.headers["Location"], self.as_user("alice"))
        self.assertEqual(status, 200)
        self.assertEqual(len(sql), 1, sql)
        self.assertTrue(sql[0].startswith("SELECT"), sql)
        self.assertIn("tokens.digest", sql[0])

    def test_a_missing_todo_looks_the_token_up_to_tell_401_from_404(self):
        status, sql = self.statements("GET", f"{TODOS}/999", self.as_user("alice"))
        self.assertEqual((status, len(sql)), (404, 2))
        self.assertTrue(all(statement.startswith("SELECT") for statement in sql), sql)
        status, _ = self.statements("GET", f"{TODOS}/999", bearer("todo_" + "x" * 43))
        self.assertEqual(status, 401)
