"""The service started as users start it (`todo serve`), plain HTTP clients that talk to it,
and which of its workers holds a connection.

Everything here is bounded in time: the server must answer its health check within
START_TIMEOUT, stop within STOP_TIMEOUT, and every request gets an answer within
REQUEST_TIMEOUT, or the test fails.
"""

import contextlib
import ctypes
import http.client
import itertools
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import orjson

APP = "todo:create_app()"
GUNICORN_CONFIG = "python:todo.gunicorn_conf"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
# Above the graceful timeout the tests give the server, so a clean stop is never cut short.
GRACEFUL_TIMEOUT = 10
STOP_TIMEOUT = GRACEFUL_TIMEOUT + 10.0
REQUEST_TIMEOUT = 30.0
# Errors a client sees when the server goes away under it.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
# Bound on any group of client threads and on any wait for an event.
LOAD_TIMEOUT = 120.0
# What each server logs once a worker has loaded the app and serves.
STARTED_WORKER = {"todo serve": "Started worker-", "gunicorn": "Booting worker"}
_PR_SET_PDEATHSIG = 1
# Looked up now, so that the child only calls it between fork and exec.
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def run_concurrently(count: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Run `work(index, barrier)` in `count` threads at once; return results, raise failures."""
    barrier = threading.Barrier(count, timeout=LOAD_TIMEOUT)
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(work, index, barrier) for index in range(count)]
        return [future.result(timeout=LOAD_TIMEOUT) for future in futures]


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


def raw_exchange(
    port: int, data: bytes, then: str = "read", timeout: float = REQUEST_TIMEOUT
) -> Response | None:
    """Send raw bytes on a new connection and read the answer.

    `then` is what the client does after sending: "read" the answer, "shut" its sending side
    first (as a client that gave up sending does) and read, or "close" the connection at once
    (no answer then).
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        if then == "close":
            return None
        if then == "shut":
            sock.shutdown(socket.SHUT_WR)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return Response(answer.status, answer.headers, answer.read())


def _readable(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    # poll, not select: a test with hundreds of sockets has descriptors past select's 1024.
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def _at_end(sock: socket.socket) -> bool:
    try:
        return not sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


class HostileClients:
    """Connections that hold a server up: idle, slow to send, or never reading their answer.

    Every socket has a timeout and is closed by `close`; nothing here waits on a clock.
    """

    TODOS = LONG_LIST = "/api/v1/todos"
    BODY = b'{"title": "sent slowly"}'

    def __init__(self, port: int, host: str = HOST):
        self.address = (host, port)
        self.idle: list[socket.socket] = []
        self.slow_headers: list[socket.socket] = []
        self.slow_bodies: list[socket.socket] = []
        self.non_readers: list[socket.socket] = []

    def _connect(self, receive_buffer: int | None = None) -> socket.socket:
        sock = socket.socket()
        if receive_buffer:
            # A small window: the server soon has to wait for this client to read.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(REQUEST_TIMEOUT)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        return sock

    def _request(self, method: str, path: str, lines: str = "") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{lines}".encode()

    def open_idle(self, count: int) -> None:
        """Connect and send nothing."""
        self.idle += [self._connect() for _ in range(count)]

    def open_slow_headers(self, count: int) -> None:
        """Send the start of a request's headers, never their end."""
        for _ in range(count):
            sock = self._connect()
            self.slow_headers.append(sock)
            sock.sendall(self._request("GET", "/api/v1/todos/1", "Accept: application/json\r\n"))

    def open_slow_bodies(self, count: int) -> None:
        """Send a create's headers and the first bytes of its body; `finish_body` sends the rest."""
        head = self._request(
            "POST",
            self.TODOS,
            f"Content-Type: application/json\r\nContent-Length: {len(self.BODY)}\r\n\r\n",
        )
        for _ in range(count):
            sock = self._connect()
            self.slow_bodies.append(sock)
            sock.sendall(head + self.BODY[:5])

    def finish_body(self, sock: socket.socket) -> Response:
        """Send the rest of a slow body and read the answer."""
        sock.sendall(self.BODY[5:])
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return Response(answer.status, answer.headers, answer.read())

    def open_non_readers(self, count: int) -> None:
        """Ask for the whole list and never read it; return once each is being answered."""
        for _ in range(count):
            sock = self._connect(receive_buffer=4096)
            self.non_readers.append(sock)
            sock.sendall(self._request("GET", self.LONG_LIST, "\r\n"))
        deadline = time.monotonic() + REQUEST_TIMEOUT
        waiting = list(self.non_readers)
        while waiting and time.monotonic() < deadline:
            readable = _readable(waiting, 0.1)
            waiting = [sock for sock in waiting if sock not in readable]
        if waiting:
            raise TimeoutError(f"{len(waiting)} long lists were not being sent")

    def closed_by_the_server(self) -> list[socket.socket]:
        """Return the idle and slow-header connections the server has closed."""
        return [sock for sock in _readable(self.idle + self.slow_headers, 0) if _at_end(sock)]

    def close(self) -> None:
        """Close every connection."""
        for group in (self.idle, self.slow_headers, self.slow_bodies, self.non_readers):
            for sock in group:
                sock.close()
            group.clear()


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    # Columns of /proc/net/tcp: slot, local address:port, remote address:port, state, ...,
    # inode (the tenth), with the ports in hexadecimal.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            local, remote = columns[1].rpartition(":")[2], columns[2].rpartition(":")[2]
            if int(local, 16) == server_port and int(remote, 16) == client_port:
                return columns[9]
    return None


def todo_command() -> list[str]:
    """Return the `todo` command installed with the package, as users run it."""
    script = Path(sys.executable).parent / "todo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "todo"]


def serve_command() -> list[str]:
    """Return `todo serve`: the production server with the project's settings."""
    return [*todo_command(), "serve"]


def gunicorn_command(config: str | None = None) -> list[str]:
    """Return `gunicorn "todo:create_app()"`, with a configuration file if given."""
    options = [f"--config={config}"] if config else []
    return [sys.executable, "-m", "gunicorn", *options, APP]


class Server:
    """The service in a process group of its own: `todo serve` unless told another command.

    Address, workers and database come from the environment, as users give them: HOST, PORT,
    WEB_CONCURRENCY and DATABASE_URL (and GUNICORN_CMD_ARGS for the address of a plain
    gunicorn, which reads PORT only to listen on every interface).
    """

    def __init__(
        self,
        database_url: str,
        workers: int = 3,
        command: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        host: str = HOST,
    ):
        self.database_url = database_url
        self.workers = workers
        self.command = command or serve_command()
        self.env = dict(env or {})
        # Where it listens; clients connect to HOST, which 0.0.0.0 includes.
        self.host = host
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()
        # Seconds from the last SIGTERM to the server's exit; endless until `wait` sees it.
        self.stopping_time = math.inf
        self._terminated_at = 0.0

    def start(self, health: int = 200) -> "Server":
        """Start the server and wait until its health check answers `health` (200: healthy)."""
        self.port = free_port()
        env = os.environ | {
            "DATABASE_URL": self.database_url,
            "HOST": self.host,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(self.workers),
            "GRANIAN_WORKERS_KILL_TIMEOUT": str(GRACEFUL_TIMEOUT),
            "GUNICORN_CMD_ARGS": (
                f"--bind={self.host}:{self.port} --graceful-timeout={GRACEFUL_TIMEOUT}"
            ),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            self.command,
            env=env | self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A group of its own, so that killing it takes the workers too and nothing else.
            start_new_session=True,
            preexec_fn=_stop_when_the_tests_die,
        )
        try:
            self._wait_until_healthy(health)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_until_healthy(self, health: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                with Client(self.port, timeout=1) as client:
                    if client.request("GET", "/api/v1/health").status == health:
                        return
            except CONNECTION_ERRORS:
                pass
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        raise TimeoutError(f"the server was not healthy within {START_TIMEOUT} s:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> set[int]:
        """Return the process ids of the server's workers (its child processes)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(child) for child in children}

    def worker_serving(self, client: Client) -> int | None:
        """Return the process id of the worker that holds this client's connection, if any.

        Linux only: the connection's server side is found in /proc/net by its two ports, and
        its socket among the workers' open files.
        """
        sock = client.connection.sock
        if sock is None:
            return None
        inode = _server_side_inode(self.port, sock.getsockname()[1])
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for pid in self.worker_pids():
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                # A descriptor closed while the folder is read is not the one sought.
                with contextlib.suppress(OSError):
                    if os.readlink(descriptor) == target:
                        return pid
        return None

    def cpu_ticks(self) -> int:
        """Return the CPU time its workers have used so far, in clock ticks."""
        ticks = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime and stime
        return ticks

    def wait_until_quiet(self, window: float = 0.25) -> None:
        """Wait until the workers use (almost) no CPU: what they were given is done or stuck."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        before = self.cpu_ticks()
        while time.monotonic() < deadline:
            # Not a timing assumption: the window over which quiet is judged.
            time.sleep(window)
            now = self.cpu_ticks()
            if now - before <= 2:
                return
            before = now
        raise TimeoutError(f"the workers were still busy after {REQUEST_TIMEOUT} s")

    def client(self) -> Client:
        """Return a new client of this server."""
        return Client(self.port)

    def terminate(self) -> None:
        """Ask the server to shut down gracefully, as a service manager does; do not wait."""
        self._terminated_at = time.monotonic()
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the server to exit; return its exit code."""
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.stopping_time = time.monotonic() - self._terminated_at
        return returncode

    def kill(self) -> None:
        """Kill the server and its workers at once with SIGKILL, as a crash would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server gracefully if it still runs."""
        if self.running:
            self.terminate()
            # A server that does not stop in time is killed, and the test fails.
            self.wait()

    def log(self) -> str:
        """Return everything the server and the app have written so far."""
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


@dataclass
class Worker:
    """A kept-alive connection held by one worker of a server: that worker answers on it."""

    server: Server
    pid: int
    client: Client


def connections_to_every_worker(servers: list[Server], attempts: int = 500) -> list[Worker]:
    """Open connections until every worker of these servers holds one; return one per worker.

    They come in turns, one server's worker after another's. The other connections opened on
    the way are closed. Fails after `attempts` new connections.
    """
    found: dict[int, Worker] = {}
    wanted = {pid for server in servers for pid in server.worker_pids()}
    for attempt in range(attempts):
        server = servers[attempt % len(servers)]
        client = server.client()
        # Answered, the connection has been accepted by the worker that holds it now.
        client.request("GET", "/api/v1/health")
        pid = server.worker_serving(client)
        if pid in wanted and pid not in found:
            found[pid] = Worker(server, pid, client)
            if len(found) == len(wanted):
                break
        else:
            client.close()
    else:
        for worker in found.values():
            worker.client.close()
        raise TimeoutError(f"{len(wanted) - len(found)} workers took no connection")
    by_server = [[w for w in found.values() if w.server is server] for server in servers]
    return [worker for turn in itertools.zip_longest(*by_server) for worker in turn if worker]
