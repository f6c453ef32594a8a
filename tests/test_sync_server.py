"""Sync's guarantee under load: writers on several threads, through `todo serve` with several
workers, and a replica that syncs all along ends equal to GET /todos, on every database."""

import random
import threading
from collections.abc import Mapping
from urllib.parse import quote

from tests.base import PASSWORD, across_databases, basic
from tests.server import Client, Server, run_concurrently
from tests.test_server import ServerTestCase, new_todo, send_together

TODOS = "/api/v1/todos"
CHANGES = "/api/v1/changes"
WRITERS = 4
WRITES_PER_WRITER = 40
# Small pages, so that the replica pages through changes while the writers go on.
PAGE = 7
# A replica calls at least this often during the load, so that its cursors meet the writes.
CALLS_DURING_LOAD = 5


class Replica:
    """A client's copy of its list, kept by GET /changes as the contract says."""

    def __init__(self, client: Client, headers: Mapping[str, str]):
        self.client = client
        self.headers = dict(headers)
        self.todos: dict[int, dict] = {}
        self.cursor = ""
        self.calls = 0

    def sync_once(self) -> bool:
        """Apply one answer; return its `more`."""
        query = f"?limit={PAGE}" + (f"&since={quote(self.cursor)}" if self.cursor else "")
        response = self.client.request("GET", CHANGES + query, headers=self.headers)
        assert response.status == 200, response.body
        answer = response.json()
        ids = [c["todo"]["id"] if c["op"] == "upsert" else c["id"] for c in answer["changes"]]
        assert len(ids) == len(set(ids)), f"a todo came twice in one answer: {ids}"
        for change in answer["changes"]:
            if change["op"] == "upsert":
                self.todos[change["todo"]["id"]] = change["todo"]
            else:
                self.todos.pop(change["id"], None)
        self.cursor = answer["cursor"]
        self.calls += 1
        return answer["more"]

    def catch_up(self) -> None:
        while self.sync_once():
            pass


@across_databases
class TestSyncUnderLoad(ServerTestCase):
    """AUTH none: everyone writes the shared list, and the replica follows it."""

    settings: Mapping[str, str] = {}

    def sign_in(self, server: Server, username: str) -> dict[str, str]:
        """Return the headers of a request by this user (none in AUTH none)."""
        return {}

    def test_the_first_writes_of_every_worker_at_once_all_succeed(self):
        # Each worker records the sync state before its first write: together, on a new
        # database, exactly one of them makes the row and no request fails for it.
        server = self.start_server(env=self.settings)
        headers = self.sign_in(server, "alice")
        created = send_together(server, [("POST", TODOS, {"title": f"first {n}"}, headers)
                                         for n in range(3 * WRITERS)])  # fmt: skip
        self.assertEqual([response.status for response in created], [201] * 3 * WRITERS)
        with server.client() as client:
            answer = client.request("GET", f"{CHANGES}?limit=1000", headers=headers).json()
        self.assertEqual(len(answer["changes"]), 3 * WRITERS)
        self.assertCleanLog(server)

    def test_a_replica_synced_during_concurrent_writes_ends_equal_to_the_list(self):
        server = self.start_server(env=self.settings)
        users = [self.sign_in(server, name) for name in ("alice", "bob")]
        done = threading.Event()

        def write(index: int, barrier: threading.Barrier) -> None:
            rng = random.Random(index)
            # Half the writers write as each user: the replica's list and another one.
            headers = users[index % 2]
            live: list[int] = []
            with server.client() as client:
                client.connect()
                barrier.wait()
                for step in range(WRITES_PER_WRITER):
                    choice = rng.random()
                    if not live or choice < 0.45:
                        fields = new_todo(rng, f"writer {index} step {step}")
                        response = client.request("POST", TODOS, fields, headers)
                        self.assertEqual(response.status, 201, response.body)
                        live.append(response.json()["id"])
                    elif choice < 0.8:
                        todo_id = rng.choice(live)
                        change = {"title": f"writer {index} step {step}", "completed": True}
                        response = client.request("PATCH", f"{TODOS}/{todo_id}", change, headers)
                        self.assertEqual(response.status, 200, response.body)
                    else:
                        todo_id = live.pop(rng.randrange(len(live)))
                        response = client.request("DELETE", f"{TODOS}/{todo_id}", None, headers)
                        self.assertEqual(response.status, 200, response.body)

        def sync_along(barrier: threading.Barrier) -> Replica:
            with server.client() as client:
                replica = Replica(client, users[0])
                barrier.wait()
                while not done.is_set() or replica.calls < CALLS_DURING_LOAD:
                    replica.sync_once()
                replica.catch_up()
                return replica

        replica_barrier = threading.Barrier(2)
        result: list[Replica] = []
        syncing = threading.Thread(target=lambda: result.append(sync_along(replica_barrier)))
        syncing.start()
        try:
            replica_barrier.wait(timeout=60)
            run_concurrently(WRITERS, write)
        finally:
            done.set()
            syncing.join(timeout=120)
        self.assertFalse(syncing.is_alive(), "the replica did not finish")
        (replica,) = result
        with server.client() as client:
            response = client.request("GET", TODOS, headers=users[0])
            self.assertEqual(response.status, 200)
            expected = {todo["id"]: todo for todo in response.json()}
            self.assertTrue(expected, "the load left no todo to compare")
            self.assertEqual(replica.todos, expected)
            # Caught up: a call with the last cursor has nothing more to give.
            answer = client.request("GET", f"{CHANGES}?since={quote(replica.cursor)}",
                                    headers=users[0]).json()  # fmt: skip
            self.assertEqual((answer["changes"], answer["more"]), ([], False))
        self.assertCleanLog(server)


@across_databases
class TestSyncUnderLoadWithAccounts(TestSyncUnderLoad):
    """AUTH token: two users write their own lists; the replica follows the first one's."""

    settings = {"TODO_AUTH": "token", "TODO_REGISTRATION": "open"}

    def sign_in(self, server: Server, username: str) -> dict[str, str]:
        with server.client() as client:
            registered = client.request(
                "POST", "/api/v1/users", {"username": username, "password": PASSWORD}
            )
            self.assertEqual(registered.status, 201, registered.body)
            login = client.request("POST", "/api/v1/tokens", None, basic(username, PASSWORD))
            self.assertEqual(login.status, 201, login.body)
        return {"Authorization": f"Bearer {login.json()['token']}"}
