"""Login throttling, the general rate limit, where their counters live, and whose address counts.

Logins are throttled per client address (10 failures in 15 minutes) and per username (20).
Most failures here are sent without credentials: a 401 like any other, which costs no
password hash (each hash takes a third of a second of a core). The window passing is shown
without waiting, on Redis, by moving the counted events' timestamps into the past.
"""

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import redis

from tests.base import (
    PASSWORD,
    REDIS_URL,
    TOKEN_MODE,
    AppTestCase,
    basic,
    bearer,
    require_redis,
)
from todo import accounts, create_app
from todo.config import SettingsError

TOKENS = "/api/v1/tokens"
TODOS = "/api/v1/todos"
HEALTH = "/api/v1/health"
OPENAPI = "/api/v1/openapi.json"
WINDOW = 15 * 60
# Nothing listens on port 1: connections are refused at once.
CLOSED_REDIS = "redis://127.0.0.1:1"
# Where a server that accepts connections and never answers may listen.
SILENT_PORTS = range(18200, 18300)


def at(address: str) -> dict[str, Any]:
    """Return the test client's arguments for a request from this connection address."""
    return {"environ_base": {"REMOTE_ADDR": address}}


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


def counter_names(prefix: str) -> list[str]:
    """Return the names of the Redis counters under an app's RATE_LIMIT_KEY_PREFIX."""
    with redis_client() as client:
        return sorted(name.decode() for name in client.scan_iter(match=f"*{prefix}*"))


def delete_counters(prefix: str) -> None:
    """Delete this test's counters, and nothing else."""
    with redis_client() as client:
        for name in client.scan_iter(match=f"*{prefix}*"):
            client.delete(name)


def age_counters(prefix: str, seconds: float) -> None:
    """Move every counted event under a prefix this many seconds into the past.

    A moving window keeps, in Redis, a list of the events' times; this is what the counters
    look like once that much time has passed.
    """
    with redis_client() as client:
        for name in client.scan_iter(match=f"*{prefix}*"):
            for index, event in enumerate(client.lrange(name, 0, -1)):
                client.lset(name, index, float(event) - seconds)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Listen on a free port of this suite's range and never answer; yield the port."""
    with socket.socket() as server:
        for port in SILENT_PORTS:
            try:
                server.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            raise AssertionError(f"no free port in {SILENT_PORTS}")
        # The kernel completes connections in the backlog: clients connect, then hear nothing.
        server.listen(8)
        yield port


class ThrottlingTestCase(AppTestCase):
    """Apps in token mode whose counters are this test's own: in memory, or in Redis."""

    config = TOKEN_MODE
    # Where the counters live: each app's memory, or the test Redis (then cleaned up).
    storage = "memory://"

    def setUp(self) -> None:
        self.prefix = f"todo-test-{uuid.uuid4().hex}"
        if self.storage == REDIS_URL:
            require_redis()
            self.addCleanup(delete_counters, self.prefix)
        super().setUp()

    def make_app(self, **overrides: Any):
        counters = {"RATE_LIMIT_STORAGE_URI": self.storage, "RATE_LIMIT_KEY_PREFIX": self.prefix}
        return super().make_app(**counters | overrides)

    def add_user(self, username: str, app=None) -> int:
        """Register a user with PASSWORD straight in the database (no request is counted)."""
        with (app or self.app).app_context():
            return accounts.create_user(username, PASSWORD)["id"]

    def add_token(self, user_id: int, app=None) -> str:
        with (app or self.app).app_context():
            return accounts.create_token(user_id, None, None)["token"]

    def log_in(self, address: str, username: str, password: str = PASSWORD, client=None):
        """Ask for a token with these credentials from this address."""
        client = client or self.client
        return client.post(TOKENS, headers=basic(username, password), **at(address))

    def fail_logins(self, address: str, count: int, client=None) -> None:
        """Fail logins from an address without credentials: each a 401, and no hash."""
        client = client or self.client
        for _ in range(count):
            response = client.post(TOKENS, **at(address))
            self.assertEqual(response.status_code, 401, response.get_data(as_text=True))

    def assertThrottled(self, response, detail: str = "") -> int:  # noqa: N802
        """Assert a 429 problem with Retry-After in whole seconds, 1 to 900; return it."""
        body = self.assertProblem(response, 429)
        self.assertIn(detail, body["detail"])
        wait = response.headers["Retry-After"]
        self.assertRegex(wait, r"\A[0-9]+\Z")
        self.assertTrue(1 <= int(wait) <= WINDOW, wait)
        return int(wait)


class TestLoginThrottlingPerAddress(ThrottlingTestCase):
    """Ten failed logins from one address throttle that address, and only that address."""

    def test_the_eleventh_attempt_is_429_even_with_the_right_password(self):
        self.add_user("alice")
        self.fail_logins("10.0.0.1", 9)
        self.assertEqual(self.log_in("10.0.0.1", "alice", "wrong password").status_code, 401)
        for _ in range(3):
            response = self.log_in("10.0.0.1", "alice")
            wait = self.assertThrottled(response, "Too many failed logins")
            # Nothing has left the window yet: the wait is about all of it.
            self.assertGreaterEqual(wait, WINDOW - 30)
            self.assertNotIn("token", response.get_json())
        self.assertEqual(self.log_in("10.0.0.2", "alice").status_code, 201)

    def test_a_throttled_address_gets_429_before_its_body_is_read(self):
        self.fail_logins("10.0.0.1", 10)
        # The throttle answers before the body is read: a bad body is a 429 too.
        response = self.client.post(
            TOKENS, data=b"{", content_type="application/json", **at("10.0.0.1")
        )
        self.assertThrottled(response)


class TestLoginThrottlingPerUsername(ThrottlingTestCase):
    """Twenty failed logins for one username, in any letter case, from several addresses,
    throttle that username from every address until the window has passed (on Redis, whose
    counters are aged instead of waited for)."""

    slow = True  # 20 wrong passwords, each a real hash
    storage = REDIS_URL

    def test_twenty_failures_for_a_username_throttle_it_everywhere(self):
        self.add_user("Alice")
        self.add_user("bob")
        spellings = ("alice", "ALICE", "Alice", "aLiCe")
        for address in ("10.1.0.1", "10.1.0.2"):
            for attempt in range(10):
                response = self.log_in(address, spellings[attempt % 4], "wrong password")
                self.assertEqual(response.status_code, 401)
        for spelling in spellings:
            self.assertThrottled(self.log_in("10.1.0.3", spelling), "Too many failed logins")
        # Another username from the same fresh address is unaffected.
        self.assertEqual(self.log_in("10.1.0.3", "bob").status_code, 201)

        age_counters(self.prefix, WINDOW + 1)
        self.assertEqual(self.log_in("10.1.0.3", "ALICE").status_code, 201)


class TestWhatCountsAsAFailedLogin(ThrottlingTestCase):
    """Only 401s count: a 400, a 429 and a success do not (on Redis, to let time pass)."""

    storage = REDIS_URL

    def test_400s_and_successes_do_not_count(self):
        self.add_user("alice")
        self.fail_logins("10.2.0.1", 9)
        for body in (b"{", b'{"name": ""}', b'{"expires_in_days": 0}', b"[]"):
            response = self.client.post(
                TOKENS,
                data=body,
                content_type="application/json",
                headers=basic("alice", "wrong password"),
                **at("10.2.0.1"),
            )
            self.assertProblem(response, 400)
        self.assertEqual(self.log_in("10.2.0.1", "alice").status_code, 201)
        # The tenth failure: counted, so the next attempt is throttled.
        self.fail_logins("10.2.0.1", 1)
        self.assertThrottled(self.log_in("10.2.0.1", "alice"))

    def test_429s_do_not_count(self):
        self.fail_logins("10.2.0.2", 10)
        for _ in range(5):
            self.assertThrottled(self.client.post(TOKENS, **at("10.2.0.2")))
        # Once the ten failures have left the window, nothing is left: had the 429s been
        # counted, they would still be in it.
        age_counters(self.prefix, WINDOW + 1)
        self.fail_logins("10.2.0.2", 10)


class TestTheLoginWindowMoves(ThrottlingTestCase):
    """Retry-After says when the oldest failure leaves the 15 minutes; then logins work."""

    storage = REDIS_URL

    def test_retry_after_counts_down_and_the_window_passing_lets_attempts_through(self):
        self.add_user("alice")
        self.fail_logins("10.3.0.1", 10)
        self.assertGreaterEqual(
            self.assertThrottled(self.client.post(TOKENS, **at("10.3.0.1"))), 890
        )

        age_counters(self.prefix, 600)
        wait = self.assertThrottled(self.log_in("10.3.0.1", "alice"))
        self.assertTrue(WINDOW - 600 - 10 <= wait <= WINDOW - 600 + 1, wait)

        age_counters(self.prefix, wait + 1)
        self.assertEqual(self.log_in("10.3.0.1", "alice").status_code, 201)

    def test_only_the_failures_that_left_the_window_are_forgotten(self):
        self.fail_logins("10.3.0.2", 5)
        age_counters(self.prefix, 600)
        self.fail_logins("10.3.0.2", 5)
        self.assertThrottled(self.client.post(TOKENS, **at("10.3.0.2")))
        # The first five leave the window, the last five are still in it: five more tries.
        age_counters(self.prefix, 301)
        self.fail_logins("10.3.0.2", 5)
        self.assertThrottled(self.client.post(TOKENS, **at("10.3.0.2")))


class TestCountersInMemory(ThrottlingTestCase):
    """By default each worker counts on its own: two apps (two workers) do not share."""

    def test_two_workers_in_memory_count_apart(self):
        url = self.fresh_database_url()
        first = self.make_app(SQLALCHEMY_DATABASE_URI=url)
        second = self.make_app(SQLALCHEMY_DATABASE_URI=url)
        self.fail_logins("10.4.0.1", 10, client=first.test_client())
        self.assertThrottled(first.test_client().post(TOKENS, **at("10.4.0.1")))
        # The same prefix, the same database, the same address: the second worker has seen
        # no failure (so each worker gives an attacker ten tries; see Redis below).
        self.fail_logins("10.4.0.1", 10, client=second.test_client())

    def test_two_workers_in_memory_have_separate_rate_limits(self):
        first = self.make_app(RATE_LIMIT="2 per minute")
        second = self.make_app(RATE_LIMIT="2 per minute")
        for _ in range(2):
            self.assertEqual(first.test_client().get(OPENAPI).status_code, 200)
        self.assertThrottled(first.test_client().get(OPENAPI))
        self.assertEqual(second.test_client().get(OPENAPI).status_code, 200)


class TestCountersInRedis(ThrottlingTestCase):
    """With RATE_LIMIT_STORAGE_URI a Redis, every worker (app) with one prefix shares them."""

    storage = REDIS_URL

    def test_failures_on_one_worker_throttle_another(self):
        url = self.fresh_database_url()
        first = self.make_app(SQLALCHEMY_DATABASE_URI=url)
        second = self.make_app(SQLALCHEMY_DATABASE_URI=url)
        self.fail_logins("10.5.0.1", 5, client=first.test_client())
        self.fail_logins("10.5.0.1", 5, client=second.test_client())
        self.assertThrottled(first.test_client().post(TOKENS, **at("10.5.0.1")))
        self.assertThrottled(second.test_client().post(TOKENS, **at("10.5.0.1")))
        self.fail_logins("10.5.0.2", 1, client=second.test_client())

    def test_workers_share_the_rate_limit(self):
        first = self.make_app(RATE_LIMIT="3 per minute")
        second = self.make_app(RATE_LIMIT="3 per minute")
        self.assertEqual(first.test_client().get(OPENAPI).status_code, 200)
        self.assertEqual(second.test_client().get(OPENAPI).status_code, 200)
        self.assertEqual(first.test_client().get(OPENAPI).status_code, 200)
        self.assertThrottled(second.test_client().get(OPENAPI))
        self.assertThrottled(first.test_client().get(OPENAPI))

    def test_another_prefix_is_another_service(self):
        self.fail_logins("10.5.0.3", 10)
        other = self.make_app(RATE_LIMIT_KEY_PREFIX=f"{self.prefix}-other")
        response = other.test_client().post(TOKENS, **at("10.5.0.3"))
        self.assertEqual(response.status_code, 401)

    def test_no_counter_is_named_after_a_token_its_digest_or_a_password(self):
        app = self.make_app(RATE_LIMIT="100 per minute")
        client = app.test_client()
        token = self.add_token(self.add_user("alice", app=app), app=app)
        self.assertEqual(client.get(TODOS, headers=bearer(token)).status_code, 200)
        # A password typed into the username field is a username to the counters.
        typed_password = "my secret passphrase"
        wrong_password = "a wrong password"
        for username in ("alice", typed_password):
            self.assertEqual(
                self.log_in("10.5.0.4", username, wrong_password, client).status_code, 401
            )
        names = counter_names(self.prefix)
        # Counters of the address, the token, and both usernames tried.
        self.assertGreaterEqual(len(names), 4, names)
        secrets = (token, token.removeprefix("todo_"), accounts.digest(token), PASSWORD)
        for secret in (*secrets, wrong_password, typed_password):
            for name in names:
                self.assertNotIn(secret.lower(), name.lower())


class TestGeneralRateLimit(ThrottlingTestCase):
    """RATE_LIMIT: off by default; one budget per token, or per address without one."""

    config = {}

    def test_off_by_default(self):
        for _ in range(60):
            self.assertEqual(self.client.get(TODOS).status_code, 200)
        self.assertEqual(self.client.post(TODOS, json={"title": "still here"}).status_code, 201)

    def test_the_fourth_request_in_a_minute_is_429_whatever_the_route(self):
        client = self.make_app(RATE_LIMIT="3 per minute").test_client()
        todo = client.post(TODOS, json={"title": "one"}).get_json()
        self.assertEqual(client.get(f"{TODOS}/{todo['id']}").status_code, 200)
        self.assertEqual(client.get(TODOS).status_code, 200)
        wait = self.assertThrottled(client.get(TODOS), "Too many requests")
        self.assertLessEqual(wait, 60)
        self.assertThrottled(client.delete(f"{TODOS}/{todo['id']}"))
        # Another address has its own budget.
        self.assertEqual(client.get(TODOS, **at("10.6.0.2")).status_code, 200)

    def test_health_never_counts_and_is_never_limited(self):
        client = self.make_app(RATE_LIMIT="3 per minute").test_client()
        for _ in range(20):
            self.assertEqual(client.get(HEALTH).status_code, 200)
        for _ in range(3):
            self.assertEqual(client.get(TODOS).status_code, 200)
        self.assertThrottled(client.get(TODOS))
        self.assertEqual(client.get(HEALTH).status_code, 200)

    def test_without_accounts_a_made_up_bearer_token_buys_no_budget(self):
        client = self.make_app(RATE_LIMIT="3 per minute").test_client()
        for name in ("a", "b", "c"):
            self.assertEqual(client.get(TODOS, headers=bearer(name)).status_code, 200)
        self.assertThrottled(client.get(TODOS, headers=bearer("d")))
        self.assertThrottled(client.get(TODOS))


class TestRateLimitPerToken(ThrottlingTestCase):
    """In token mode a bearer request counts against its token, any other against its address."""

    config = TOKEN_MODE | {"RATE_LIMIT": "3 per minute"}

    def test_two_tokens_from_one_address_each_have_their_own_budget(self):
        user = self.add_user("alice")
        tokens = [self.add_token(user), self.add_token(user)]
        for token in tokens:
            for _ in range(3):
                self.assertEqual(self.client.get(TODOS, headers=bearer(token)).status_code, 200)
            self.assertThrottled(self.client.get(TODOS, headers=bearer(token)))
        # Requests without a token from that address have not been counted yet.
        for _ in range(3):
            self.assertEqual(self.client.get(OPENAPI).status_code, 200)
        self.assertThrottled(self.client.get(OPENAPI))
        # A token's budget follows it to another address.
        self.assertThrottled(self.client.get(TODOS, headers=bearer(tokens[0]), **at("10.7.0.2")))

    def test_both_429s_are_problem_details_with_retry_after(self):
        app = self.make_app(RATE_LIMIT="11 per minute")
        client = app.test_client()
        self.fail_logins("10.7.0.3", 10, client=client)
        login = client.post(TOKENS, **at("10.7.0.3"))
        self.assertThrottled(login, "Too many failed logins")
        rate = client.post(TOKENS, **at("10.7.0.3"))
        self.assertThrottled(rate, "Too many requests: the limit is 11 per 1 minute")
        self.assertLessEqual(int(rate.headers["Retry-After"]), 60)


class TestClientAddress(ThrottlingTestCase):
    """The connection's address counts; X-Forwarded-For only with TRUSTED_PROXIES."""

    def test_forwarded_for_is_ignored_by_default(self):
        for hop in range(10):
            response = self.client.post(
                TOKENS, headers={"X-Forwarded-For": f"203.0.113.{hop}"}, **at("10.8.0.1")
            )
            self.assertEqual(response.status_code, 401)
        response = self.client.post(
            TOKENS, headers={"X-Forwarded-For": "203.0.113.99"}, **at("10.8.0.1")
        )
        self.assertThrottled(response)

    def test_behind_one_trusted_proxy_the_last_hop_is_the_client(self):
        client = self.make_app(TRUSTED_PROXIES=1).test_client()
        proxy = at("10.8.0.9")
        # A client may write anything first; the proxy appends the address it saw.
        for claimed in range(10):
            forwarded = {"X-Forwarded-For": f"198.51.100.{claimed}, 203.0.113.7"}
            self.assertEqual(client.post(TOKENS, headers=forwarded, **proxy).status_code, 401)
        forwarded = {"X-Forwarded-For": "198.51.100.200, 203.0.113.7"}
        self.assertThrottled(client.post(TOKENS, headers=forwarded, **proxy))
        self.assertThrottled(
            client.post(TOKENS, headers={"X-Forwarded-For": "203.0.113.7"}, **proxy)
        )
        # Another client through the same proxy is not throttled.
        other = {"X-Forwarded-For": "203.0.113.8"}
        self.assertEqual(client.post(TOKENS, headers=other, **proxy).status_code, 401)

    def test_trusted_proxies_from_the_environment(self):
        with mock.patch.dict(os.environ, {"TODO_TRUSTED_PROXIES": "1"}):
            client = self.make_app().test_client()
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        for _ in range(10):
            self.assertEqual(
                client.post(TOKENS, headers=forwarded, **at("10.8.0.9")).status_code, 401
            )
        self.assertThrottled(client.post(TOKENS, headers=forwarded, **at("10.8.0.9")))
        # The proxy's own address has not been counted.
        self.assertEqual(client.post(TOKENS, **at("10.8.0.9")).status_code, 401)


class TestRedisUnreachable(ThrottlingTestCase):
    """A Redis that refuses connections: what needs a counter is a prompt 503, the rest works."""

    storage = CLOSED_REDIS

    def assertUnavailable(self, response) -> None:  # noqa: N802
        body = self.assertProblem(response, 503)
        self.assertRegex(response.headers["Retry-After"], r"\A[1-9][0-9]*\Z")
        self.assertNotIn("Traceback", body["detail"])
        self.assertNotIn("6379", response.get_data(as_text=True))

    def test_logins_answer_503_promptly(self):
        user = self.add_user("alice")
        token = self.add_token(user)
        for headers in ({}, basic("alice", PASSWORD), basic("alice", "wrong password")):
            started = time.monotonic()
            with self.assertLogs(self.app.logger, "WARNING") as logs:
                response = self.client.post(TOKENS, headers=headers)
            self.assertLess(time.monotonic() - started, 2)
            self.assertUnavailable(response)
            self.assertTrue(all(record.exc_info is None for record in logs.records))
        # With RATE_LIMIT off nothing else needs a counter.
        self.assertEqual(self.client.get(HEALTH).status_code, 200)
        self.assertEqual(self.client.get(TODOS, headers=bearer(token)).status_code, 200)
        response = self.client.post(TODOS, json={"title": "kept"}, headers=bearer(token))
        self.assertEqual(response.status_code, 201)

    def test_rate_limited_requests_answer_503_and_health_still_works(self):
        client = self.make_app(RATE_LIMIT="100 per minute", AUTH="none").test_client()
        started = time.monotonic()
        self.assertUnavailable(client.get(TODOS))
        self.assertUnavailable(client.post(TODOS, json={"title": "lost"}))
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(client.get(HEALTH).status_code, 200)

    def test_a_redis_that_never_answers_is_a_503_after_its_timeout(self):
        with silent_server() as port:
            app = self.make_app(
                RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{port}",
                RATE_LIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            )
            started = time.monotonic()
            with self.assertLogs(app.logger, "WARNING"):
                self.assertUnavailable(app.test_client().post(TOKENS))
            self.assertLess(time.monotonic() - started, 2)

    def test_without_accounts_or_a_limit_redis_is_never_asked(self):
        client = self.make_app(AUTH="none").test_client()
        self.assertEqual(client.post(TODOS, json={"title": "kept"}).status_code, 201)
        self.assertEqual(len(client.get(TODOS).get_json()), 1)


class TestSettings(AppTestCase):
    """Values of the access settings that would not work stop the app with a clear error."""

    def assertRefused(self, name: str, value: Any) -> None:  # noqa: N802
        with self.subTest(name=name, value=value):
            with self.assertRaises(SettingsError) as caught:
                self.make_app(**{name: value})
            self.assertIn(name, str(caught.exception))
            self.assertIn(repr(value), str(caught.exception))

    def test_bad_rate_limits_are_refused(self):
        for value in (
            "3/minute",
            "0 per minute",
            "3 per week",
            "3 per minutes",
            "",
            "per minute",
            "-1 per minute",
            "3 PER MINUTE",
            " 3 per minute",
            3,
            ["3 per minute"],
        ):
            self.assertRefused("RATE_LIMIT", value)

    def test_bad_modes_and_proxy_counts_are_refused(self):
        for value in ("tokens", "TOKEN", "", None, True):
            self.assertRefused("AUTH", value)
        for value in ("yes", "Open", True, None):
            self.assertRefused("REGISTRATION", value)
        for value in (-1, 11, "1", 1.5, True, None):
            self.assertRefused("TRUSTED_PROXIES", value)

    def test_bad_values_from_the_environment_are_refused(self):
        for name, value in (("RATE_LIMIT", "3/minute"), ("AUTH", "yes"), ("TRUSTED_PROXIES", "x")):
            with self.subTest(name=name), mock.patch.dict(os.environ, {f"TODO_{name}": value}):
                with self.assertRaisesRegex(SettingsError, name):
                    create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})

    def test_good_values_from_the_environment_are_taken(self):
        environment = {"TODO_RATE_LIMIT": "3 per second", "TODO_TRUSTED_PROXIES": "2"}
        with mock.patch.dict(os.environ, environment):
            app = self.make_app()
        self.assertEqual(
            (app.config["RATE_LIMIT"], app.config["TRUSTED_PROXIES"]), ("3 per second", 2)
        )
