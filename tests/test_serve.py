"""The production server's settings: read from the environment and checked before it starts.

The gunicorn configuration refuses what `todo serve` refuses; both are started here as users
start them, to show that they stop before they listen.
"""

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from tests.server import (
    GUNICORN_CONFIG,
    START_TIMEOUT,
    Server,
    free_port,
    gunicorn_command,
    serve_command,
)
from todo import serve
from todo.serve import Settings, SettingsError

# What the refusal to serve an open list beyond loopback must name: both ways out.
WAYS_OUT = ("TODO_AUTH=token", "TODO_AUTH=none explicitly")


class TestSettings(unittest.TestCase):
    def test_defaults_listen_on_loopback_port_8000_with_a_worker_per_usable_cpu(self):
        with mock.patch.object(serve, "usable_cpus", return_value=6):
            settings = serve.settings({})
        self.assertEqual(
            settings,
            Settings(host="127.0.0.1", port=8000, workers=6, threads=128, backlog=1024,
                     backpressure=None, header_timeout_ms=5000, graceful_timeout=20,
                     access_log=True, log_level="info", auth=""),
        )  # fmt: skip

    def test_at_least_two_workers_whatever_the_cpus(self):
        with mock.patch.object(serve, "usable_cpus", return_value=1):
            self.assertEqual(serve.settings({}).workers, 2)

    def test_usable_cpus_are_those_this_process_may_run_on(self):
        self.assertEqual(serve.usable_cpus(), len(os.sched_getaffinity(0)))

    def test_every_setting_comes_from_the_environment(self):
        environ = {
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "WEB_CONCURRENCY": "3",
            "GRANIAN_BLOCKING_THREADS": "16",
            "GRANIAN_BACKLOG": "2048",
            "GRANIAN_BACKPRESSURE": "300",
            "GRANIAN_HTTP1_HEADER_READ_TIMEOUT": "2500",
            "GRANIAN_WORKERS_KILL_TIMEOUT": "45",
            "GRANIAN_LOG_ACCESS_ENABLED": "false",
            "GRANIAN_LOG_LEVEL": "WARNING",
            "TODO_AUTH": "token",
        }
        self.assertEqual(
            serve.settings(environ),
            Settings(host="0.0.0.0", port=9000, workers=3, threads=16, backlog=2048,
                     backpressure=300, header_timeout_ms=2500, graceful_timeout=45,
                     access_log=False, log_level="warning", auth="token"),
        )  # fmt: skip

    def test_empty_variables_are_the_defaults(self):
        environ = {name: " " for name in ("HOST", "PORT", "WEB_CONCURRENCY", "GRANIAN_LOG_LEVEL")}
        with mock.patch.object(serve, "usable_cpus", return_value=4):
            self.assertEqual(serve.settings(environ), serve.settings({}))

    def test_values_that_are_not_numbers_or_switches_are_refused(self):
        for name, value in (("PORT", "http"), ("WEB_CONCURRENCY", "2.5"), ("GRANIAN_BACKLOG", "x")):
            with self.subTest(name=name), self.assertRaisesRegex(SettingsError, name):
                serve.settings({name: value})
        with self.assertRaisesRegex(SettingsError, "GRANIAN_LOG_ACCESS_ENABLED"):
            serve.settings({"GRANIAN_LOG_ACCESS_ENABLED": "sometimes"})


class TestCheck(unittest.TestCase):
    def test_the_defaults_pass(self):
        serve.check(serve.settings({}))

    def test_settings_out_of_range_are_refused_naming_their_variable(self):
        cases = {
            "PORT": {"port": 0},
            "WEB_CONCURRENCY": {"workers": 0},
            "GRANIAN_BLOCKING_THREADS": {"threads": 0},
            "GRANIAN_BACKLOG": {"backlog": 100},
            "GRANIAN_BACKPRESSURE": {"backpressure": 0},
            "GRANIAN_HTTP1_HEADER_READ_TIMEOUT": {"header_timeout_ms": 60_001},
            "GRANIAN_WORKERS_KILL_TIMEOUT": {"graceful_timeout": 0},
            "GRANIAN_LOG_LEVEL": {"log_level": "loud"},
        }
        for name, change in cases.items():
            with self.subTest(name=name), self.assertRaisesRegex(SettingsError, name):
                serve.check(Settings(**change))  # type: ignore[arg-type]

    def test_loopback_addresses_serve_an_open_list(self):
        for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"):
            with self.subTest(host=host):
                serve.check(Settings(host=host))

    def test_an_open_list_beyond_loopback_is_refused_naming_both_ways_out(self):
        hosts = ("0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "todo.example.com", "localhost.lan")
        for host in hosts:
            with self.subTest(host=host):
                with self.assertRaises(SettingsError) as refused:
                    serve.check(Settings(host=host))
                message = str(refused.exception)
                self.assertIn(host, message)
                for way_out in WAYS_OUT:
                    self.assertIn(way_out, message)

    def test_todo_auth_set_explicitly_serves_beyond_loopback(self):
        for auth in ("token", "none"):
            with self.subTest(auth=auth), mock.patch.dict(os.environ, {"TODO_AUTH": auth}):
                serve.check(serve.settings({"HOST": "0.0.0.0", "TODO_AUTH": auth}))

    def test_app_settings_the_workers_would_refuse_are_refused_first(self):
        cases = {
            "TODO_AUTH": ("tokens", "AUTH must be one of none, token, not 'tokens'"),
            "TODO_REGISTRATION": ("public", "REGISTRATION must be one of closed, open"),
            "TODO_RATE_LIMIT": ("lots", "RATE_LIMIT must be like '100 per minute'"),
        }
        for name, (value, message) in cases.items():
            with self.subTest(name=name), mock.patch.dict(os.environ, {name: value}):
                # Named before the address: beyond loopback too, the setting is what is wrong.
                with self.assertRaisesRegex(SettingsError, message):
                    serve.check(serve.settings({"HOST": "0.0.0.0", name: value}))


def started_without_listening(
    test: unittest.TestCase, command: list[str], env: Mapping[str, str], port: int
) -> subprocess.CompletedProcess:
    """Run a server command that must stop by itself; assert that `port` never opened meanwhile.

    Returns the finished process, its output as text in `stdout` (with stderr).
    """
    environ = {name: value for name, value in os.environ.items() if name != "TODO_AUTH"}
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryFile() as output:
        environ |= {"DATABASE_URL": f"sqlite:///{folder}/todo.sqlite", "PORT": str(port)}
        process = subprocess.Popen(
            command,
            env=environ | dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A group of its own, so that killing it takes any worker too.
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while process.poll() is None:
                test.assertLess(time.monotonic(), deadline, "the server did not stop by itself")
                test.assertFalse(listening(port), "the server listened before it stopped")
                # Not a timing assumption: only a pause between probes of a bounded wait.
                time.sleep(0.01)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, output.read().decode())


def listening(port: int) -> bool:
    """Tell whether anything accepts connections on this port of loopback, IPv4 or IPv6."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                return True
    return False


class TestRefusedBeforeListening(unittest.TestCase):
    """`todo serve` and the gunicorn configuration, started as users start them."""

    slow = True

    def assertRefused(self, done: subprocess.CompletedProcess, *messages: str) -> None:  # noqa: N802
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertNotIn("Traceback", done.stdout)
        # One line says what is wrong, once (not once per worker).
        errors = [line for line in done.stdout.splitlines() if line.startswith("Error: ")]
        self.assertEqual(len(errors), 1, done.stdout)
        for message in messages:
            self.assertIn(message, errors[0])

    def test_todo_serve_refuses_an_open_list_beyond_loopback(self):
        for host in ("0.0.0.0", "::"):
            with self.subTest(host=host):
                port = free_port()
                done = started_without_listening(self, serve_command(), {"HOST": host}, port)
                self.assertEqual(done.returncode, 2, done.stdout)
                self.assertRefused(done, f"Refusing to listen on {host},", *WAYS_OUT)

    def test_the_gunicorn_configuration_refuses_an_open_list_beyond_loopback(self):
        command = gunicorn_command(GUNICORN_CONFIG)
        for how in ("HOST", "GUNICORN_CMD_ARGS"):
            with self.subTest(how=how):
                port = free_port()
                env = (
                    {"HOST": "0.0.0.0"}
                    if how == "HOST"
                    else {"GUNICORN_CMD_ARGS": f"--bind=127.0.0.1:{port} --bind=[::]:{port}"}
                )
                done = started_without_listening(self, command, env, port)
                host = "0.0.0.0" if how == "HOST" else "::"
                self.assertRefused(done, f"Refusing to listen on {host},", *WAYS_OUT)

    def test_invalid_app_settings_stop_either_server_with_one_line(self):
        cases = {
            "TODO_AUTH": ("Token", "AUTH must be one of none, token, not 'Token'."),
            "TODO_REGISTRATION": ("yes", "REGISTRATION must be one of closed, open, not 'yes'."),
            "TODO_RATE_LIMIT": ("100/minute", "RATE_LIMIT must be like '100 per minute'"),
        }
        runs = [(serve_command(), name) for name in cases]
        # The gunicorn configuration runs the same check: once is enough to show it does.
        runs.append((gunicorn_command(GUNICORN_CONFIG), "TODO_AUTH"))
        for command, name in runs:
            value, message = cases[name]
            with self.subTest(name=name, command=command):
                env = {name: value, "WEB_CONCURRENCY": "3"}
                done = started_without_listening(self, command, env, free_port())
                self.assertRefused(done, message)

    def test_todo_auth_set_explicitly_serves_beyond_loopback(self):
        cases = {
            "todo serve, token": (serve_command(), "token"),
            "todo serve, none": (serve_command(), "none"),
            "gunicorn, token": (gunicorn_command(GUNICORN_CONFIG), "token"),
        }
        for case, (command, auth) in cases.items():
            with self.subTest(case=case), tempfile.TemporaryDirectory() as folder:
                env = {"TODO_AUTH": auth}
                database = f"sqlite:///{folder}/todo.sqlite"
                with Server(database, 1, command, env, host="0.0.0.0") as server:
                    # Listening on every interface: loopback included.
                    with server.client() as client:
                        answer = client.request("GET", "/api/v1/todos")
                    self.assertEqual(answer.status, 401 if auth == "token" else 200)

    def test_plain_gunicorn_without_the_configuration_is_left_as_it_was(self):
        # The classic command, `gunicorn "todo:create_app()"`, reads no configuration of ours.
        with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ):
            os.environ.pop("TODO_AUTH", None)
            database = f"sqlite:///{folder}/todo.sqlite"
            with Server(database, 1, gunicorn_command(), host="0.0.0.0") as server:
                with server.client() as client:
                    self.assertEqual(client.request("GET", "/api/v1/todos").status, 200)


class TestRequestLookalikes(unittest.TestCase):
    def test_variables_a_request_could_carry_are_dropped_and_named(self):
        environ = {
            "HTTP_IF_MATCH": '"1-1"',
            "HTTP_PROXY": "http://proxy:3128",
            "CONTENT_LENGTH": "5",
            "CONTENT_TYPE": "text/plain",
            "REMOTE_USER": "admin",
            "DATABASE_URL": "sqlite://",
            "PATH": "/usr/bin",
            "http_proxy": "http://proxy:3128",
        }
        with mock.patch.dict(os.environ, environ, clear=True):
            dropped = serve.drop_request_lookalikes(os.environ)
            remaining = dict(os.environ)
        self.assertEqual(
            sorted(dropped),
            ["CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_IF_MATCH", "HTTP_PROXY", "REMOTE_USER"],
        )
        self.assertEqual(remaining, {"DATABASE_URL": "sqlite://", "PATH": "/usr/bin",
                                     "http_proxy": "http://proxy:3128"})  # fmt: skip


class TestDocumented(unittest.TestCase):
    def test_the_readme_names_every_variable_the_server_reads(self):
        readme = (Path(__file__).parent.parent / "README.md").read_text()
        table = [line for line in readme.splitlines() if line.startswith("| `")]
        for name in serve.VARIABLES.values():
            with self.subTest(name=name):
                self.assertTrue(any(f"`{name}`" in line for line in table), name)
