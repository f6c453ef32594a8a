"""Benchmark the service against the raw-sqlite3 ceiling app, under `todo serve` and wrk.

    .venv/bin/python bench/run.py [--quick] [--rounds N] [--duration S] [--workloads K,...]
    .venv/bin/python bench/run.py --memory [--quick]

See bench/README.md for what the workloads are and how to read the numbers.
"""

import argparse
import contextlib
import http.client
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TODO = Path(sys.executable).parent / "todo"
FLASK = Path(sys.executable).parent / "flask"
# App factories for the production server: the service's own, and the reference apps'.
SERVICE = "todo.serve:worker_app"
CEILING = "bench.frozen:ceiling"
FLOOR = "bench.frozen:floor"
# The reference apps run under exactly what `todo serve` runs: its settings, its server.
RUN_APP = "import sys; from todo import serve; serve.run(serve.settings(), sys.argv[1])"
SERVER = "todo serve (granian, production settings, access log off)"
TODOS = 10_000
MEMORY_TODOS = 100_000
CONNECTIONS = 8
# The service's table, for when the service is not there to create it.
SCHEMA = """CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title VARCHAR(80) NOT NULL,
    description VARCHAR(120),
    completed BOOLEAN NOT NULL,
    deadline_at DATETIME,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    version INTEGER NOT NULL
)"""
DB_TIME = "%Y-%m-%dT%H:%M:%S"  # as the service stores datetimes in SQLite


# The apps measured, in the table's order; each round alternates which goes first.
APPS = ("service", "floor", "ceiling")
# AUTH none against AUTH token: the service as above, and the service in token mode, whose
# every request carries a user's bearer token (issue 12).
TOKEN_APPS = ("service", "token")
# The apps that run in AUTH token, on todos owned by TOKEN_USER, made with the CLI as an
# administrator would; every request they get carries that user's bearer token.
BEARER_APPS = {"token"}
TOKEN_USER = "bench"


class Workload(NamedTuple):
    key: str  # its name in --workloads
    name: str
    path: str
    script: str | None
    # The ratio asked for: service/ceiling (issue 6), or token/none for TOKEN_APPS (issue 12).
    target: float
    apps: tuple[str, ...] = APPS


# Writes come last so that every read sees exactly the seeded 10,000 todos.
WORKLOADS = [
    Workload("get_one", "GET one of 10,000", "/api/v1/todos/1", "get_one.lua", 0.8),
    Workload("get_one_token", "GET one of 10,000", "/api/v1/todos/1", "get_one.lua", 0.85,
             TOKEN_APPS),
    Workload("limit_100", "GET ?limit=100", "/api/v1/todos?limit=100", None, 0.8),
    Workload("all", "GET all 10,000", "/api/v1/todos", None, 1.0),
    Workload("window", "GET ?completed=false&window=7", "/api/v1/todos?completed=false&window=7",
             None, 1.0),
    Workload("post", "POST", "/api/v1/todos", "post.lua", 0.6),
    Workload("put", "PUT one of 10,000", "/api/v1/todos", "put.lua", 0.6),
]  # fmt: skip


class Sample(NamedTuple):
    rps: float
    p50: float
    p99: float
    errors: int


def seed(path, count, service):
    """Create the todos table in a new SQLite file and fill it, the same way every time."""
    if service == SERVICE:
        # The service creates its own schema, so both apps read the table it really uses.
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}"}
        code = "from todo import create_app; create_app()"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=120
        )
        if done.returncode:
            sys.exit(
                f"The service cannot start from {sys.executable}:\n{done.stderr.decode()[-2000:]}"
                "Install it (pip install -e .) and run this script with that Python."
            )
    rng = random.Random(6)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    def row(number):
        # Deadlines within 30 days either side of now, so that `window` has work to do.
        deadline = now + timedelta(minutes=rng.randint(-30 * 1440, 30 * 1440))
        deadline = deadline.strftime(DB_TIME) if rng.random() < 0.8 else None
        description = f"Description of todo {number}" if rng.random() < 0.75 else None
        completed = rng.random() < 0.5
        stamp = (now - timedelta(days=60) + timedelta(seconds=number)).strftime(DB_TIME)
        return (f"Todo {number}", description, completed, deadline, stamp, stamp, 1)

    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(SCHEMA)
        conn.executemany(
            "INSERT INTO todos (title, description, completed, deadline_at,"
            " created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row(number) for number in range(1, count + 1)),
        )


def sign_up(db):
    """Give the todos in `db` to a new user, as an administrator would; return its token.

    With the CLI: `flask --app todo users create`, `tokens create`, and `todos adopt`, which
    gives the user the seeded todos (they have no owner), as when a service moves from AUTH
    none to token.
    """
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "TODO_AUTH": "token"}

    def flask(*args, password=""):
        done = subprocess.run(
            [str(FLASK), "--app", "todo", *args], input=password, env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"flask --app todo {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    flask("users", "create", TOKEN_USER, password=secrets.token_urlsafe(16) + "\n")
    token = flask("tokens", "create", TOKEN_USER, "--name", "benchmark").strip()
    flask("todos", "adopt", TOKEN_USER)
    return token


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(log):
    return log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def server(app, db, workers, log, settings=None):
    """Run the production server on core 0 for `app` on the SQLite file `db`; yield it, its URL.

    `settings` adds to its environment (TODO_AUTH, say).
    """
    port = free_port()
    # Every app runs under the service's production settings, without the access log.
    env = {
        **os.environ, "DATABASE_URL": f"sqlite:///{db}", "BENCH_DB": str(db),
        "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers),
        "GRANIAN_LOG_ACCESS_ENABLED": "false", "GRANIAN_WORKERS_KILL_TIMEOUT": "5",
        **(settings or {}),
    }  # fmt: skip
    serve = [str(TODO), "serve"] if app == SERVICE else [sys.executable, "-c", RUN_APP, app]
    command = ["taskset", "-c", "0", *serve]
    with log.open("ab") as out:
        # A session of its own, so that stopping it stops every worker too.
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log)
        yield proc, url
    finally:
        stop(proc)


def wait_ready(proc, url, log, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"{url}/api/v1/health did not answer 200 in {seconds} s:\n{tail(log)}")


def stop(proc):
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def warm(url, token=None):
    """Take each read path once, so that no measurement pays for first-request setup."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for path in sorted({w.path for w in WORKLOADS if w.script is None} | {"/api/v1/todos/1"}):
        request = urllib.request.Request(url + path, headers=headers)
        urllib.request.urlopen(request, timeout=60).read()


def milliseconds(text):
    value, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]


def load(url, workload, duration, token=None):
    """Run wrk on core 1 against one workload and return what it measured.

    With a token every request carries it as a bearer token (the scripts read BENCH_TOKEN
    from the environment, so that no command line or error message shows it).
    """
    command = [
        "taskset", "-c", "1", "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s",
        "--latency", "--timeout", "10s",
    ]  # fmt: skip
    if workload.script:
        command += ["-s", str(BENCH / workload.script)]
    command += [url + workload.path, "--", str(TODOS)]
    env = {name: value for name, value in os.environ.items() if name != "BENCH_TOKEN"}
    if token is not None:
        env["BENCH_TOKEN"] = token
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=True, env=env
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    # wrk pads units to a fixed width: "1.28s " but "12.50ms".
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+[a-z]+)", out, re.M))
    if rps is None or len(latency) != 2:
        raise RuntimeError(f"Unexpected wrk output for {workload.name}:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found[1])
    if re.search(r"^\s+0 requests in", out, re.M):
        # wrk prints zero latencies when no request completed; they were not measured.
        return Sample(0.0, math.nan, math.nan, errors)
    return Sample(float(rps[1]), milliseconds(latency["50"]), milliseconds(latency["99"]), errors)


def throughput(tmp, apps, workloads, rounds, duration):
    """Run each workload on each of its apps in turn, round after round; return the samples.

    All the servers the workloads need are up at once, each on its own copy of the seeded
    data, and a workload's apps take turns, in an order that alternates every round. Each
    sample of one app then has one of every other app taken seconds away, and a machine
    whose speed drifts over minutes (another tenant, heat) shifts them all alike.
    """
    source = tmp / "seed.sqlite"
    seed(source, TODOS, apps["service"])
    needed = [name for name in apps if any(name in w.apps for w in workloads)]
    samples = {(name, w.key): [] for w in workloads for name in w.apps}
    tokens = {}
    with contextlib.ExitStack() as servers:
        urls = {}
        for name in needed:
            db = tmp / f"{name}.sqlite"
            shutil.copyfile(source, db)
            settings = None
            if name in BEARER_APPS:
                tokens[name] = sign_up(db)
                settings = {"TODO_AUTH": "token"}
            log = tmp / f"{name}.log"
            _, urls[name] = servers.enter_context(server(apps[name], db, 2, log, settings))
            warm(urls[name], tokens.get(name))
        for workload in workloads:
            for index in range(rounds):
                order = workload.apps if index % 2 == 0 else workload.apps[::-1]
                for name in order:
                    sample = load(urls[name], workload, duration, tokens.get(name))
                    samples[name, workload.key].append(sample)
                    print(f"round {index + 1} {name} {workload.key}: {sample}", file=sys.stderr)
    return samples


def median(values):
    """Return the median of the values measured (NaN stands for none)."""
    measured = [value for value in values if not math.isnan(value)]
    return statistics.median(measured) if measured else math.nan


def summary(runs):
    """Return the medians over rounds, and the total of errors."""
    medians = (median(getattr(run, field) for run in runs) for field in ("rps", "p50", "p99"))
    return Sample(*medians, sum(run.errors for run in runs))


def number(value):
    if math.isnan(value):
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def report(samples, workloads, rounds, duration):
    """Print the medians over rounds as markdown tables; return whether any request failed."""
    print(
        f"\n{rounds} round(s) × {duration} s per workload; wrk -t2 -c{CONNECTIONS} on core 1;"
        f" {SERVER} with 2 workers on core 0; medians over rounds"
    )
    notes, failed = [], False
    results = {(name, w.key): summary(samples[name, w.key]) for w in workloads for name in w.apps}
    if frameworks := [w for w in workloads if w.apps == APPS]:
        print("\n| workload | service req/s | floor req/s | ceiling req/s | service/ceiling"
              " | target | service/floor | floor/ceiling | service p50/p99 ms"
              " | ceiling p50/p99 ms |")  # fmt: skip
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for workload in frameworks:
        service, floor, ceiling = (results[name, workload.key] for name in APPS)
        print(
            f"| {workload.name} | {service.rps:.0f} | {floor.rps:.0f} | {ceiling.rps:.0f}"
            f" | {number(ratio(samples, 'service', 'ceiling', workload))} | {workload.target}"
            f" | {number(ratio(samples, 'service', 'floor', workload))}"
            f" | {number(ratio(samples, 'floor', 'ceiling', workload))}"
            f" | {number(service.p50)} / {number(service.p99)}"
            f" | {number(ceiling.p50)} / {number(ceiling.p99)} |"
        )
    if bearers := [w for w in workloads if w.apps == TOKEN_APPS]:
        print("\nThe service in AUTH token, each request with a user's bearer token, against"
              " AUTH none:\n")  # fmt: skip
        print("| workload | AUTH none req/s | AUTH token req/s | token/none | target"
              " | none p50/p99 ms | token p50/p99 ms |")  # fmt: skip
        print("|---|--:|--:|--:|--:|--:|--:|")
    for workload in bearers:
        none, token = (results[name, workload.key] for name in TOKEN_APPS)
        print(
            f"| {workload.name} | {none.rps:.0f} | {token.rps:.0f}"
            f" | {number(ratio(samples, 'token', 'service', workload))} | {workload.target}"
            f" | {number(none.p50)} / {number(none.p99)}"
            f" | {number(token.p50)} / {number(token.p99)} |"
        )
    for workload in workloads:
        for name in workload.apps:
            result = results[name, workload.key]
            where = f"{name}, {workload.name} ({workload.key}):"
            if result.errors:
                failed = True
                notes.append(f"{where} {result.errors} failed (non-2xx or socket errors)")
            if math.isnan(result.p50):
                notes.append(f"{where} no request completed in {duration} s")
    for note in notes:
        print(f"\nWARNING {note}")
    return failed


def ratio(samples, name, reference, workload):
    """Return the median over rounds of one app's req/s over another's in the same round."""
    pairs = zip(samples[name, workload.key], samples[reference, workload.key], strict=True)
    return median([mine.rps / theirs.rps if theirs.rps else math.nan for mine, theirs in pairs])


def status_kb(pid, field):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M)[1])


def timed_get(url, path):
    """GET `path`; return seconds to the first body byte, seconds in all, and bytes."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        first = response.read(1)
        first_byte = time.perf_counter() - start
        size = len(first) + len(response.read())
        return first_byte, time.perf_counter() - start, size
    finally:
        conn.close()


def memory(tmp, apps, count):
    """Measure one worker's memory growth and timing while it serves the whole list."""
    source = tmp / "memory-seed.sqlite"
    seed(source, count, apps["service"])
    print(f"\nGET /api/v1/todos over {count:,} todos; {SERVER} with 1 worker\n")
    print("| app | body MB | RSS before MB | RSS after MB | RSS delta MB | peak RSS delta MB"
          " | first byte s | total s |")  # fmt: skip
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, app in apps.items():
        db = tmp / f"memory-{name}.sqlite"
        shutil.copyfile(source, db)
        with server(app, db, 1, tmp / f"memory-{name}.log") as (proc, url):
            (worker,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            urllib.request.urlopen(f"{url}/api/v1/todos?limit=1", timeout=60).read()
            before = status_kb(worker, "VmRSS"), status_kb(worker, "VmHWM")
            first_byte, total, size = timed_get(url, "/api/v1/todos")
            after = status_kb(worker, "VmRSS"), status_kb(worker, "VmHWM")
        print(
            f"| {name} | {size / 1e6:.1f} | {before[0] / 1024:.1f} | {after[0] / 1024:.1f}"
            f" | {(after[0] - before[0]) / 1024:.1f} | {(after[1] - before[1]) / 1024:.1f}"
            f" | {first_byte:.3f} | {total:.3f} |"
        )


def choose(keys, service):
    """Return the workloads named by --workloads, in the harness's order (default: all).

    AUTH none against token compares the service with itself, so those workloads need it.
    """
    known = [w.key for w in WORKLOADS]
    if unknown := [key for key in keys or () if key not in known]:
        sys.exit(f"Unknown workload {', '.join(unknown)}: choose from {', '.join(known)}")
    chosen = [w for w in WORKLOADS if keys is None or w.key in keys]
    if service != SERVICE:
        if keys is not None and any(w.apps == TOKEN_APPS for w in chosen):
            sys.exit(f"Token workloads measure the service in AUTH token: drop --service {service}")
        chosen = [w for w in chosen if w.apps != TOKEN_APPS]
    if not chosen:
        sys.exit("No workload to run.")
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, to prove it works")
    parser.add_argument("--rounds", type=int, help="rounds per app (default 5; quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per workload (default 5; quick: 2)")
    parser.add_argument(
        "--memory", action="store_true",
        help=f"measure memory for the whole list of {MEMORY_TODOS:,} instead (quick: {TODOS:,})",
    )  # fmt: skip
    parser.add_argument(
        "--service", default=SERVICE,
        help=f"WSGI app to measure (default {SERVICE}; {CEILING} checks the harness alone)",
    )  # fmt: skip
    parser.add_argument(
        "--workloads", type=lambda text: text.split(","),
        help=f"only these, comma-separated: {','.join(w.key for w in WORKLOADS)} (default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    workloads = choose(args.workloads, args.service)
    rounds = args.rounds or (1 if args.quick else 5)
    duration = args.duration or (2 if args.quick else 5)
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `apt-get install -y {package}`")
    if not TODO.exists():
        sys.exit(f"No `todo` beside {sys.executable}: run this with the project's venv Python.")
    # Turn a plain kill into an exception, so that the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    # The token app is always the service itself: AUTH token is the service's own.
    apps = {"service": args.service, "floor": FLOOR, "ceiling": CEILING, "token": SERVICE}
    with tempfile.TemporaryDirectory(prefix="todo-bench-") as tmp:
        try:
            if args.memory:
                measured = {name: apps[name] for name in ("service", "ceiling")}
                memory(Path(tmp), measured, TODOS if args.quick else MEMORY_TODOS)
                return 0
            samples = throughput(Path(tmp), apps, workloads, rounds, duration)
        except (RuntimeError, subprocess.SubprocessError) as error:
            sys.exit(f"Benchmark failed: {error}")
        return 1 if report(samples, workloads, rounds, duration) else 0


if __name__ == "__main__":
    sys.exit(main())
