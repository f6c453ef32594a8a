"""Incremental sync, GET /api/v1/changes, as a client with a replica sees it (API.md, "Changes
since: incremental sync"): snapshots, catch-ups, paging, cursors, tombstones and their pruning,
the Python interface, bulk commands, accounts, the OpenAPI document.

The behaviours that do not depend on who is asking run twice: on the shared list (AUTH none),
and as alice in AUTH token while bob writes to his own list in between.
"""

import base64
import os
import string
import tempfile
import threading
import time
import unittest
from contextlib import ExitStack
from datetime import timedelta
from typing import Any
from unittest import mock

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from tests.accounts import AccountsTestCase, dispose
from tests.base import TOKEN_MODE, AppTestCase, across_databases, bearer, sign_up
from todo import create_app, store, streams
from todo.config import SettingsError
from todo.driver import Connection
from todo.models import db, utcnow
from todo.models.sync import Tombstone
from todo.models.todo import Todo

CHANGES = "/api/v1/changes"
TODOS = "/api/v1/todos"
CURSOR_MAX_LENGTH = 200
DEFAULT_LIMIT = 100
TOMBSTONE_DAYS = 30
URL_SAFE_BASE64 = string.ascii_letters + string.digits + "-_"

Replica = dict[int, dict[str, Any]]


def apply(replica: Replica, changes: list[dict[str, Any]]) -> None:
    """Apply an answer's changes as the contract tells a client to."""
    for change in changes:
        if change["op"] == "upsert":
            replica[change["todo"]["id"]] = change["todo"]
        else:
            replica.pop(change["id"], None)


def ops(changes: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Return each change as (op, id), the todo's id for an upsert."""
    return [
        (change["op"], change["todo"]["id"] if change["op"] == "upsert" else change["id"])
        for change in changes
    ]


def altered(cursor: str, position: int) -> str:
    """Return the cursor with one character replaced by another of the same alphabet."""
    replacement = URL_SAFE_BASE64[(URL_SAFE_BASE64.index(cursor[position]) + 1) % 64]
    return cursor[:position] + replacement + cursor[position + 1 :]


def decoded(cursor: str) -> bytes:
    """Return the bytes a (URL-safe, unpadded) base64 cursor stands for."""
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


class SyncClient:
    """A sync client's calls and replica, mixed into a test case that has `self.client`."""

    client: Any

    def owner(self) -> dict[str, str]:
        """Return the headers of the list under test: none for the shared list."""
        return {}

    def others_write(self) -> None:
        """Let other users change their own lists: nothing, when there is one list."""

    def changes_response(
        self, since: str | None = None, limit: int | str | None = None, headers=None, **query
    ):
        """Ask GET /changes; None leaves a parameter out."""
        params = {"since": since, "limit": limit} | query
        return self.client.get(
            CHANGES,
            query_string={name: value for name, value in params.items() if value is not None},
            headers=self.owner() if headers is None else headers,
        )

    def sync(self, since: str | None = None, limit: int | None = None, headers=None) -> dict:
        """Ask GET /changes, assert a well-formed 200, and return its body."""
        response = self.changes_response(since, limit, headers)
        self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
        body = response.get_json()
        self.assertEqual(set(body), {"changes", "cursor", "more"})
        self.assertLessEqual(len(body["cursor"]), CURSOR_MAX_LENGTH)
        self.assertLessEqual(len(body["changes"]), DEFAULT_LIMIT if limit is None else limit)
        ids = [todo_id for _, todo_id in ops(body["changes"])]
        self.assertEqual(len(ids), len(set(ids)), f"a todo twice in one answer: {body}")
        return body

    def follow(
        self, replica: Replica, since: str | None = None, limit: int | None = None, headers=None
    ) -> tuple[str, list[dict[str, Any]]]:
        """Apply answers to the replica until `more` is false; return the last cursor and
        every change received."""
        received: list[dict[str, Any]] = []
        while True:
            body = self.sync(since, limit, headers)
            apply(replica, body["changes"])
            received += body["changes"]
            since = body["cursor"]
            if not body["more"]:
                return since, received

    def catch_up(self, since: str | None = None, limit: int | None = None) -> tuple[str, Replica]:
        """Follow cursors from `since` into a new replica; return the last cursor and it."""
        replica: Replica = {}
        cursor, _ = self.follow(replica, since, limit)
        return cursor, replica

    def listed(self, headers=None) -> Replica:
        """Return what GET /todos shows, by id: what a replica must end up holding."""
        response = self.client.get(TODOS, headers=self.owner() if headers is None else headers)
        self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
        return {todo["id"]: todo for todo in response.get_json()}

    def write(self, method: str, url: str, body: dict | None = None, headers=None) -> dict:
        """Send a write to the API as the list's owner, assert it succeeded, return its body."""
        response = self.client.open(
            url, method=method, json=body, headers=self.owner() if headers is None else headers
        )
        self.assertIn(response.status_code, (200, 201), response.get_data(as_text=True))
        return response.get_json()

    def add(self, title: str = "A todo", **fields: Any) -> dict:
        return self.write("POST", TODOS, {"title": title} | fields)

    def assertGone(self, response) -> None:  # noqa: N802
        """Assert a 410 problem telling the client to start again."""
        body = self.assertProblem(response, 410)
        self.assertIn("since", body["detail"])

    def assertUnreadable(self, response) -> None:  # noqa: N802
        self.assertProblem(response, 400)


class SharedList(SyncClient, AppTestCase):
    """AUTH none: every client syncs the one shared list."""


class OwnLists(SyncClient, AccountsTestCase):
    """AUTH token: alice syncs her own list while bob changes his."""

    users = ("alice", "bob")

    def setUp(self) -> None:
        super().setUp()
        self.bobs: list[int] = []

    def owner(self) -> dict[str, str]:
        return self.as_user("alice")

    def others_write(self) -> None:
        """Bob creates a todo, changes it, and deletes the one he made before."""
        bob = self.as_user("bob")
        todo = self.write("POST", TODOS, {"title": "bob's"}, bob)
        self.write("PATCH", f"{TODOS}/{todo['id']}", {"completed": True}, bob)
        if self.bobs:
            self.write("DELETE", f"{TODOS}/{self.bobs.pop()}", None, bob)
        self.bobs.append(todo["id"])


# --- 1-3: the first sync, the catch-up, and an unchanging list -----------------------------


class FirstSync:
    """Tests of a sync without `since`, for either kind of list."""

    def test_without_since_every_todo_comes_as_an_upsert_and_nothing_more(self):
        self.others_write()
        todos = [self.add(f"todo {n}", completed=n % 2 == 0) for n in range(3)]
        self.others_write()
        self.write("DELETE", f"{TODOS}/{todos[1]['id']}")
        self.others_write()
        for since in (None, ""):
            with self.subTest(since=since):
                body = self.sync(since)
                self.assertFalse(body["more"])
                self.assertEqual(
                    body["changes"],
                    [{"op": "upsert", "todo": todo} for todo in self.listed().values()],
                )
                self.assertEqual(len(body["changes"]), 2)

    def test_an_empty_list_syncs_as_nothing(self):
        self.others_write()
        body = self.sync()
        self.assertEqual((body["changes"], body["more"]), ([], False))
        self.assertEqual(self.sync(body["cursor"])["changes"], [])

    def test_a_snapshot_comes_in_id_order_pages_and_each_todo_once(self):
        for n in range(5):
            self.add(f"todo {n}")
            self.others_write()
        listed = list(self.listed())
        for limit in (1, 2, 4, 5):
            with self.subTest(limit=limit):
                since, pages = None, []
                while True:
                    body = self.sync(since, limit)
                    pages.append(body)
                    since = body["cursor"]
                    if not body["more"]:
                        break
                # Pages are full until the last, which `more: false` marks.
                self.assertTrue(all(page["more"] for page in pages[:-1]))
                self.assertTrue(all(len(page["changes"]) == limit for page in pages[:-1]))
                received = [change for page in pages for change in page["changes"]]
                self.assertEqual(ops(received), [("upsert", todo_id) for todo_id in listed])

    def test_the_default_limit_is_100(self):
        for n in range(DEFAULT_LIMIT + 1):
            self.add(f"todo {n}")
        first = self.sync()
        self.assertEqual((len(first["changes"]), first["more"]), (DEFAULT_LIMIT, True))
        second = self.sync(first["cursor"])
        self.assertEqual((len(second["changes"]), second["more"]), (1, False))


class CatchUp:
    """Tests of a sync with `since`, for either kind of list."""

    def test_one_call_brings_each_changed_todo_once_in_its_latest_state(self):
        kept, put, patched, deleted = (self.add(title) for title in ("kept", "put", "pa", "del"))
        replica: Replica = {}
        cursor, _ = self.follow(replica)
        self.others_write()
        created = self.add("created")
        self.write("PATCH", f"{TODOS}/{created['id']}", {"completed": True})
        self.write("PUT", f"{TODOS}/{put['id']}", {"title": "put again"})
        self.write("PATCH", f"{TODOS}/{patched['id']}", {"description": "now described"})
        self.write("PATCH", f"{TODOS}/{patched['id']}", {"completed": True})
        self.write("DELETE", f"{TODOS}/{deleted['id']}")
        self.others_write()

        body = self.sync(cursor)
        self.assertFalse(body["more"])
        listed = self.listed()
        self.assertEqual(
            sorted(ops(body["changes"])),
            sorted(
                [
                    ("upsert", created["id"]),
                    ("upsert", put["id"]),
                    ("upsert", patched["id"]),
                    ("delete", deleted["id"]),
                ]
            ),
        )
        for change in body["changes"]:
            if change["op"] == "upsert":
                self.assertEqual(change["todo"], listed[change["todo"]["id"]])
        apply(replica, body["changes"])
        self.assertEqual(replica, listed)
        self.assertIn(kept["id"], replica)

    def test_a_todo_created_and_deleted_after_the_cursor_is_a_delete_or_nothing(self):
        self.add("stays")
        cursor, replica = self.catch_up()
        brief = self.add("brief")
        self.others_write()
        self.write("DELETE", f"{TODOS}/{brief['id']}")
        body = self.sync(cursor)
        self.assertIn(ops(body["changes"]), ([], [("delete", brief["id"])]))
        apply(replica, body["changes"])
        self.assertEqual(replica, self.listed())

    def test_a_todo_that_exists_is_never_announced_as_deleted(self):
        todos = [self.add(f"todo {n}") for n in range(4)]
        cursor, replica = self.catch_up()
        # A failed delete (a stale If-Match) and a delete of another's or no todo change nothing.
        refused = self.client.delete(
            f"{TODOS}/{todos[0]['id']}", headers=self.owner() | {"If-Match": '"999"'}
        )
        self.assertEqual(refused.status_code, 412)
        self.write("DELETE", f"{TODOS}/{todos[-1]['id'] + 1000}")
        self.others_write()
        self.write("DELETE", f"{TODOS}/{todos[1]['id']}")
        changes = self.follow(replica, cursor)[1]
        listed = self.listed()
        self.assertEqual(ops(changes), [("delete", todos[1]["id"])])
        self.assertFalse({todo_id for op, todo_id in ops(changes) if op == "delete"} & set(listed))
        self.assertEqual(replica, listed)

    def test_a_paged_catch_up_ends_as_the_one_call_catch_up(self):
        todos = [self.add(f"todo {n}") for n in range(6)]
        cursor, start = self.catch_up()
        for todo in todos[:3]:
            self.write("PATCH", f"{TODOS}/{todo['id']}", {"completed": True})
            self.others_write()
        self.write("DELETE", f"{TODOS}/{todos[3]['id']}")
        self.write("PUT", f"{TODOS}/{todos[0]['id']}", {"title": "again"})
        self.add("new")
        self.write("DELETE", f"{TODOS}/{todos[4]['id']}")
        whole, paged = dict(start), dict(start)
        _, at_once = self.follow(whole, cursor)
        _, one_by_one = self.follow(paged, cursor, limit=1)
        self.assertEqual(len(at_once), len(one_by_one))
        self.assertEqual(whole, paged)
        self.assertEqual(whole, self.listed())

    def test_following_cursors_on_an_unchanging_list_never_repeats_a_todo(self):
        for n in range(5):
            self.add(f"todo {n}")
        self.write("DELETE", f"{TODOS}/{self.add('gone')['id']}")
        self.others_write()
        for limit in (1, 3, None):
            with self.subTest(limit=limit):
                replica: Replica = {}
                cursor, received = self.follow(replica, limit=limit)
                ids = [todo_id for _, todo_id in ops(received)]
                self.assertEqual(len(ids), len(set(ids)), ids)
                self.assertEqual(replica, self.listed())
                for _ in range(2):
                    again = self.sync(cursor, limit)
                    self.assertEqual((again["changes"], again["more"]), ([], False))
                    cursor = again["cursor"]


@across_databases
class TestFirstSync(FirstSync, SharedList):
    pass


@across_databases
class TestFirstSyncOfOwnList(FirstSync, OwnLists):
    pass


@across_databases
class TestCatchUp(CatchUp, SharedList):
    pass


@across_databases
class TestCatchUpOfOwnList(CatchUp, OwnLists):
    pass


# --- 4, 5, 12: parameters, cursors, and errors that change nothing -------------------------


@across_databases
class TestParameters(SharedList):
    def test_limit_is_1_to_1000(self):
        for limit in (1, 1000):
            with self.subTest(limit=limit):
                self.sync(limit=limit)
        for limit in ("0", "1001", "-1", "x", "1.5", ""):
            with self.subTest(limit=limit):
                self.assertProblem(self.changes_response(limit=limit), 400, "limit")

    def test_a_repeated_or_unknown_parameter_is_a_400_naming_it(self):
        for query, fields in (
            ("limit=1&limit=2", ["limit"]),
            ("since=&since=", ["since"]),
            ("page=2", ["page"]),
            ("after=1&cursor=x", ["after", "cursor"]),
            ("Limit=5", ["Limit"]),
        ):
            with self.subTest(query=query):
                response = self.client.get(f"{CHANGES}?{query}")
                self.assertProblem(response, 400, *fields)


@across_databases
class TestCursors(SharedList):
    def setUp(self) -> None:
        super().setUp()
        todos = [self.add(f"todo {n}") for n in range(3)]
        self.cursor, self.replica = self.catch_up()
        self.write("PATCH", f"{TODOS}/{todos[0]['id']}", {"completed": True})

    def test_cursors_are_short_opaque_strings(self):
        self.assertLessEqual(len(self.cursor), CURSOR_MAX_LENGTH)
        self.assertRegex(self.cursor, r"^[A-Za-z0-9_-]+$")

    def test_a_cursor_that_cannot_be_read_is_a_400(self):
        for since in ("!!!", "not a cursor", "a", "é" * 10, "MS4wLjEu", "%00", "..."):
            with self.subTest(since=since):
                self.assertUnreadable(self.changes_response(since))
        with self.subTest(since="201 characters"):
            response = self.changes_response(self.cursor + "A" * (201 - len(self.cursor)))
            self.assertProblem(response, 400, "since")

    def test_a_forged_cursor_is_a_410(self):
        # As the cursors look (numbers and a signature), but signed by nobody.
        for payload in (b"1.0.0.", b"1.0.999.", b"1.0.0.0", b"2.0.1."):
            forged = base64.urlsafe_b64encode(payload + bytes(16)).rstrip(b"=").decode()
            with self.subTest(payload=payload):
                self.assertGone(self.changes_response(forged))

    def test_a_cursor_with_any_character_altered_is_refused(self):
        # The last character's spare bits included: only the spelling the server wrote counts.
        for position in range(len(self.cursor)):
            changed = altered(self.cursor, position)
            with self.subTest(
                position=position, same_bytes=decoded(changed) == decoded(self.cursor)
            ):
                response = self.changes_response(changed)
                self.assertIn(response.status_code, (400, 410), response.get_data())
                self.assertEqual(response.mimetype, "application/problem+json")

    def test_a_cursor_of_another_database_is_a_410_both_ways(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        other = create_app(
            {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder.name}/other.sqlite", "TESTING": True}
        )
        self.addCleanup(dispose, other)
        elsewhere = other.test_client()
        # The same todos there, so that only the cursor's origin differs.
        for n in range(3):
            elsewhere.post(TODOS, json={"title": f"todo {n}"})
        foreign = elsewhere.get(CHANGES).get_json()["cursor"]
        self.assertGone(self.changes_response(foreign))
        response = elsewhere.get(CHANGES, query_string={"since": self.cursor})
        self.assertEqual(response.status_code, 410, response.get_data(as_text=True))


@across_databases
class TestErrorsChangeNothing(SharedList):
    def test_refused_calls_leave_the_list_and_the_cursors_as_they_were(self):
        todos = [self.add(f"todo {n}") for n in range(4)]
        cursor, _ = self.catch_up()
        self.write("DELETE", f"{TODOS}/{todos[0]['id']}")
        self.write("PATCH", f"{TODOS}/{todos[1]['id']}", {"completed": True})
        listed = self.listed()
        before = self.changes_response(cursor).get_data()
        forged = base64.urlsafe_b64encode(b"1.0.0." + bytes(16)).rstrip(b"=").decode()
        for since, limit in (
            (cursor, 0),
            (cursor, "x"),
            ("garbage", None),
            (forged, None),
            (altered(cursor, 0), None),
            (cursor + "A" * CURSOR_MAX_LENGTH, None),
        ):
            with self.subTest(since=since, limit=limit):
                response = self.changes_response(since, limit)
                self.assertIn(response.status_code, (400, 410))
        self.assertEqual(self.listed(), listed)
        self.assertEqual(self.changes_response(cursor).get_data(), before)
        replica: Replica = {todo["id"]: todo for todo in todos}
        self.follow(replica, cursor)
        self.assertEqual(replica, listed)


# --- 6, 10: token mode --------------------------------------------------------------------


@across_databases
class TestOwnListsStayApart(OwnLists):
    def test_a_users_changes_hold_only_their_todos(self):
        alices = [self.add(f"alice {n}")["id"] for n in range(2)]
        self.others_write()
        cursors = {user: self.sync(headers=self.as_user(user))["cursor"] for user in self.users}
        self.others_write()
        alices.append(self.add("alice 2")["id"])
        self.write("PATCH", f"{TODOS}/{alices[0]}", {"completed": True})
        self.write("DELETE", f"{TODOS}/{alices[1]}")
        self.others_write()
        alice = self.sync(cursors["alice"])
        self.assertEqual(
            sorted(ops(alice["changes"])),
            sorted([("upsert", alices[0]), ("delete", alices[1]), ("upsert", alices[2])]),
        )
        bob = self.sync(cursors["bob"], headers=self.as_user("bob"))
        self.assertFalse({todo_id for _, todo_id in ops(bob["changes"])} & set(alices))
        for user in self.users:
            with self.subTest(user=user):
                replica: Replica = {}
                self.follow(replica, headers=self.as_user(user))
                self.assertEqual(replica, self.listed(self.as_user(user)))

    def test_another_users_cursor_is_a_410_never_their_data(self):
        self.add("alice's secret")
        alices = self.sync()["cursor"]
        self.write("PATCH", f"{TODOS}/{self.listed().popitem()[0]}", {"completed": True})
        self.others_write()
        response = self.changes_response(alices, headers=self.as_user("bob"))
        self.assertGone(response)
        self.assertNotIn("secret", response.get_data(as_text=True))

    def test_changes_need_a_valid_token(self):
        cursor = self.sync()["cursor"]
        for headers in ({}, bearer("todo_" + "x" * 43)):
            with self.subTest(headers=headers):
                self.assertProblem(self.changes_response(headers=headers), 401)
                self.assertProblem(self.changes_response(cursor, headers=headers), 401)

    def test_a_deleted_and_registered_again_user_starts_empty(self):
        token = sign_up(self.client, "carol")
        self.write("POST", TODOS, {"title": "carol's"}, bearer(token))
        cursor = self.sync(headers=bearer(token))["cursor"]
        self.write("DELETE", "/api/v1/users/me", None, bearer(token))
        self.assertProblem(self.changes_response(cursor, headers=bearer(token)), 401)

        again = sign_up(self.client, "carol")
        first = self.sync(headers=bearer(again))
        self.assertEqual((first["changes"], first["more"]), ([], False))
        response = self.changes_response(cursor, headers=bearer(again))
        self.assertGone(response)
        self.assertNotIn("carol's", response.get_data(as_text=True))


@across_databases
class TestModeSwitch(SyncClient, AppTestCase):
    """Restarting the service in the other AUTH mode makes every cursor of the former one 410."""

    def setUp(self) -> None:
        # A file or a server, which each restart's app opens anew.
        self.url = self.fresh_database_url()

    def tearDown(self) -> None:
        """Each app started is closed by its own cleanup."""

    def start(self, **settings: Any) -> None:
        """Start the service anew on the same database, with these settings."""
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.url, "TESTING": True} | settings)
        self.addCleanup(dispose, self.app)
        self.client = self.app.test_client()

    def test_cursors_do_not_survive_a_change_of_auth_mode(self):
        self.start()
        shared = self.add("shared")
        shared_cursor, _ = self.catch_up()

        self.start(**TOKEN_MODE)
        alice = bearer(sign_up(self.client, "alice"))
        mine = self.write("POST", TODOS, {"title": "alice's"}, alice)
        alice_cursor = self.sync(headers=alice)["cursor"]
        self.assertGone(self.changes_response(shared_cursor, headers=alice))

        # Back in AUTH none: alice's todo is on the shared list, which the old cursor never saw.
        self.start()
        self.write("PATCH", f"{TODOS}/{mine['id']}", {"completed": True})
        self.assertGone(self.changes_response(shared_cursor))
        _, replica = self.catch_up()
        self.assertEqual(set(replica), {shared["id"], mine["id"]})
        self.assertEqual(replica, self.listed())

        # And in AUTH token again: alice's cursor never saw that change.
        self.start(**TOKEN_MODE)
        self.assertGone(self.changes_response(alice_cursor, headers=alice))
        (change,) = self.sync(headers=alice)["changes"]
        self.assertEqual(change["todo"]["completed"], True)


# --- 7: tombstones and pruning ------------------------------------------------------------


class PruningTestCase(SharedList):
    def flask(self, *args: str):
        with self.app.app_context():
            return self.app.test_cli_runner().invoke(args=list(args))

    def backdate_tombstone(self, todo_id: int, days: int) -> None:
        """Make a deletion look `days` days old."""
        with self.app.app_context():
            db.session.execute(
                sa.update(Tombstone)
                .where(Tombstone.todo_id == todo_id)
                .values(deleted_at=utcnow() - timedelta(days=days))
            )
            db.session.commit()


@across_databases
class TestPruning(PruningTestCase):
    def test_a_cursor_older_than_pruned_deletions_is_a_410_and_younger_ones_go_on(self):
        old, young, kept = (self.add(title) for title in ("old", "young", "kept"))
        before_old, replica = self.catch_up()
        self.write("DELETE", f"{TODOS}/{old['id']}")
        after_old, _ = self.follow(replica, before_old)
        self.write("DELETE", f"{TODOS}/{young['id']}")
        self.backdate_tombstone(old["id"], TOMBSTONE_DAYS + 1)
        self.backdate_tombstone(young["id"], TOMBSTONE_DAYS - 1)

        result = self.flask("changes", "prune")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("Forgot 1 deleted todo.", result.output)

        self.assertGone(self.changes_response(before_old))
        body = self.sync(after_old)
        self.assertEqual(ops(body["changes"]), [("delete", young["id"])])
        apply(replica, body["changes"])
        self.assertEqual(replica, self.listed())
        self.assertEqual(set(replica), {kept["id"]})
        # Nothing young goes however often it runs.
        self.assertIn("Forgot 0 deleted todos.", self.flask("changes", "prune").output)
        self.assertEqual(ops(self.sync(after_old)["changes"]), [("delete", young["id"])])

    def test_a_worker_prunes_by_itself_at_most_once_a_minute(self):
        first, second = self.add("first"), self.add("second")
        before_first, replica = self.catch_up()
        self.write("DELETE", f"{TODOS}/{first['id']}")
        before_second, _ = self.follow(replica, before_first)
        self.write("DELETE", f"{TODOS}/{second['id']}")
        self.backdate_tombstone(first["id"], TOMBSTONE_DAYS + 1)
        # A worker that has not pruned for a long while does so once a call has answered.
        with mock.patch("todo.streams._last_prune", float("-inf")):
            self.assertEqual(len(self.sync(before_first)["changes"]), 2)
            self.assertGone(self.changes_response(before_first))
            # Within the minute, it leaves even an old deletion alone.
            self.backdate_tombstone(second["id"], TOMBSTONE_DAYS + 1)
            self.sync(before_second)
            body = self.sync(before_second)
            self.assertEqual(body["changes"], [{"op": "delete", "id": second["id"]}])

    def test_days_overrides_tombstone_days_but_0_is_refused(self):
        todo = self.add("gone")
        cursor, _ = self.catch_up()
        self.write("DELETE", f"{TODOS}/{todo['id']}")
        self.backdate_tombstone(todo["id"], 10)
        refused = self.flask("changes", "prune", "--days", "0")
        self.assertNotEqual(refused.exit_code, 0)
        self.assertIn("--days", refused.output)
        self.assertIn("Forgot 0 deleted todos.", self.flask("changes", "prune").output)
        self.assertEqual(ops(self.sync(cursor)["changes"]), [("delete", todo["id"])])
        self.assertIn(
            "Forgot 1 deleted todo.", self.flask("changes", "prune", "--days", "9").output
        )
        self.assertGone(self.changes_response(cursor))


@across_databases
class TestPruningAfterFiveDays(PruningTestCase):
    config = {"TOMBSTONE_DAYS": 5}

    def test_tombstone_days_is_the_default_of_the_prune(self):
        todo = self.add("gone")
        cursor, _ = self.catch_up()
        self.write("DELETE", f"{TODOS}/{todo['id']}")
        self.backdate_tombstone(todo["id"], 6)
        self.assertIn("Forgot 1 deleted todo.", self.flask("changes", "prune").output)
        self.assertGone(self.changes_response(cursor))


class TestTombstoneDaysSetting(unittest.TestCase):
    def test_an_invalid_number_of_days_stops_the_app(self):
        for days in (0, -1, "x", "30", True, 1.5, None, 36501):
            with self.subTest(days=days), self.assertRaises(SettingsError):
                create_app(
                    {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TOMBSTONE_DAYS": days}
                )

    def test_it_is_read_from_the_environment_as_a_number(self):
        with mock.patch.dict(os.environ, {"TODO_TOMBSTONE_DAYS": "7"}):
            app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})
        self.addCleanup(dispose, app)
        self.assertEqual(app.config["TOMBSTONE_DAYS"], 7)
        with mock.patch.dict(os.environ, {"TODO_TOMBSTONE_DAYS": "0"}):
            with self.assertRaises(SettingsError):
                create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})


# --- 8: the Python interface --------------------------------------------------------------


class PythonInterface:
    """Writes through the ORM model, for either kind of list."""

    def orm_owner(self) -> int | None:
        """The owner_id of the list under test's todos."""
        return None

    def test_orm_writes_are_changes_too(self):
        self.add("through the API")
        cursor, replica = self.catch_up()
        with self.app.app_context():
            todo = Todo(title="through Python", completed=False, owner_id=self.orm_owner())
            db.session.add(todo)
            db.session.commit()
            todo_id = todo.id
        cursor, changes = self.follow(replica, cursor)
        self.assertEqual(ops(changes), [("upsert", todo_id)])

        with self.app.app_context():
            db.session.get(Todo, todo_id).completed = True
            db.session.commit()
        cursor, changes = self.follow(replica, cursor)
        self.assertEqual(ops(changes), [("upsert", todo_id)])
        self.assertTrue(changes[0]["todo"]["completed"])

        with self.app.app_context():
            todo = db.session.get(Todo, todo_id)
            todo.title = todo.title
            db.session.add(todo)
            db.session.commit()
        self.assertEqual(self.sync(cursor)["changes"], [])

        with self.app.app_context():
            db.session.delete(db.session.get(Todo, todo_id))
            db.session.commit()
        cursor, changes = self.follow(replica, cursor)
        self.assertEqual(changes, [{"op": "delete", "id": todo_id}])
        self.assertEqual(replica, self.listed())

    def assertCaughtUpOrRestarted(self, replica: Replica, cursor: str) -> None:  # noqa: N802
        """Assert that following the cursor ends with the list, or that it is a 410."""
        response = self.changes_response(cursor)
        if response.status_code == 410:
            return
        self.follow(replica, cursor)
        self.assertEqual(replica, self.listed())

    def test_bulk_statements_through_the_session_are_changes_or_make_cursors_stale(self):
        todos = [self.add(f"todo {n}") for n in range(3)]
        for name, statement in (
            ("update", sa.update(Todo).where(Todo.id == todos[0]["id"]).values(completed=True)),
            ("delete", sa.delete(Todo).where(Todo.id == todos[1]["id"])),
            ("insert", sa.insert(Todo).values(title="inserted", owner_id=self.orm_owner())),
        ):
            with self.subTest(statement=name):
                cursor, replica = self.catch_up()
                with self.app.app_context():
                    db.session.execute(statement)
                    db.session.commit()
                self.assertCaughtUpOrRestarted(replica, cursor)


@across_databases
class TestPythonInterface(PythonInterface, SharedList):
    pass


@across_databases
class TestPythonInterfaceOnOwnList(PythonInterface, OwnLists):
    def orm_owner(self) -> int | None:
        return self.user_ids["alice"]

    def test_a_todo_given_to_another_owner_leaves_the_former_owners_replica(self):
        todo = self.add("alice's, then bob's")
        cursor, replica = self.catch_up()
        with self.app.app_context():
            db.session.get(Todo, todo["id"]).owner_id = self.user_ids["bob"]
            db.session.commit()
        self.assertNotIn(todo["id"], self.listed())
        self.assertCaughtUpOrRestarted(replica, cursor)
        bobs = self.sync(headers=self.as_user("bob"))["changes"]
        self.assertEqual(ops(bobs), [("upsert", todo["id"])])

    def test_an_orm_todo_without_owner_is_nobodys_change(self):
        cursor = self.sync()["cursor"]
        with self.app.app_context():
            db.session.add(Todo(title="nobody's"))
            db.session.commit()
        for user in self.users:
            with self.subTest(user=user):
                since = cursor if user == "alice" else None
                self.assertEqual(self.sync(since, headers=self.as_user(user))["changes"], [])


# --- 9: bulk commands ---------------------------------------------------------------------


class BulkTestCase:
    def flask(self, *args: str, input: bytes | None = None):
        with self.app.app_context():
            return self.app.test_cli_runner().invoke(args=list(args), input=input)

    def assertStaleAndResynced(self, cursor: str) -> None:  # noqa: N802
        """Assert that the old cursor is a 410 and a new sync brings every todo."""
        self.assertGone(self.changes_response(cursor))
        _, replica = self.catch_up(limit=3)
        self.assertEqual(replica, self.listed())


@across_databases
class TestBulkCommands(BulkTestCase, SharedList):
    def test_seeding_makes_cursors_stale(self):
        self.add("before")
        cursor, _ = self.catch_up()
        result = self.flask("todos", "seed", "5")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertStaleAndResynced(cursor)
        self.assertEqual(len(self.listed()), 6)

    def test_importing_makes_cursors_stale(self):
        self.add("before")
        cursor, _ = self.catch_up()
        lines = b"".join(
            orjson.dumps(
                {
                    "id": 100 + n,
                    "title": f"imported {n}",
                    "description": None,
                    "completed": False,
                    "deadline_at": None,
                    "created_at": "2026-11-01T08:00:00",
                    "updated_at": "2026-11-02T08:30:00",
                }
            )
            + b"\n"
            for n in range(4)
        )
        result = self.flask("todos", "import", "-", input=lines)
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertStaleAndResynced(cursor)
        self.assertEqual(len(self.listed()), 5)


@across_databases
class TestAdoption(BulkTestCase, OwnLists):
    def test_adopting_makes_cursors_stale(self):
        self.add("before")
        cursor, _ = self.catch_up()
        with self.app.app_context():
            db.session.add_all([Todo(title="orphan 1"), Todo(title="orphan 2")])
            db.session.commit()
        result = self.flask("todos", "adopt", "alice")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertStaleAndResynced(cursor)
        self.assertEqual(len(self.listed()), 3)


# --- 11: the OpenAPI document -------------------------------------------------------------


class TestOpenAPI(SharedList):
    def test_the_document_describes_changes(self):
        document = self.client.get("/api/v1/openapi.json").get_json()
        operation = document["paths"]["/changes"]["get"]
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        self.assertEqual(set(parameters), {"since", "limit"})
        self.assertEqual({p["in"] for p in parameters.values()}, {"query"})
        self.assertFalse(any(p.get("required") for p in parameters.values()))
        self.assertEqual(parameters["since"]["schema"]["maxLength"], CURSOR_MAX_LENGTH)
        limit = parameters["limit"]["schema"]
        self.assertEqual((limit["minimum"], limit["maximum"]), (1, 1000))

        responses = operation["responses"]
        ok = responses["200"]["content"]["application/json"]["schema"]
        self.assertEqual(ok, {"$ref": "#/components/schemas/ChangesOut"})
        for status in ("400", "410"):
            with self.subTest(status=status):
                problem = responses[status]["content"]["application/problem+json"]["schema"]
                self.assertEqual(problem, {"$ref": "#/components/schemas/Problem"})

        schemas = document["components"]["schemas"]
        out = schemas["ChangesOut"]
        self.assertEqual(set(out["required"]), {"changes", "cursor", "more"})
        items = out["properties"]["changes"]["items"]
        upsert, delete = "#/components/schemas/UpsertChange", "#/components/schemas/DeleteChange"
        self.assertEqual(items["oneOf"], [{"$ref": upsert}, {"$ref": delete}])
        self.assertEqual(
            items["discriminator"],
            {"propertyName": "op", "mapping": {"upsert": upsert, "delete": delete}},
        )
        self.assertEqual(schemas["UpsertChange"]["properties"]["op"]["const"], "upsert")
        self.assertEqual(
            schemas["UpsertChange"]["properties"]["todo"], {"$ref": "#/components/schemas/TodoOut"}
        )
        self.assertEqual(schemas["DeleteChange"]["properties"]["op"]["const"], "delete")
        self.assertEqual(set(schemas["DeleteChange"]["required"]), {"op", "id"})

    def test_an_answer_matches_the_documented_shape(self):
        from todo.schemas import ChangesOut

        todo = self.add("shaped")
        cursor = self.sync()["cursor"]
        self.write("DELETE", f"{TODOS}/{todo['id']}")
        self.add("another")
        for since in (None, cursor):
            with self.subTest(since=since):
                body = self.sync(since)
                self.assertEqual(ChangesOut.model_validate(body).model_dump(mode="json"), body)


# --- What sync costs writers: nothing they wait for ----------------------------------------

LOCK_WAIT = {
    "postgresql": "SET lock_timeout = '200ms'",
    "mysql": "SET SESSION innodb_lock_wait_timeout = 1",
}
# How many transactions wait for a lock right now, as the server tells.
LOCK_WAITERS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
    "mysql": "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'",
}
# How long a test waits for a lock wait to show, at most.
LOCK_WAIT_SHOWS = 10


@across_databases
class TestWritersOfOneList(AppTestCase):
    """A write only marks its change; a sync call numbers it later (README, "Sync")."""

    def database_url(self) -> str:  # type: ignore[override]
        if self.database == "SQLite":
            folder = self.enterContext(tempfile.TemporaryDirectory())
            return f"sqlite:///{folder}/todo.sqlite"
        return super().database_url()

    def make_app(self, **overrides: Any):
        # A write that waits gives up at once on SQLite, so that the test does not wait 30 s.
        return super().make_app(SQLITE_BUSY_TIMEOUT=0, **overrides)

    def writer(self, connections: ExitStack) -> Connection:
        """A connection that gives up quickly on a lock another one holds."""
        connection = connections.enter_context(Connection(db.engine))
        if connection.dialect.name in LOCK_WAIT:
            connection.execute(LOCK_WAIT[connection.dialect.name])
            connection.commit()
        return connection

    def test_writes_to_one_list_do_not_wait_for_each_other_on_database_servers(self):
        fields = {"title": "t", "description": None, "completed": False, "deadline_at": None}
        with self.app.app_context(), ExitStack() as connections:
            streams.ensure_started()
            first, second = self.writer(connections), self.writer(connections)
            first.begin()
            store.insert(first, fields, None)
            if db.engine.dialect.name == "sqlite":
                # SQLite has one write lock for the whole database: every write waits.
                with self.assertRaises(OperationalError):
                    second.begin()
                    store.insert(second, fields, None)
            else:
                second.begin()
                store.insert(second, fields, None)
                second.commit()
            first.commit()

    def test_a_sync_numbers_the_changes_committed_before_it_and_leaves_the_todos_as_they_were(
        self,
    ):
        created = self.client.post(TODOS, json={"title": "before"})
        with self.app.app_context():
            self.assertEqual(streams.number_pending(streams.SHARED_STREAM), 1)
            self.assertEqual(streams.number_pending(streams.SHARED_STREAM), 0)
        (change,) = self.client.get("/api/v1/changes").get_json()["changes"]
        self.assertEqual(change["todo"], created.get_json())
        fetched = self.client.get(f"{TODOS}/{created.get_json()['id']}")
        self.assertEqual(fetched.headers["ETag"], created.headers["ETag"])

    def test_a_delete_and_a_numbering_of_its_list_at_once_both_finish(self):
        todo_id = self.client.post(TODOS, json={"title": "going"}).get_json()["id"]
        with self.app.app_context(), ExitStack() as connections:
            deleting = self.writer(connections)
            deleting.begin()
            # The delete's first step: its todo, locked by key.
            store._find(deleting, todo_id, None, lock=True)
            if db.engine.dialect.name == "sqlite":
                # SQLite has one write lock for the whole database: the numbering waits.
                with self.assertRaises(OperationalError):
                    streams.number_pending(streams.SHARED_STREAM)
                return
            numbering = NumberingThread(self.app)
            numbering.start()
            self.wait_for_a_lock_wait(connections)
            # The rest of the delete, while the numbering waits for the todo: nothing of it
            # waits for the numbering (it would give up within a second here).
            deleting.execute(store.delete_todo("shared"), {"todo_id": todo_id, "version": 1})
            streams.bury(deleting, streams.SHARED_STREAM, todo_id)
            deleting.commit()
            numbering.join(LOCK_WAIT_SHOWS)
            self.assertFalse(numbering.is_alive())
            self.assertIsNone(numbering.error)
            # The deletion, committed after the numbering read, is numbered next time.
            self.assertEqual(streams.number_pending(streams.SHARED_STREAM), 1)

    def wait_for_a_lock_wait(self, connections: ExitStack) -> None:
        watcher = connections.enter_context(Connection(db.engine))
        deadline = time.monotonic() + LOCK_WAIT_SHOWS
        while not watcher.first(LOCK_WAITERS[watcher.dialect.name])[0]:
            watcher.commit()
            self.assertLess(time.monotonic(), deadline, "the numbering never waited")
            # MariaDB refreshes innodb_trx only when it was last read 0.1 s ago or more.
            time.sleep(0.15)


class NumberingThread(threading.Thread):
    """Numbers the shared list's pending changes in a thread of its own."""

    def __init__(self, app):
        super().__init__(daemon=True)
        self.app = app
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.app.app_context():
                streams.number_pending(streams.SHARED_STREAM)
        except BaseException as error:  # reported to the test, whatever it is
            self.error = error
