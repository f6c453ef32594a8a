"""The production server's settings: read from the environment and checked before it starts."""

import os
import unittest
from pathlib import Path
from unittest import mock

from todo import serve
from todo.serve import Settings, SettingsError


class TestSettings(unittest.TestCase):
    def test_defaults_listen_on_loopback_port_8000_with_a_worker_per_usable_cpu(self):
        with mock.patch.object(serve, "usable_cpus", return_value=6):
            settings = serve.settings({})
        self.assertEqual(
            settings,
            Settings(host="127.0.0.1", port=8000, workers=6, threads=128, backlog=1024,
                     backpressure=None, header_timeout_ms=5000, graceful_timeout=20,
                     access_log=True, log_level="info"),
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
        }
        self.assertEqual(
            serve.settings(environ),
            Settings(host="0.0.0.0", port=9000, workers=3, threads=16, backlog=2048,
                     backpressure=300, header_timeout_ms=2500, graceful_timeout=45,
                     access_log=False, log_level="warning"),
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
