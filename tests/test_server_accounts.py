"""Accounts under the real servers (issue 12, "Proven under the real server").

Two instances on one database and one store of counters, as a service runs behind a load
balancer: `todo serve` and `gunicorn -c python:todo.gunicorn_conf`, each with several workers,
both on loopback in AUTH token mode. A revoked token is refused at once by every worker,
failed logins count across them all (with Redis), two users writing at once never meet, and no
token, password or hash shows in any response or log line.
"""

import itertools
import random
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

import redis
from sqlalchemy import create_engine, text

from tests.base import REDIS_URL, DatabaseTestCase, basic, bearer, require_redis
from tests.server import (
    GUNICORN_CONFIG,
    START_TIMEOUT,
    STARTED_WORKER,
    Response,
    Server,
    Worker,
    connections_to_every_worker,
    gunicorn_command,
    run_concurrently,
    serve_command,
)
from todo.accounts import digest
from todo.limits import FAILED_LOGINS_PER_ADDRESS

TODOS = "/api/v1/todos"
USERS = "/api/v1/users"
TOKENS = "/api/v1/tokens"
ME = "/api/v1/users/me"
BEARER = 'Bearer realm="todo"'
INVALID_TOKEN = 'Bearer realm="todo", error="invalid_token"'
BASIC = 'Basic realm="todo"'
# Requests with a revoked token, in turns over every worker of both instances.
REFUSALS = 30
THREADS_PER_USER = 3
REQUESTS_PER_THREAD = 50
# Idle kept-alive connections are closed after 5 s by default; a connection held to one worker
# must outlast a test's slowest stretch (ten password hashes on a busy machine).
KEEP_ALIVE = {"GRANIAN_HTTP1_HEADER_READ_TIMEOUT": "60000", "GUNICORN_KEEPALIVE": "60"}


def todo_ids(body: Any) -> set[int]:
    """Return the ids of the todos in a response's body: one todo, a list, or none."""
    if isinstance(body, list):
        return {todo["id"] for todo in body}
    if isinstance(body, dict) and "id" in body:
        return {body["id"]}
    return set()


class TestAccountsOnSQLite(DatabaseTestCase):
    """Both instances, two workers each, on one SQLite file, with counters in each worker.

    Each test starts both servers on a fresh database, and ends by stopping them and looking
    for every secret it used in their logs and in every response.
    """

    slow = True
    workers = 2
    counters = "memory://"

    def setUp(self) -> None:
        self.url = self.fresh_database_url()
        self.responses: list[Response] = []
        # Every token issued, with the one response allowed to show it: the one that issued it.
        self.issued: dict[str, Response] = {}
        # Passwords and made-up tokens clients sent, right or wrong.
        self.sent: set[str] = set()
        self.registered = 0
        self.prefix = f"test-{uuid4().hex}"
        env = {
            "TODO_AUTH": "token",
            "TODO_REGISTRATION": "open",
            "TODO_RATE_LIMIT_STORAGE_URI": self.counters,
            "TODO_RATE_LIMIT_KEY_PREFIX": self.prefix,
        } | KEEP_ALIVE
        self.servers = [
            self.start_server(serve_command(), env, STARTED_WORKER["todo serve"]),
            self.start_server(gunicorn_command(GUNICORN_CONFIG), env, STARTED_WORKER["gunicorn"]),
        ]

    def start_server(self, command: list[str], env: Mapping[str, str], started: str) -> Server:
        """Start a server; return once all its workers have started."""
        server = Server(self.url, self.workers, command, env)
        self.addCleanup(server.close)
        server.start()
        deadline = time.monotonic() + START_TIMEOUT
        while server.log().count(started) < self.workers:
            self.assertLess(time.monotonic(), deadline, server.log()[-3000:])
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        return server

    def request(
        self,
        server: Server,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request on a new connection, so that any worker may answer it."""
        with server.client() as client:
            response = client.request(method, path, body, headers)
        self.responses.append(response)
        return response

    def request_on(
        self,
        worker: Worker,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request that this worker answers."""
        response = worker.client.request(method, path, body, headers)
        self.responses.append(response)
        self.assertEqual(worker.server.worker_serving(worker.client), worker.pid)
        return response

    def every_worker(self) -> list[Worker]:
        """Return a connection held by each worker of both instances, in turns."""
        workers = connections_to_every_worker(self.servers)
        for worker in workers:
            self.addCleanup(worker.client.close)
        self.assertEqual(len(workers), 2 * self.workers)
        return workers

    def sign_up(self, server: Server, username: str) -> tuple[str, str]:
        """Register a user with a password of its own; return the password and a new token."""
        password = f"{username} {secrets.token_urlsafe(16)}"
        self.sent.add(password)
        credentials = {"username": username, "password": password}
        self.assertEqual(self.request(server, "POST", USERS, credentials).status, 201)
        self.registered += 1
        return password, self.new_token(server, username, password)["token"]

    def new_token(self, server: Server, username: str, password: str, **fields: Any) -> dict:
        """Log in and return the new token's answer."""
        response = self.request(server, "POST", TOKENS, fields or None, basic(username, password))
        self.assertEqual(response.status, 201, response.body)
        token = response.json()
        self.issued[token["token"]] = response
        return token

    def assertProblem(self, response: Response, status: int) -> dict:  # noqa: N802
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers["Content-Type"], "application/problem+json")
        return response.json()

    def assertUnauthenticated(self, response: Response, challenge: str) -> None:  # noqa: N802
        self.assertProblem(response, 401)
        self.assertEqual(response.headers["WWW-Authenticate"], challenge)

    def password_hashes(self) -> set[str]:
        """Return the stored password hashes, whole and their last part alone (the hash)."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                stored = connection.execute(text("SELECT password_hash FROM users")).scalars()
                hashes = set(stored)
        finally:
            engine.dispose()
        self.assertEqual(len(hashes), self.registered)
        return hashes | {whole.rpartition("$")[2] for whole in hashes}

    def assertNothingSecretLeaked(self) -> None:  # noqa: N802
        """Stop both servers, then look for every secret in their logs and in every response."""
        for server in self.servers:
            server.stop()
        tokens = set(self.issued)
        hashes = self.password_hashes()
        secrets_ = self.sent | tokens | {digest(token) for token in tokens} | hashes
        for server in self.servers:
            log = server.log()
            # The access log was captured.
            self.assertIn('"GET /api/v1/health HTTP/1.1" 200', log)
            for secret in secrets_:
                self.assertNotIn(secret, log)
        for response in self.responses:
            shown = f"{response.headers}\n{response.body.decode()}"
            for secret in secrets_:
                if self.issued.get(secret) is not response:
                    self.assertNotIn(secret, shown)

    def test_a_revoked_token_is_refused_at_once_by_every_worker_of_both_instances(self):
        serve, gunicorn = self.servers
        password, _ = self.sign_up(serve, "alice")
        revoked = self.new_token(gunicorn, "alice", password, name="to revoke")
        kept = self.new_token(serve, "alice", password, name="kept")
        response = self.request(serve, "POST", TODOS, {"title": "kept"}, bearer(kept["token"]))
        todo = response.json()
        workers = self.every_worker()
        for worker in workers:
            response = self.request_on(worker, "GET", TODOS, headers=bearer(revoked["token"]))
            self.assertEqual(response.status, 200, response.body)

        path = f"{TOKENS}/{revoked['id']}"
        response = self.request(gunicorn, "DELETE", path, None, bearer(kept["token"]))
        self.assertEqual(response.status, 200, response.body)
        # The revoked token, without its secret.
        self.assertEqual(response.json(), {n: v for n, v in revoked.items() if n != "token"})

        # Whatever the revoked token asks of whichever worker, it is refused; nothing changes.
        # (No request with a body: a server may close a connection whose body went unread.)
        asks = itertools.cycle([
            ("GET", TODOS),
            ("GET", ME),
            ("DELETE", f"{TODOS}/{todo['id']}"),
            ("GET", TOKENS),
            ("DELETE", f"{TOKENS}/{kept['id']}"),
        ])  # fmt: skip
        for number, (method, path) in enumerate(itertools.islice(asks, REFUSALS)):
            worker = workers[number % len(workers)]
            with self.subTest(number=number, worker=worker.pid, method=method, path=path):
                response = self.request_on(worker, method, path, None, bearer(revoked["token"]))
                self.assertUnauthenticated(response, INVALID_TOKEN)
        for worker in workers:
            response = self.request_on(worker, "GET", TOKENS, headers=bearer(kept["token"]))
            self.assertEqual(response.status, 200, response.body)
            ids = [token["id"] for token in response.json()]
            self.assertIn(kept["id"], ids)
            self.assertNotIn(revoked["id"], ids)
            response = self.request_on(worker, "GET", TODOS, headers=bearer(kept["token"]))
            self.assertEqual(response.json(), [todo])
        self.assertNothingSecretLeaked()

    def test_two_users_writing_at_once_never_see_or_change_each_others_todos(self):
        users = ("alice", "bob")
        serve, gunicorn = self.servers
        tokens = {"alice": self.sign_up(serve, "alice")[1], "bob": self.sign_up(gunicorn, "bob")[1]}
        created: dict[str, set[int]] = {user: set() for user in users}
        received: dict[str, list[Any]] = {user: [] for user in users}
        lock = threading.Lock()

        def write(index: int, barrier: threading.Barrier) -> tuple[str, dict[int, dict]]:
            user, other = users[index % 2], users[1 - index % 2]
            auth = bearer(tokens[user])
            rng = random.Random(index)
            live: dict[int, dict] = {}

            def ask(method: str, path: str, body: Any = None) -> Response:
                # Each request on a new connection to either instance: any worker answers.
                response = self.request(rng.choice(self.servers), method, path, body, auth)
                with lock:
                    received[user].append(response.json())
                return response

            barrier.wait()
            for step in range(REQUESTS_PER_THREAD):
                choice = rng.random()
                with lock:
                    theirs = sorted(created[other])
                if not live or choice < 0.4:
                    fields = {"title": f"{user} {index}.{step}", "completed": rng.random() < 0.5}
                    response = ask("POST", TODOS, fields)
                    self.assertEqual(response.status, 201, response.body)
                    todo = response.json()
                    self.assertEqual({name: todo[name] for name in fields}, fields)
                    live[todo["id"]] = todo
                    with lock:
                        created[user].add(todo["id"])
                elif choice < 0.6:
                    todo_id = rng.choice(list(live))
                    changes = {"description": f"{user} at {index}.{step}"}
                    response = ask("PATCH", f"{TODOS}/{todo_id}", changes)
                    self.assertEqual(response.status, 200, response.body)
                    todo = response.json()
                    expected = live[todo_id] | changes | {"updated_at": todo["updated_at"]}
                    self.assertEqual(todo, expected)
                    live[todo_id] = todo
                elif choice < 0.7:
                    todo_id = rng.choice(list(live))
                    response = ask("DELETE", f"{TODOS}/{todo_id}")
                    self.assertEqual(response.status, 200, response.body)
                    self.assertEqual(response.json(), live.pop(todo_id))
                elif choice < 0.8 or not theirs:
                    response = ask("GET", TODOS)
                    self.assertEqual(response.status, 200, response.body)
                else:
                    # The other user's todo is answered as a missing one, and stays as it was.
                    path = f"{TODOS}/{rng.choice(theirs)}"
                    self.assertProblem(ask("GET", path), 404)
                    self.assertProblem(ask("PATCH", path, {"title": f"{user} was here"}), 404)
                    self.assertEqual(ask("DELETE", path).json(), {})
            return user, live

        outcomes = run_concurrently(THREADS_PER_USER * len(users), write)
        for user, other in (users, users[::-1]):
            expected = {}
            for owner, live in outcomes:
                if owner == user:
                    expected |= live
            for server in self.servers:
                with self.subTest(user=user, server=server.command):
                    response = self.request(server, "GET", TODOS, headers=bearer(tokens[user]))
                    stored = {todo["id"]: todo for todo in response.json()}
                    self.assertEqual(stored, expected)
            seen = set().union(*(todo_ids(body) for body in received[user]))
            self.assertEqual(seen & created[other], set())
        self.assertGreaterEqual(sum(len(bodies) for bodies in received.values()), 300)
        self.assertNothingSecretLeaked()

    def test_no_token_password_or_hash_shows_in_answers_or_logs_error_paths_included(self):
        serve, gunicorn = self.servers
        alice_password, alice = self.sign_up(serve, "alice")
        _, bob = self.sign_up(gunicorn, "bob")
        laptop = self.new_token(gunicorn, "alice", alice_password, name="lap", expires_in_days=9)
        made_up = f"todo_{secrets.token_urlsafe(32)}"
        wrong_password = f"not {alice_password}"
        too_short = secrets.token_urlsafe(5)[:7]
        self.sent |= {made_up, wrong_password, too_short}
        for server in self.servers:
            for token in (alice, bob, laptop["token"]):
                for path in (ME, TOKENS, TODOS):
                    response = self.request(server, "GET", path, None, bearer(token))
                    self.assertEqual(response.status, 200, response.body)
            response = self.request(server, "POST", TODOS, {"title": "mine"}, bearer(alice))
            self.assertEqual(response.status, 201)
            # A token-shaped guess, and a password sent where a token belongs.
            for guess in (made_up, alice_password):
                response = self.request(server, "GET", TODOS, None, bearer(guess))
                self.assertUnauthenticated(response, INVALID_TOKEN)
            self.assertUnauthenticated(self.request(server, "GET", TODOS), BEARER)
            # A wrong password, an unknown user.
            for username, password in (("alice", wrong_password), ("carol", wrong_password)):
                response = self.request(server, "POST", TOKENS, None, basic(username, password))
                self.assertUnauthenticated(response, BASIC)
            # A password too short to register, and a username taken.
            for username, password, status in (("dave", too_short, 400),
                                               ("Alice", wrong_password, 409)):  # fmt: skip
                credentials = {"username": username, "password": password}
                self.assertProblem(self.request(server, "POST", USERS, credentials), status)
        # Another user's token: as if there were none; its own: revoked.
        path = f"{TOKENS}/{laptop['id']}"
        self.assertEqual(self.request(serve, "DELETE", path, None, bearer(bob)).json(), {})
        response = self.request(gunicorn, "DELETE", path, None, bearer(laptop["token"]))
        self.assertEqual(response.status, 200)
        response = self.request(serve, "GET", TODOS, None, bearer(laptop["token"]))
        self.assertUnauthenticated(response, INVALID_TOKEN)
        self.assertNothingSecretLeaked()
        for server in self.servers:
            # The error answers were logged too.
            self.assertIn(f'"POST {TOKENS} HTTP/1.1" 401', server.log())
            self.assertIn(f'"GET {TODOS} HTTP/1.1" 401', server.log())


class TestAccountsOnPostgresAndRedis(TestAccountsOnSQLite):
    """Both instances, three workers each, on one PostgreSQL and one Redis."""

    database = "Postgres"
    workers = 3
    counters = REDIS_URL

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        require_redis()

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self.delete_counters)

    def delete_counters(self) -> None:
        """Delete this test's counters, and nothing else, from the shared Redis."""
        with redis.Redis.from_url(REDIS_URL) as client:
            for key in client.scan_iter(match=f"*{self.prefix}*"):
                client.delete(key)

    def test_failed_logins_count_across_every_worker_of_both_instances(self):
        password, _ = self.sign_up(self.servers[0], "alice")
        wrong = f"not {password}"
        self.sent.add(wrong)
        workers = self.every_worker()
        allowed = FAILED_LOGINS_PER_ADDRESS.amount
        # In turns over the six workers: none of them sees more than two of the failures.
        for attempt in range(allowed):
            worker = workers[attempt % len(workers)]
            response = self.request_on(worker, "POST", TOKENS, None, basic("alice", wrong))
            self.assertUnauthenticated(response, BASIC)
        for worker in workers:
            with self.subTest(worker=worker.pid, server=worker.server.command):
                # The right password included: the address has to wait.
                response = self.request_on(worker, "POST", TOKENS, None, basic("alice", password))
                self.assertProblem(response, 429)
                self.assertIn(int(response.headers["Retry-After"]), range(1, 901))
        self.assertNothingSecretLeaked()
