"""A real gunicorn serving the app to the tests, and plain HTTP clients that talk to it.

Everything here is bounded in time: the server must answer its health check within
START_TIMEOUT, stop within STOP_TIMEOUT, and every request gets an answer within
REQUEST_TIMEOUT, or the test fails.
"""

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

import orjson

APP = "todo:create_app()"
CONFIG = "python:todo.gunicorn_conf"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
# Above the graceful timeout the tests give gunicorn, so a clean stop is never cut short.
GRACEFUL_TIMEOUT = 10
STOP_TIMEOUT = GRACEFUL_TIMEOUT + 10.0
REQUEST_TIMEOUT = 30.0
# Errors a client sees when the server goes away under it.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
_PR_SET_PDEATHSIG = 1
# Looked up now, so that the child only calls it between fork and exec.
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _stop_when_the_tests_die() -> None:
    # Linux only: a test run that is itself killed must not leave a server running. The signal
    # comes when the thread that started the server ends, so tests start servers from their
    # own thread, not from a client thread.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Response:
    """A response read whole: status, headers and body."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return orjson.loads(self.body)


class Client:
    """One kept-alive HTTP connection to the server; it reconnects after the server closes it."""

    def __init__(self, port: int, timeout: float = REQUEST_TIMEOUT):
        self.connection = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def connect(self) -> None:
        """Open the connection now, so that a later request goes out without a handshake."""
        self.connection.connect()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request (a JSON body when `body` is given) and read the whole response."""
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        try:
            self.connection.request(method, path, data, headers)
            response = self.connection.getresponse()
            result = Response(response.status, response.headers, response.read())
        except CONNECTION_ERRORS:
            self.close()
            raise
        if response.will_close:
            self.close()
        return result

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        self.connection.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Server:
    """gunicorn in a process group of its own, with the project's configuration by default."""

    def __init__(self, database_url: str, workers: int = 3, config: str | None = CONFIG):
        self.database_url = database_url
        self.workers = workers
        self.config = config
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def start(self) -> "Server":
        """Start gunicorn and wait until its health check answers 200."""
        self.port = free_port()
        env = os.environ | {"DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        env.pop("GUNICORN_CMD_ARGS", None)
        # Options on the command line win over the configuration file's.
        options = [
            f"--bind={HOST}:{self.port}",
            f"--workers={self.workers}",
            f"--graceful-timeout={GRACEFUL_TIMEOUT}",
        ]
        if self.config:
            options.append(f"--config={self.config}")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *options, APP],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A group of its own, so that killing it takes the workers too and nothing else.
            start_new_session=True,
            preexec_fn=_stop_when_the_tests_die,
        )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with Client(self.port, timeout=1) as client:
                    if client.request("GET", "/api/v1/health").status == 200:
                        return
            except CONNECTION_ERRORS:
                pass
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not become healthy in {START_TIMEOUT} s:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Client:
        """Return a new client of this server."""
        return Client(self.port)

    def terminate(self) -> None:
        """Ask gunicorn to shut down gracefully, as a service manager does; do not wait."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for gunicorn to exit; return its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Kill gunicorn and its workers at once with SIGKILL, as a crash would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop gunicorn gracefully if it still runs."""
        if self.running:
            self.terminate()
            # A server that does not stop in time is killed, and the test fails.
            self.wait()

    def log(self) -> str:
        """Return everything gunicorn and the app have written so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        """Stop the server and drop its log."""
        try:
            self.stop()
        finally:
            self._log.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
