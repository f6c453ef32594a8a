"""The service under a real gunicorn with several workers: concurrency, crashes and shutdowns."""

import random
import socket
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import orjson
from sqlalchemy import create_engine, inspect, make_url, text

from tests.base import DatabaseTestCase, across_databases
from tests.server import CONFIG, CONNECTION_ERRORS, HOST, Client, Response, Server
from todo.database import head_revision

TODOS = "/api/v1/todos"
WORKERS = 3
CLIENTS = 8
REQUESTS_PER_CLIENT = 25
# Creates acknowledged before the server is stopped under load; each client could go on far
# longer, so the stop always lands in the middle of the load.
ACKNOWLEDGED_BEFORE_STOP = 60
CREATES_PER_CLIENT_AT_MOST = 200
# Updates of a todo being deleted, per client; the delete comes long before the last of them.
UPDATES_PER_CLIENT_AT_MOST = 200
# Bound on any group of client threads and on any wait for an event.
LOAD_TIMEOUT = 120.0
# Lines in the server's log that mean a request failed inside the app or a worker died.
LOG_TROUBLE = ("Traceback", "[ERROR]", "[CRITICAL]", "Database unavailable", "database is locked")


def run_concurrently(count: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Run `work(index, barrier)` in `count` threads at once; return results, raise failures."""
    barrier = threading.Barrier(count, timeout=LOAD_TIMEOUT)
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(work, index, barrier) for index in range(count)]
        return [future.result(timeout=LOAD_TIMEOUT) for future in futures]


def send_together(server: Server, requests: list[tuple]) -> list[Response]:
    """Send each request on its own connection, all at the same moment; return the responses."""

    def send(index: int, barrier: threading.Barrier) -> Response:
        with server.client() as client:
            client.connect()
            barrier.wait()
            return client.request(*requests[index])

    return run_concurrently(len(requests), send)


def new_todo(rng: random.Random, label: str) -> dict:
    """Return the fields of a todo to create, different for every label."""
    return {
        "title": f"{label} ünï 🎉",
        "description": rng.choice([None, f"about {label}"]),
        "completed": rng.choice([True, False]),
        "deadline_at": rng.choice(
            [None, f"2030-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T08:30:00"]
        ),
    }


def etag(response: Response) -> str:
    """Return the ETag header of a response."""
    return response.headers["ETag"]


class ServerTestCase(DatabaseTestCase):
    """Each test starts gunicorn on a fresh database: an SQLite file, or a server's emptied one."""

    # Seconds each, not milliseconds: `pytest -m "not slow"` leaves them out (conftest.py).
    slow = True

    def setUp(self) -> None:
        self.use_fresh_database()

    def use_fresh_database(self) -> None:
        """Point the next server at a database without tables."""
        self.url = self.fresh_database_url()

    def start_server(self, workers: int = WORKERS, config: str | None = CONFIG) -> Server:
        """Start gunicorn on this test's database; it is stopped when the test ends."""
        server = Server(self.url, workers, config)
        self.addCleanup(server.close)
        return server.start()

    def assertCleanLog(self, server: Server) -> None:  # noqa: N802
        """Assert that no request failed inside the app and no worker died."""
        log = server.log()
        for trouble in LOG_TROUBLE:
            self.assertNotIn(trouble, log, log[-5000:])

    def list_todos(self, server: Server) -> dict[int, dict]:
        """Return every stored todo by id."""
        with server.client() as client:
            response = client.request("GET", TODOS)
        self.assertEqual(response.status, 200)
        return {todo["id"]: todo for todo in response.json()}

    def create_until_stopped(self, server: Server) -> tuple[dict[int, dict], Callable[[], None]]:
        """Start clients that create todos until the server goes away.

        Returns the acknowledged todos by id (filled in as they are acknowledged) and a function
        that waits for the clients to finish.
        """
        acknowledged: dict[int, dict] = {}
        lock = threading.Lock()
        enough = threading.Event()

        def create(index: int, barrier: threading.Barrier) -> None:
            rng = random.Random(index)
            with server.client() as client:
                client.connect()
                barrier.wait()
                for step in range(CREATES_PER_CLIENT_AT_MOST):
                    fields = new_todo(rng, f"client {index} todo {step}")
                    try:
                        response = client.request("POST", TODOS, fields)
                    except CONNECTION_ERRORS:
                        return
                    self.assertEqual(response.status, 201, response.body)
                    body = response.json()
                    with lock:
                        self.assertNotIn(body["id"], acknowledged)
                        acknowledged[body["id"]] = body
                        if len(acknowledged) >= ACKNOWLEDGED_BEFORE_STOP:
                            enough.set()
            self.fail("The server was still up after every create; stop it sooner.")

        pool = ThreadPoolExecutor(CLIENTS)
        barrier = threading.Barrier(CLIENTS, timeout=LOAD_TIMEOUT)
        futures = [pool.submit(create, index, barrier) for index in range(CLIENTS)]

        def finish() -> None:
            try:
                for future in futures:
                    future.result(timeout=LOAD_TIMEOUT)
            finally:
                pool.shutdown(cancel_futures=True)

        self.assertTrue(enough.wait(LOAD_TIMEOUT), "the clients made too little progress")
        return acknowledged, finish

    def assertStored(self, server: Server, acknowledged: dict[int, dict]) -> None:  # noqa: N802
        """Assert that every acknowledged todo is stored exactly as it was acknowledged."""
        stored = self.list_todos(server)
        missing = sorted(set(acknowledged) - set(stored))
        self.assertEqual(missing, [], "acknowledged todos were lost")
        for todo_id, todo in acknowledged.items():
            self.assertEqual(stored[todo_id], todo)


@across_databases
class TestStart(ServerTestCase):
    def test_workers_starting_together_on_a_fresh_database_create_the_schema_once(self):
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                if attempt:
                    self.use_fresh_database()
                self.assertStartsCleanly(self.start_server(workers=4))

    def test_plain_gunicorn_command_starts_several_workers_on_a_fresh_database(self):
        # `gunicorn -w 4 "todo:create_app()"`: gunicorn's defaults, sync workers.
        self.assertStartsCleanly(self.start_server(workers=4, config=None))

    def assertStartsCleanly(self, server: Server) -> None:  # noqa: N802
        with server.client() as client:
            self.assertEqual(client.request("POST", TODOS, {"title": "x"}).status, 201)
        server.stop()
        self.assertEqual(server.process.returncode, 0)
        self.assertEqual(server.log().count("Booting worker"), 4, server.log())
        self.assertCleanLog(server)
        self.assertSchemaComplete()

    def assertSchemaComplete(self) -> None:  # noqa: N802
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                tables = set(inspect(connection).get_table_names())
                revisions = connection.execute(text("SELECT version_num FROM alembic_version"))
                self.assertEqual(revisions.scalars().all(), [head_revision()])
        finally:
            engine.dispose()
        self.assertLessEqual({"todos", "idempotency_keys", "alembic_version"}, tables)


@across_databases
class TestConcurrentClients(ServerTestCase):
    def test_concurrent_writes_are_all_stored_without_errors_or_reused_ids(self):
        server = self.start_server()
        with server.client() as client:
            shared = client.request("POST", TODOS, {"title": "everyone's"}).json()

        def work(index: int, barrier: threading.Barrier) -> tuple[list[int], dict, dict]:
            rng = random.Random(index)
            created: list[int] = []
            live: dict[int, dict] = {}
            etags: dict[int, str] = {}
            with server.client() as client:
                client.connect()
                barrier.wait()
                for step in range(REQUESTS_PER_CLIENT):
                    choice = rng.random()
                    if not live or choice < 0.45:
                        fields = new_todo(rng, f"client {index} todo {step}")
                        response = client.request("POST", TODOS, fields)
                        self.assertEqual(response.status, 201, response.body)
                        todo = response.json()
                        self.assertEqual({name: todo[name] for name in fields}, fields)
                        created.append(todo["id"])
                    elif choice < 0.75:
                        todo_id = rng.choice(list(live))
                        changes = {"title": f"client {index} step {step}", "completed": True}
                        # Half the updates are conditional; nobody else changes these todos.
                        headers = {"If-Match": etags[todo_id]} if rng.random() < 0.5 else {}
                        response = client.request("PATCH", f"{TODOS}/{todo_id}", changes, headers)
                        self.assertEqual(response.status, 200, response.body)
                        todo = response.json()
                        self.assertEqual(
                            todo, live[todo_id] | changes | {"updated_at": todo["updated_at"]}
                        )
                    elif choice < 0.85:
                        changes = {"description": f"client {index} was here"}
                        response = client.request("PUT", f"{TODOS}/{shared['id']}", changes)
                        self.assertEqual(response.status, 200, response.body)
                        continue
                    else:
                        todo_id = rng.choice(list(live))
                        response = client.request("DELETE", f"{TODOS}/{todo_id}")
                        self.assertEqual(response.status, 200, response.body)
                        self.assertEqual(response.json(), live.pop(todo_id))
                        continue
                    live[todo["id"]] = todo
                    etags[todo["id"]] = etag(response)
            return created, live, etags

        results = run_concurrently(CLIENTS, work)

        created = [todo_id for ids, _, _ in results for todo_id in ids]
        self.assertEqual(len(created), len(set(created)), "an id was handed out twice")
        self.assertNotIn(shared["id"], created)
        live = {todo_id: todo for _, todos, _ in results for todo_id, todo in todos.items()}
        stored = self.list_todos(server)
        self.assertEqual(set(stored), set(live) | {shared["id"]}, "stored ids differ")
        self.assertStored(server, live)
        with server.client() as client:
            for _, _, etags in results:
                for todo_id, tag in etags.items():
                    if todo_id in live:
                        response = client.request(
                            "GET", f"{TODOS}/{todo_id}", headers={"If-None-Match": tag}
                        )
                        self.assertEqual(response.status, 304, todo_id)
        self.assertCleanLog(server)

    def test_deleting_a_todo_that_others_keep_updating_succeeds(self):
        server = self.start_server()
        for _ in range(3):
            with server.client() as client:
                path = f"{TODOS}/{client.request('POST', TODOS, {'title': 'hot'}).json()['id']}"
            statuses = self.delete_while_others_update(server, path)
            self.assertEqual(statuses[0], {200})
            self.assertLessEqual(set().union(*statuses[1:]), {200, 404})
            with server.client() as client:
                self.assertEqual(client.request("GET", path).status, 404)
        self.assertCleanLog(server)

    def delete_while_others_update(self, server: Server, path: str) -> list[set[int]]:
        """Delete a todo while the other clients update it; return each client's statuses."""

        def work(index: int, barrier: threading.Barrier) -> set[int]:
            statuses = set()
            with server.client() as client:
                client.connect()
                barrier.wait()
                if index == 0:
                    # A few reads first, so that the updates are well under way.
                    for _ in range(3):
                        client.request("GET", path)
                    return {client.request("DELETE", path).status}
                for step in range(UPDATES_PER_CLIENT_AT_MOST):
                    status = client.request("PATCH", path, {"title": f"{index} {step}"}).status
                    statuses.add(status)
                    if status == 404:
                        break
            return statuses

        return run_concurrently(CLIENTS, work)


@across_databases
class TestConditionalUpdates(ServerTestCase):
    def test_two_updates_with_the_same_if_match_one_wins_the_other_gets_412(self):
        server = self.start_server()
        for round_ in range(10):
            with server.client() as client:
                response = client.request("POST", TODOS, {"title": f"round {round_}"})
            path, tag = f"{TODOS}/{response.json()['id']}", etag(response)
            titles = [f"round {round_} client {index}" for index in range(2)]
            requests = [("PATCH", path, {"title": title}, {"If-Match": tag}) for title in titles]

            responses = send_together(server, requests)

            self.assertEqual(sorted(response.status for response in responses), [200, 412])
            won = next(response for response in responses if response.status == 200)
            lost = next(response for response in responses if response.status == 412)
            self.assertEqual(lost.headers["Content-Type"], "application/problem+json")
            with server.client() as client:
                current = client.request("GET", path)
            self.assertEqual(current.json(), won.json())
            self.assertEqual(etag(current), etag(won))
        self.assertCleanLog(server)


@across_databases
class TestIdempotentCreates(ServerTestCase):
    def test_simultaneous_posts_with_one_key_create_one_todo(self):
        server = self.start_server()
        for round_ in range(3):
            fields = {"title": f"idempotent {round_}"}
            headers = {"Idempotency-Key": f"key {round_}"}

            responses = send_together(server, [("POST", TODOS, fields, headers)] * 10)

            self.assertEqual([response.status for response in responses], [201] * 10)
            bodies = [response.json() for response in responses]
            self.assertEqual(bodies, [bodies[0]] * 10)
            stored = self.list_todos(server).values()
            self.assertEqual([todo["title"] for todo in stored].count(fields["title"]), 1)
        self.assertCleanLog(server)


@across_databases
class TestStopping(ServerTestCase):
    def test_acknowledged_creates_survive_sigkill_under_load(self):
        server = self.start_server()
        acknowledged, finish = self.create_until_stopped(server)
        server.kill()
        finish()
        acknowledged = dict(acknowledged)
        if self.database == "SQLite":
            with closing(sqlite3.connect(make_url(self.url).database)) as connection:
                self.assertEqual(connection.execute("PRAGMA integrity_check").fetchall(), [("ok",)])

        restarted = self.start_server()
        self.assertStored(restarted, acknowledged)
        with restarted.client() as client:
            response = client.request("POST", TODOS, {"title": "after the crash"})
        self.assertGreater(response.json()["id"], max(acknowledged), "an id was reused")
        self.assertCleanLog(restarted)

    def test_sigterm_under_load_finishes_requests_in_flight_and_loses_no_write(self):
        server = self.start_server()
        acknowledged, finish = self.create_until_stopped(server)
        with server.client() as in_flight:
            # A kept-alive connection is already accepted by a worker, so the request on it
            # is in flight for sure when the signal arrives half-way through its body.
            self.assertEqual(in_flight.request("GET", "/api/v1/health").status, 200)
            body = b'{"title": "in flight at SIGTERM"}'
            connection = in_flight.connection
            connection.putrequest("POST", TODOS)
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body[:10])
            server.terminate()
            connection.send(body[10:])
            response = connection.getresponse()
            self.assertEqual(response.status, 201)
            last = orjson.loads(response.read())
        finish()
        self.assertEqual(server.wait(), 0)
        acknowledged = dict(acknowledged) | {last["id"]: last}
        self.assertCleanLog(server)

        restarted = self.start_server()
        self.assertStored(restarted, acknowledged)


# How slow clients are handled is gunicorn's business, whatever the database: SQLite only.
class TestSlowClients(ServerTestCase):
    def test_clients_sending_byte_by_byte_do_not_hold_up_the_others(self):
        server = self.start_server(workers=1)
        body = b'{"title": "sent slowly"}'
        request = (
            f"POST {TODOS} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        # One client dribbles its headers, one its body; one connects and sends nothing.
        # With one worker of four threads, all three could hold a thread each.
        slow_headers = socket.create_connection((HOST, server.port), timeout=10)
        slow_body = socket.create_connection((HOST, server.port), timeout=10)
        silent = socket.create_connection((HOST, server.port), timeout=10)
        for sock in (slow_headers, slow_body, silent):
            self.addCleanup(sock.close)
        slow_body.sendall(request)
        dribbles = [(slow_headers, request + body), (slow_body, body)]

        # Between any two bytes of the slow requests, another client is answered promptly.
        for position in range(len(request + body)):
            for sock, data in dribbles:
                if position < len(data):
                    sock.sendall(data[position : position + 1])
            with Client(server.port, timeout=5) as other:
                response = other.request("POST", TODOS, {"title": f"quick {position}"})
            self.assertEqual(response.status, 201)

        for sock, _ in dribbles:
            answer = sock.recv(65536)
            self.assertTrue(answer.startswith(b"HTTP/1.1 201 "), answer)
        self.assertCleanLog(server)
