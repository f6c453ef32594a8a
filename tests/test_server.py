"""The service as users run it (`todo serve`, several workers): concurrency, crashes,
shutdowns, the HTTP framing of request bodies, and slow clients."""

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import orjson
from sqlalchemy import create_engine, inspect, make_url, text

from tests.base import DatabaseTestCase, across_databases, skip_or_fail_in_ci
from tests.nginx import Nginx, nginx_binary
from tests.server import (
    CONNECTION_ERRORS,
    GRACEFUL_TIMEOUT,
    GUNICORN_CONFIG,
    HOST,
    LOAD_TIMEOUT,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    STARTED_WORKER,
    Client,
    HostileClients,
    Response,
    Server,
    gunicorn_command,
    raw_exchange,
    run_concurrently,
    serve_command,
)
from todo import create_app
from todo.database import head_revision
from todo.models import db, utcnow
from todo.models.todo import Todo

TODOS = "/api/v1/todos"
WORKERS = 3
CLIENTS = 8
REQUESTS_PER_CLIENT = 25
# Creates acknowledged before the server is stopped under load; each client could go on far
# longer, so the stop always lands in the middle of the load (even when a worker serves on
# until the graceful timeout, docs/deployment.md#stopping).
ACKNOWLEDGED_BEFORE_STOP = 60
CREATES_PER_CLIENT_AT_MOST = 5000
# Updates of a todo being deleted, per client; the delete comes long before the last of them.
UPDATES_PER_CLIENT_AT_MOST = 200
# Lines in the server's log that mean a request failed inside the app or a worker died.
LOG_TROUBLE = ("Traceback", "[ERROR]", "[CRITICAL]", "Database unavailable", "database is locked")
# Todos in the list that slow readers never finish reading (about 19 MB of JSON).
LONG_LIST = 100_000
# A normal request among hostile clients must be answered within this long.
PROMPT = 1.0


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
    """Each test starts its server on a fresh database: an SQLite file, or a server's, emptied."""

    # Seconds each, not milliseconds: `pytest -m "not slow"` leaves them out (conftest.py).
    slow = True

    def setUp(self) -> None:
        self.use_fresh_database()

    def use_fresh_database(self) -> None:
        """Point the next server at a database without tables."""
        self.url = self.fresh_database_url()

    def start_server(
        self,
        workers: int = WORKERS,
        command: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Server:
        """Start `todo serve` (or `command`) on this test's database; stopped when the test ends.

        With `todo serve`, it returns once every worker has started: a worker still building
        its app when it is told to stop is killed at the end of the graceful timeout, which
        the stopping tests would take for a worker that refused to stop.
        """
        server = Server(self.url, workers, command, env)
        self.addCleanup(server.close)
        server.start()
        if command is None:
            deadline = time.monotonic() + START_TIMEOUT
            while server.log().count(STARTED_WORKER["todo serve"]) < workers:
                self.assertLess(time.monotonic(), deadline, server.log()[-3000:])
                # Not a timing assumption: only a pause between polls of a bounded wait.
                time.sleep(0.05)
        return server

    def seed(self, count: int) -> None:
        """Store `count` todos straight into this test's database, creating its schema first."""
        app = create_app({"SQLALCHEMY_DATABASE_URI": self.url})
        now = utcnow()
        rows = [
            {"title": f"todo {number}", "description": f"number {number}",
             "completed": number % 2 == 0, "deadline_at": None,
             "created_at": now, "updated_at": now}
            for number in range(count)
        ]  # fmt: skip
        with app.app_context():
            db.session.execute(Todo.__table__.insert(), rows)
            db.session.commit()
            db.session.remove()
            db.engine.dispose()

    def assertStartsCleanly(self, server: Server, name: str = "todo serve") -> None:  # noqa: N802
        with server.client() as client:
            self.assertEqual(client.request("POST", TODOS, {"title": "x"}).status, 201)
        server.stop()
        self.assertEqual(server.process.returncode, 0)
        self.assertEqual(server.log().count(STARTED_WORKER[name]), server.workers, server.log())
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

    def assertStoppedGracefully(self, server: Server) -> None:  # noqa: N802
        """Assert that no worker had to be killed at the end of the graceful timeout.

        granian kills a worker only once the graceful timeout has run out, so a server that
        stopped sooner killed none; its "refused to gracefully stop" line can be false
        (docs/deployment.md, Stopping).
        """
        self.assertLess(server.stopping_time, GRACEFUL_TIMEOUT, server.log()[-3000:])

    def assertAnsweredPromptly(self, port: int, with_page: bool = False) -> None:  # noqa: N802
        """Assert that ten rounds of a normal client's requests each answer within PROMPT."""
        for step in range(10):
            requests = [
                ("GET", f"{TODOS}/1", None, 200),
                ("POST", TODOS, {"title": f"meanwhile {step}"}, 201),
            ]
            if with_page:
                requests.append(("GET", f"{TODOS}?limit=10", None, 200))
            for method, path, body, status in requests:
                with self.subTest(step=step, method=method, path=path):
                    start = time.monotonic()
                    # Each on a new connection, which must first be accepted.
                    with Client(port, timeout=PROMPT) as client:
                        response = client.request(method, path, body)
                    self.assertEqual(response.status, status)
                    self.assertLess(time.monotonic() - start, PROMPT)

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
        # `gunicorn "todo:create_app()"` with gunicorn's defaults (sync workers), and with the
        # alternative production settings of todo/gunicorn_conf.py.
        for config in (None, GUNICORN_CONFIG):
            with self.subTest(config=config):
                if config:
                    self.use_fresh_database()
                server = self.start_server(workers=4, command=gunicorn_command(config))
                self.assertStartsCleanly(server, "gunicorn")


# What the command does around the server is the same on every database: SQLite only.
class TestCommand(ServerTestCase):
    def test_python_m_todo_serve_runs_the_same_server(self):
        server = self.start_server(workers=2, command=[sys.executable, "-m", "todo", "serve"])
        self.assertStartsCleanly(server)

    def test_settings_that_cannot_work_are_refused_before_anything_starts(self):
        cases = {
            "WEB_CONCURRENCY": ("many", "WEB_CONCURRENCY must be a whole number"),
            "PORT": ("70000", "PORT must be from 1 to 65535"),
            "GRANIAN_LOG_ACCESS_ENABLED": ("maybe", "must be true or false"),
        }
        for name, (value, message) in cases.items():
            with self.subTest(name=name):
                done = subprocess.run(
                    serve_command(),
                    env={"DATABASE_URL": self.url, "PATH": "", name: value},
                    capture_output=True,
                    text=True,
                    timeout=REQUEST_TIMEOUT,
                )
                self.assertEqual(done.returncode, 2, done.stderr)
                self.assertIn(message, done.stderr)
                self.assertNotIn("Traceback", done.stderr)

    def test_variables_named_like_request_headers_do_not_reach_requests(self):
        # granian starts every request's environ from the process environment.
        server = self.start_server(workers=1, env={"HTTP_IF_MATCH": '"1-999"'})
        with server.client() as client:
            path = f"{TODOS}/{client.request('POST', TODOS, {'title': 'x'}).json()['id']}"
            self.assertEqual(client.request("PATCH", path, {"title": "y"}).status, 200)
        self.assertIn("ignoring HTTP_IF_MATCH", server.log())


class TestWorkers(ServerTestCase):
    def test_a_worker_that_dies_is_replaced(self):
        server = self.start_server(workers=2)
        before = server.worker_pids()
        self.assertEqual(len(before), 2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while time.monotonic() < deadline:
            workers = server.worker_pids()
            if len(workers) == 2 and victim not in workers:
                break
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        self.assertEqual(len(server.worker_pids() - before), 1, server.log())
        self.assertIn("Respawning worker-", server.log())
        # Both workers answer: each request on a new connection goes to either of them.
        for step in range(20):
            with server.client() as client:
                response = client.request("POST", TODOS, {"title": f"after {step}"})
            self.assertEqual(response.status, 201)


# Whether a server starts before its database is the server's business: SQLite only (the app
# level is tested on all three in tests/test_outage.py).
class TestStartingBeforeTheDatabase(ServerTestCase):
    """A server whose workers start before their database (a volume mounted late)."""

    def test_the_server_starts_answers_503_and_serves_once_the_database_is_there(self):
        parent = tempfile.TemporaryDirectory()
        self.addCleanup(parent.cleanup)
        folder = Path(parent.name) / "later"
        server = Server(f"sqlite:///{folder / 'todo.sqlite'}", workers=2)
        self.addCleanup(server.close)
        server.start(health=503)
        with server.client() as client:
            response = client.request("POST", TODOS, {"title": "too early"})
        self.assertEqual(response.status, 503)
        self.assertIn("Retry-After", response.headers)

        folder.mkdir()
        # Each worker catches up on its next request, at most a second after its last try.
        deadline = time.monotonic() + 10
        answers: list[int] = []
        while answers[-10:] != [201] * 10 and time.monotonic() < deadline:
            with server.client() as client:
                answers.append(client.request("POST", TODOS, {"title": "on time"}).status)
            self.assertIn(answers[-1], (201, 503))
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        self.assertEqual(answers[-10:], [201] * 10, answers)
        titles = [todo["title"] for todo in self.list_todos(server).values()]
        self.assertEqual(titles, ["on time"] * answers.count(201))


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
            body = b'{"title": "in flight at SIGTERM"}'
            connection = in_flight.connection
            connection.putrequest("POST", TODOS)
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
            connection.putheader("Expect", "100-continue")
            connection.endheaders()
            # "100 Continue" comes when the app starts reading the body: the request is in
            # flight for sure when the signal arrives before its body.
            self.assertTrue(connection.sock.recv(65536).startswith(b"HTTP/1.1 100 "))
            server.terminate()
            connection.send(body)
            response = connection.getresponse()
            self.assertEqual(response.status, 201)
            last = orjson.loads(response.read())
        finish()
        self.assertEqual(server.wait(), 0)
        self.assertStoppedGracefully(server)
        acknowledged = dict(acknowledged) | {last["id"]: last}
        self.assertCleanLog(server)

        restarted = self.start_server()
        self.assertStored(restarted, acknowledged)


# Stops under load in a row: before todo/serve.py gave the stop signals a thread of their
# own, about one in 30 left a worker serving until the graceful timeout killed it.
STOPS_IN_A_ROW = 10


class TestStoppingEveryWorker(ServerTestCase):
    def test_every_worker_begins_to_stop_at_sigterm_under_load(self):
        for attempt in range(STOPS_IN_A_ROW):
            with self.subTest(attempt=attempt):
                server = self.start_server()
                _, finish = self.create_until_stopped(server)
                server.terminate()
                finish()
                self.assertEqual(server.wait(), 0)
                self.assertStoppedGracefully(server)
                self.assertCleanLog(server)
                server.close()


# A complete JSON document: a server or app that trusted a broken framing would store it.
BODY = b'{"title": "framing"}'
CHUNKED = "Transfer-Encoding: chunked\r\n"


def chunk(data: bytes) -> bytes:
    """Return data as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# Bodies the app refuses before reading them (status, with problem details): it trusts a body's
# end only from Content-Length, so a chunked one is refused whatever its framing.
REFUSED_BY_THE_APP = {
    "chunk size zz": (CHUNKED, b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", 411),
    "chunk size -18": (CHUNKED, b"-18\r\n" + BODY + b"\r\n0\r\n\r\n", 411),
    "empty chunk size": (CHUNKED, b"\r\n" + BODY + b"\r\n0\r\n\r\n", 411),
    "chunk without its CRLF": (CHUNKED, b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n", 411),
    "bad trailer": (CHUNKED, chunk(BODY) + b"0\r\nnot a field\r\n\r\n", 411),
    "whole document, then a bad chunk": (CHUNKED, chunk(BODY) + b"zz\r\n\r\n", 411),
    "well-formed chunked": (CHUNKED, chunk(BODY) + b"0\r\n\r\n", 411),
    "chunked and Content-Length": (
        CHUNKED + f"Content-Length: {len(BODY)}\r\n",
        chunk(BODY) + b"0\r\n\r\n",
        411,
    ),
    "gzip, chunked": ("Transfer-Encoding: gzip, chunked\r\n", chunk(BODY) + b"0\r\n\r\n", 501),
}
# Framing that granian answers itself, with an empty 400, before the app sees the request.
REFUSED_BY_THE_SERVER = {
    "chunked, then gzip": ("Transfer-Encoding: chunked, gzip\r\n", chunk(BODY) + b"0\r\n\r\n"),
    "identity coding": ("Transfer-Encoding: identity\r\n", BODY),
    "two Content-Lengths": (f"Content-Length: {len(BODY)}\r\nContent-Length: 3\r\n", BODY),
    "Content-Length -1": ("Content-Length: -1\r\n", BODY),
    "Content-Length abc": ("Content-Length: abc\r\n", BODY),
}


FRAMING_FUZZ_REQUESTS = 120
# A request whose framing leaves the server waiting for more is given up after this long.
FRAMING_FUZZ_PATIENCE = 1.0


def fuzzed_framing(rng: random.Random) -> tuple[str, bytes]:
    """Return request headers and body bytes whose framing a hostile client made up."""
    body = rng.choice(
        [BODY, b'{"title": "fuzzed"}', b"", bytes(rng.randrange(256) for _ in range(9))]
    )
    if rng.random() < 0.5:
        # Chunks of random sizes, some of them lying, with odd extensions and trailers.
        framed = b""
        rest = body
        while rest and rng.random() < 0.9:
            size = rng.randint(1, len(rest))
            stated = rng.choice(
                [f"{size:x}", f"{size:X}", f"{size + 1:x}", "zz", "-1", "", f"{size:x};x=y"]
            )
            framed += stated.encode() + b"\r\n" + rest[:size] + rng.choice([b"\r\n", b"\n", b""])
            rest = rest[size:]
        framed += rng.choice([b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"0\r\n", b""])
        body = framed
    headers = []
    for _ in range(rng.randint(0, 3)):
        headers.append(
            rng.choice(
                [
                    f"Content-Length: {len(body)}",
                    f"Content-Length: {len(body) + rng.randint(1, 50)}",
                    f"Content-Length: {max(len(body) - rng.randint(1, 5), 0)}",
                    "Content-Length: " + rng.choice(["-1", "abc", "1e3", "", " 7", "9" * 20]),
                    "Transfer-Encoding: chunked",
                    "Transfer-Encoding: CHUNKED",
                    "Transfer-Encoding: "
                    + ", ".join(
                        rng.choice(["chunked", "gzip", "identity", "x"])
                        for _ in range(rng.randint(1, 3))
                    ),
                    "Transfer-Encoding:chunked ",
                    "Content-Encoding: gzip",
                    "Expect: 100-continue",
                ]
            )
        )
    return "".join(header + "\r\n" for header in headers), body


@across_databases
class TestFraming(ServerTestCase):
    """Request bodies whose framing is broken or unfinished: refused, and nothing stored."""

    def setUp(self) -> None:
        super().setUp()
        self.server = self.start_server(workers=2)
        with self.server.client() as client:
            todo = client.request("POST", TODOS, {"title": "before"}).json()
        self.writes = [
            ("POST", TODOS),
            ("PUT", f"{TODOS}/{todo['id']}"),
            ("PATCH", f"{TODOS}/{todo['id']}"),
        ]
        self.before = self.list_todos(self.server)

    def request(self, method: str, path: str, headers: str, body: bytes) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        return (head + headers + "\r\n").encode() + body

    def assertNothingStored(self) -> None:  # noqa: N802
        self.assertEqual(self.list_todos(self.server), self.before)

    def test_chunked_or_unknown_transfer_codings_are_refused_by_the_app(self):
        for name, (headers, body, status) in REFUSED_BY_THE_APP.items():
            for method, path in self.writes:
                with self.subTest(name, method=method):
                    response = raw_exchange(
                        self.server.port, self.request(method, path, headers, body)
                    )
                    self.assertEqual(response.status, status, response.body)
                    self.assertEqual(response.headers["Content-Type"], "application/problem+json")
                    self.assertEqual(orjson.loads(response.body)["status"], status)
                    self.assertNothingStored()
        self.assertCleanLog(self.server)

    def test_framing_that_the_server_cannot_parse_is_refused_before_the_app(self):
        for name, (headers, body) in REFUSED_BY_THE_SERVER.items():
            for method, path in self.writes:
                with self.subTest(name, method=method):
                    response = raw_exchange(
                        self.server.port, self.request(method, path, headers, body)
                    )
                    self.assertEqual((response.status, response.body), (400, b""))
                    self.assertEqual(response.headers["Connection"], "close")
                    self.assertNothingStored()
        self.assertCleanLog(self.server)

    def test_heads_that_the_server_cannot_parse_or_that_pass_its_limits_never_reach_the_app(self):
        heads = {
            "a header name with a space": (b"X Y: z\r\n", 400),
            "a NUL in a header value": (b"X-Y: a\x00b\r\n", 400),
            "a folded header line": (b"X-Y: a\r\n b\r\n", 400),
            "101 header fields": (b"".join(b"X-%d: v\r\n" % n for n in range(101)), 431),
            "a head of 600 KB": (b"X-Big: " + b"a" * 600_000 + b"\r\n", 431),
        }
        for name, (lines, status) in heads.items():
            with self.subTest(name):
                data = f"GET {TODOS} HTTP/1.1\r\nHost: {HOST}\r\n".encode() + lines + b"\r\n"
                response = raw_exchange(self.server.port, data)
                self.assertEqual((response.status, response.body), (status, b""))
        with self.subTest("a malformed request line"):
            data = f"G(T {TODOS} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            response = raw_exchange(self.server.port, data)
            self.assertEqual((response.status, response.body), (400, b""))
        with self.subTest("a request target over 64 KiB"):
            data = f"GET {TODOS}?{'a' * 66_000} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            response = raw_exchange(self.server.port, data)
            self.assertEqual((response.status, response.body), (414, b""))
        with self.subTest("HTTP/2 is not spoken"):
            with socket.create_connection(
                (HOST, self.server.port), timeout=REQUEST_TIMEOUT
            ) as sock:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                self.assertIn(sock.recv(65536)[:12], (b"", b"HTTP/1.1 400"))
        self.assertNothingStored()
        self.assertCleanLog(self.server)

    def test_a_body_shorter_than_its_content_length_is_refused(self):
        # The client sends a whole JSON document but announces more, then stops sending.
        headers = f"Content-Length: {len(BODY) + 10}\r\n"
        for method, path in self.writes:
            with self.subTest(method=method):
                data = self.request(method, path, headers, BODY)
                response = raw_exchange(self.server.port, data, then="shut")
                self.assertEqual(response.status, 400, response.body)
                problem = orjson.loads(response.body)
                self.assertIn(
                    f"ended after {len(BODY)} of the {len(BODY) + 10} bytes", problem["detail"]
                )
                self.assertNothingStored()
        self.assertCleanLog(self.server)

    def test_a_client_that_closes_before_the_end_of_its_body_stores_nothing(self):
        headers = f"Content-Length: {len(BODY) + 10}\r\n"
        for method, path in self.writes:
            with self.subTest(method=method):
                answered = f'"{method} {path} HTTP/1.1" 400 '
                seen = self.server.log().count(answered)
                raw_exchange(
                    self.server.port, self.request(method, path, headers, BODY), then="close"
                )
                # The access log shows when the app has answered the request (to nobody).
                self.wait_for(lambda: self.server.log().count(answered) > seen)  # noqa: B023
                self.assertNothingStored()
        self.assertCleanLog(self.server)

    def test_a_client_that_half_closes_after_a_whole_request_may_get_no_answer(self):
        # A limit of granian's that docs/deployment.md states: without an answer the client
        # cannot know whether its request ran; with one, it ran once.
        data = self.request("POST", TODOS, f"Content-Length: {len(BODY)}\r\n", BODY)
        try:
            response = raw_exchange(self.server.port, data, then="shut")
        except CONNECTION_ERRORS:
            self.server.wait_until_quiet()
            self.assertLessEqual(len(self.list_todos(self.server)), len(self.before) + 1)
        else:
            self.assertEqual(response.status, 201)
            self.assertEqual(len(self.list_todos(self.server)), len(self.before) + 1)

    def test_framing_fuzzed_at_random_never_fails_the_server_or_stores_a_refused_body(self):
        rng = random.Random(6400)
        stored = self.before
        for _ in range(FRAMING_FUZZ_REQUESTS):
            method, path = rng.choice(self.writes)
            headers, body = fuzzed_framing(rng)
            with self.subTest(method=method, headers=headers, body=body):
                try:
                    response = raw_exchange(
                        self.server.port,
                        self.request(method, path, headers, body),
                        timeout=FRAMING_FUZZ_PATIENCE,
                    )
                except CONNECTION_ERRORS:
                    # Closed without a word, or still waiting for a body that never comes: the
                    # client cannot know whether its request ran. Once the server is quiet,
                    # what it did (if anything) is the new state.
                    self.server.wait_until_quiet()
                    stored = self.list_todos(self.server)
                    continue
                self.assertTrue(response.status < 500 or response.status == 501, response)
                now = self.list_todos(self.server)
                if response.status >= 300:
                    self.assertEqual(now, stored, "a refused request changed the todos")
                stored = now
        self.assertCleanLog(self.server)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until the condition holds, failing after REQUEST_TIMEOUT."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not condition():
            self.assertLess(time.monotonic(), deadline, self.server.log()[-3000:])
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)


# How slow clients are handled is the server's business, whatever the database: SQLite only.
class TestSlowClients(ServerTestCase):
    # Held for a minute, not the default 5 s: a slow machine cannot let a hostile connection
    # go before the test has measured what it costs.
    PATIENT = {"GRANIAN_HTTP1_HEADER_READ_TIMEOUT": "60000"}

    def test_clients_sending_byte_by_byte_do_not_hold_up_the_others(self):
        # One worker of two threads: a client sending its body holds one; a client sending
        # its headers, or nothing, holds none, or the quick requests would wait.
        server = self.start_server(workers=1, env=self.PATIENT | {"GRANIAN_BLOCKING_THREADS": "2"})
        body = b'{"title": "sent slowly"}'
        request = (
            f"POST {TODOS} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
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

    def test_hostile_clients_without_a_proxy_leave_others_answered_within_a_second(self):
        self.seed(LONG_LIST)
        server = self.start_server(workers=2, env=self.PATIENT)
        hostile = HostileClients(server.port)
        self.addCleanup(hostile.close)
        hostile.open_idle(200)
        hostile.open_slow_headers(200)
        hostile.open_slow_bodies(50)
        hostile.open_non_readers(25)
        # Until their socket buffers are full (megabytes each), the lists are sent as to any
        # client; from then on the server waits on those clients.
        server.wait_until_quiet()

        self.assertAnsweredPromptly(server.port, with_page=True)

        self.assertEqual(
            hostile.closed_by_the_server(), [], "the hostile clients were not all there"
        )
        self.assertCleanLog(server)

    def test_a_stalled_body_or_reader_holds_one_thread_and_others_wait_for_a_free_one(self):
        self.seed(LONG_LIST)
        server = self.start_server(workers=1, env={"GRANIAN_BLOCKING_THREADS": "2"})
        hostile = HostileClients(server.port)
        self.addCleanup(hostile.close)
        hostile.open_slow_bodies(1)
        hostile.open_non_readers(1)
        # Both threads are held, so another request waits...
        waiting = socket.create_connection((HOST, server.port), timeout=PROMPT)
        self.addCleanup(waiting.close)
        waiting.sendall(f"GET {TODOS}/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        with self.assertRaises(TimeoutError):
            waiting.recv(1)
        # ...until one of them is done: the body's end arrives.
        self.assertEqual(hostile.finish_body(hostile.slow_bodies[0]).status, 201)
        waiting.settimeout(REQUEST_TIMEOUT)
        self.assertTrue(waiting.recv(65536).startswith(b"HTTP/1.1 200 "))
        self.assertCleanLog(server)

    def test_the_header_timeout_closes_idle_connections_and_unfinished_heads_unanswered(self):
        server = self.start_server(workers=1, env={"GRANIAN_HTTP1_HEADER_READ_TIMEOUT": "300"})
        hostile = HostileClients(server.port)
        self.addCleanup(hostile.close)
        hostile.open_idle(3)
        hostile.open_slow_headers(3)
        # A kept-alive connection, idle after its first answer, is closed the same way.
        kept_alive = server.client()
        self.addCleanup(kept_alive.close)
        self.assertEqual(kept_alive.request("GET", "/api/v1/health").status, 200)
        hostile.idle.append(kept_alive.connection.sock)
        for sock in hostile.idle + hostile.slow_headers:
            self.assertEqual(sock.recv(65536), b"")

    def test_idle_connections_count_against_their_workers_connections(self):
        env = self.PATIENT | {"GRANIAN_BACKPRESSURE": "3"}
        server = self.start_server(workers=1, env=env)
        hostile = HostileClients(server.port)
        self.addCleanup(hostile.close)
        hostile.open_idle(3)
        # The worker keeps 3 connections open at once: a fourth waits to be accepted...
        waiting = socket.create_connection((HOST, server.port), timeout=PROMPT)
        self.addCleanup(waiting.close)
        waiting.sendall(f"GET {TODOS}/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        with self.assertRaises(TimeoutError):
            waiting.recv(1)
        # ...until one of the others is closed.
        hostile.idle.pop().close()
        waiting.settimeout(REQUEST_TIMEOUT)
        self.assertTrue(waiting.recv(65536).startswith(b"HTTP/1.1 404 "))

    def test_sigterm_kills_a_worker_still_busy_after_the_graceful_timeout(self):
        server = self.start_server(workers=1, env={"GRANIAN_WORKERS_KILL_TIMEOUT": "1"})
        hostile = HostileClients(server.port)
        self.addCleanup(hostile.close)
        # A request in flight that never ends: its body never arrives whole. Once the worker
        # is quiet, it holds the request, waiting for the rest (a SIGTERM before that found
        # no request in flight, and the worker stopped gracefully).
        hostile.open_slow_bodies(1)
        server.wait_until_quiet()
        server.terminate()
        server.wait()
        self.assertIn("Killing worker-1 after it refused to gracefully stop", server.log())


class TestBehindNginx(ServerTestCase):
    """The nginx configuration of docs/deployment.md, before a server with two threads."""

    def start_proxy(self, server: Server) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            skip_or_fail_in_ci("nginx is not installed")
        proxy = Nginx(binary, server.port)
        self.addCleanup(proxy.stop)
        return proxy.start()

    def test_slow_clients_held_by_nginx_leave_the_servers_threads_free(self):
        self.seed(LONG_LIST)
        # Alone, this server stalls behind two slow clients (TestSlowClients).
        server = self.start_server(workers=1, env={"GRANIAN_BLOCKING_THREADS": "2"})
        proxy = self.start_proxy(server)
        hostile = HostileClients(proxy.port)
        self.addCleanup(hostile.close)
        hostile.open_slow_bodies(50)
        hostile.open_non_readers(5)
        # The server sends the whole lists to nginx, which keeps them for the slow readers.
        server.wait_until_quiet()

        self.assertAnsweredPromptly(proxy.port)
        self.assertCleanLog(server)

    def test_chunked_bodies_reach_the_app_with_a_content_length(self):
        server = self.start_server(workers=1)
        proxy = self.start_proxy(server)
        body = b'{"title": "sent chunked"}'
        data = (
            (
                f"POST {TODOS} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + chunk(body)
            + b"0\r\n\r\n"
        )
        response = raw_exchange(proxy.port, data)
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.json()["title"], "sent chunked")
        # Straight to the server, the same request is refused.
        self.assertEqual(raw_exchange(server.port, data).status, 411)
