"""Measure how hostile clients on loopback delay a normal client, under each server.

    .venv/bin/python bench/slow_clients.py [--servers granian,gunicorn] [--quick]

For each server: seed a SQLite file with 100,000 todos, start the server as users do
(`todo serve`, or gunicorn with todo/gunicorn_conf.py) with two workers, measure GET one
todo's rate with wrk (when installed), then for each scenario open the hostile connections
with raw sockets (idle ones, headers sent slowly, bodies sent slowly, clients that never read
the whole list), keep them open (an attacker reconnects what the server closes), and time a
normal client's requests meanwhile, each on a new connection. Everything is bounded: every
socket has a timeout, each scenario lasts a fixed time, and every socket is closed at the end.
"""

import argparse
import contextlib
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from databases import SQLite
from run import BENCH, ROOT, free_port, seed, stop, wait_ready

GUNICORN_APP = "todo:create_app()"

TODOS = 100_000
WORKERS = 2
HOST = "127.0.0.1"
# How long a normal request may take before it counts as stalled, and the give-up point.
PROMPT = 1.0
PROBE_TIMEOUT = 5.0
# Pause between the normal client's requests; each one has a new connection.
PROBE_INTERVAL = 0.2
SOCKET_TIMEOUT = 5.0
# The body a slow client announces, and the part of it that it sends.
SLOW_BODY = b'{"title": "sent slowly, never finished"}'


@dataclass(frozen=True)
class Scenario:
    name: str
    idle: int = 0
    slow_headers: int = 0
    slow_bodies: int = 0
    non_readers: int = 0


SCENARIOS = [
    Scenario("nobody else"),
    Scenario("40 idle", idle=40),
    Scenario("40 slow bodies", slow_bodies=40),
    Scenario("the target", idle=200, slow_headers=200, slow_bodies=50, non_readers=25),
    Scenario("600 slow bodies", slow_bodies=600),
]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    reconnects: int = 0

    def row(self, server: str, scenario: Scenario) -> str:
        answered = sorted(self.latencies)
        prompt = sum(latency <= PROMPT for latency in answered)
        total = len(answered) + self.failures

        def ms(value: float | None) -> str:
            return "–" if value is None else f"{value * 1000:.0f}"

        p50 = answered[len(answered) // 2] if answered else None
        worst = answered[-1] if answered else None
        return (
            f"| {server} | {scenario.name} | {prompt}/{total} | {ms(p50)} | {ms(worst)}"
            f" | {self.failures} | {self.reconnects} |"
        )


def request_bytes(method: str, path: str, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}".encode()


SLOW_HEADERS = request_bytes("GET", "/api/v1/todos/1", "Accept: application/json\r\nX-Slow: ")
SLOW_BODY_HEAD = request_bytes(
    "POST",
    "/api/v1/todos",
    f"Content-Type: application/json\r\nContent-Length: {len(SLOW_BODY)}\r\n\r\n",
)
LONG_LIST = request_bytes("GET", "/api/v1/todos", "\r\n")


class Attackers:
    """Hostile connections of each kind, kept at their number until closed."""

    def __init__(self, port: int, scenario: Scenario):
        self.port = port
        self.wanted = {
            "idle": scenario.idle,
            "headers": scenario.slow_headers,
            "body": scenario.slow_bodies,
            "reader": scenario.non_readers,
        }
        self.sockets: dict[socket.socket, str] = {}
        self.reconnects = 0

    def open(self, kind: str) -> None:
        sock = socket.socket()
        if kind == "reader":
            # A small receive window, so that the server is soon stuck writing to it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(SOCKET_TIMEOUT)
        try:
            sock.connect((HOST, self.port))
            sock.sendall(
                {
                    "idle": b"",
                    "headers": SLOW_HEADERS,
                    "body": SLOW_BODY_HEAD + SLOW_BODY[:10],
                    "reader": LONG_LIST,
                }[kind]
            )
        except OSError:
            sock.close()
            return
        self.sockets[sock] = kind

    def fill(self) -> None:
        """Open what is missing of each kind."""
        for kind, wanted in self.wanted.items():
            have = sum(1 for found in self.sockets.values() if found == kind)
            for _ in range(wanted - have):
                self.open(kind)

    def replace_closed(self) -> None:
        """Reopen the connections the server has closed (readable with nothing to read)."""
        watched = [sock for sock, kind in self.sockets.items() if kind != "reader"]
        if not watched:
            return
        readable, _, _ = select.select(watched, [], [], 0)
        for sock in readable:
            try:
                data = sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except OSError:
                data = b""
            if not data:
                del self.sockets[sock]
                sock.close()
                self.reconnects += 1
        self.fill()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def probe(port: int) -> float | None:
    """Send one normal request on a new connection; return its duration, None if it failed."""
    start = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(request_bytes("GET", "/api/v1/todos/1", "Connection: close\r\n\r\n"))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return None
    if not answer.startswith(b"HTTP/1.1 200 "):
        return None
    return time.perf_counter() - start


def run_scenario(port: int, scenario: Scenario, seconds: float) -> Result:
    """Hold the scenario's hostile connections while the normal client sends requests."""
    attackers = Attackers(port, scenario)
    result = Result()
    done = threading.Event()

    def normal_client() -> None:
        while not done.is_set():
            latency = probe(port)
            if latency is None:
                result.failures += 1
            else:
                result.latencies.append(latency)
            done.wait(PROBE_INTERVAL)

    try:
        attackers.fill()
        client = threading.Thread(target=normal_client)
        client.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            attackers.replace_closed()
            time.sleep(0.1)
        done.set()
        client.join(PROBE_TIMEOUT * 2)
    finally:
        done.set()
        attackers.close()
    result.reconnects = attackers.reconnects
    return result


def start(server: str, db: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """Start a server as users start it; return its process and port."""
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{db}",
        "HOST": HOST,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(WORKERS),
        "GRANIAN_LOG_ACCESS_ENABLED": "false",
        "GUNICORN_ACCESSLOG": "",
    }
    venv = Path(sys.executable).parent
    if server == "granian":
        command = [str(venv / "todo"), "serve"]
    else:
        command = [str(venv / "gunicorn"), "-c", "python:todo.gunicorn_conf", GUNICORN_APP]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(process, f"http://{HOST}:{port}", log)
    except BaseException:
        stop(process)
        raise
    return process, port


def get_one_rate(port: int, seconds: int) -> str:
    """Return wrk's requests per second for GET one todo, or a dash without wrk."""
    if not shutil.which("wrk"):
        return "–"
    command = [
        "wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(BENCH / "get_one.lua"),
        f"http://{HOST}:{port}/api/v1/todos/1", "--", str(TODOS),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return f"{float(found[1]):.0f}" if found else "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="granian,gunicorn", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario (default 8)")
    parser.add_argument("--quick", action="store_true", help="2 s per scenario, 10,000 todos")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    count = 10_000 if args.quick else TODOS
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    rows, rates = [], {}
    with tempfile.TemporaryDirectory(prefix="todo-slow-") as tmp:
        files = SQLite(Path(tmp))
        seed(files, count)
        for server in servers:
            files.copy("seed", server)
            db = files.path(server)
            log = Path(tmp) / f"{server}.log"
            process, port = start(server, db, log)
            try:
                rates[server] = get_one_rate(port, 2 if args.quick else 5)
                for scenario in SCENARIOS:
                    result = run_scenario(port, scenario, seconds)
                    rows.append(result.row(server, scenario))
                    print(rows[-1], file=sys.stderr)
            finally:
                with contextlib.suppress(Exception):
                    stop(process)
    print(
        f"\n{count:,} todos; {WORKERS} workers each; a normal GET of one todo every"
        f" {PROBE_INTERVAL} s on a new connection for {seconds:g} s per scenario;"
        f" hostile connections reopened as soon as the server closes them\n"
    )
    print("| server | hostile clients | answered within 1 s | p50 ms | slowest ms | failed"
          " | hostile reconnects |")  # fmt: skip
    print("|---|---|--:|--:|--:|--:|--:|")
    for row in rows:
        print(row)
    print("\n| server | GET one todo, req/s (wrk -t1 -c8) |\n|---|--:|")
    for server, rate in rates.items():
        print(f"| {server} | {rate} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
