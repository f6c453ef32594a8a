"""Benchmark the service against FastAPI, Flask's floor and a raw-driver ceiling, under wrk.

    .venv/bin/python bench/run.py [--quick] [--database sqlite|postgresql|mariadb]
        [--rounds N] [--duration S] [--workloads K,...]
    .venv/bin/python bench/run.py --memory [--quick] [--database ...]
    .venv/bin/python bench/run.py --baseline REF [--database ...] [--workloads K,...]

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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from databases import KINDS, Server, server_for

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TODO = Path(sys.executable).parent / "todo"
FLASK = Path(sys.executable).parent / "flask"
# App factories for the production server: the service's own, and the reference apps'.
SERVICE = "todo.serve:worker_app"
CEILING = "bench.frozen:ceiling"
FLOOR = "bench.frozen:floor"
# The FastAPI peer, served as FastAPI's docs recommend for production (what `fastapi run
# --workers N` runs): uvicorn, with uvloop and httptools from its standard extras.
FASTAPI = "bench.fastapi_peer:app"
# The reference apps run under exactly what `todo serve` runs: its settings, its server.
RUN_APP = "import sys; from todo import serve; serve.run(serve.settings(), sys.argv[1])"
SERVER = (
    "todo serve (granian, production settings) for the service, floor and ceiling;"
    " uvicorn for FastAPI; access logs off"
)
TODOS = 10_000
MEMORY_TODOS = 100_000
CONNECTIONS = 8
# The datetimes' text, as the service stores them in SQLite; the servers parse it.
DB_TIME = "%Y-%m-%dT%H:%M:%S"
# Where the database servers are, as an administrator: the harness makes and drops its
# own `bench_` databases there.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
# In CI a database server that does not answer fails the run instead of being skipped.
IN_CI = os.environ.get("CI") == "true"


# The apps measured, in the table's order; each round alternates which goes first.
APPS = ("service", "fastapi", "floor", "ceiling")
# AUTH none against AUTH token: the service as above, and the service in token mode, whose
# every request carries a user's bearer token (issue 12).
TOKEN_APPS = ("service", "token")
# The apps that run in AUTH token, on todos owned by TOKEN_USER, made with the CLI as an
# administrator would; every request they get carries that user's bearer token.
BEARER_APPS = {"token"}
TOKEN_USER = "bench"
# The service against itself at an earlier commit (--baseline), served the same way from a
# git worktree of that commit, on data seeded by that commit's own code.
BASELINE_APPS = ("baseline", "service")


class Workload(NamedTuple):
    key: str  # its name in --workloads
    name: str
    path: str
    script: str | None
    single: bool  # one todo per request, or a list
    apps: tuple[str, ...] = APPS
    # Seconds of load per app and round at the least (not in --quick): the FastAPI peer
    # takes over half a second of CPU for each whole list, so 8 of them at once take
    # seconds, and a short round would see none finish.
    least_seconds: int = 0
    writes: bool = False


# Writes come last so that every read sees exactly the seeded 10,000 todos.
WORKLOADS = [
    Workload("get_one", "GET one of 10,000", "/api/v1/todos/1", "get_one.lua", True),
    Workload("get_one_token", "GET one of 10,000", "/api/v1/todos/1", "get_one.lua", True,
             TOKEN_APPS),
    Workload("limit_100", "GET ?limit=100", "/api/v1/todos?limit=100", None, False),
    Workload("all", "GET all 10,000", "/api/v1/todos", None, False, least_seconds=15),
    Workload("window", "GET ?completed=false&window=7", "/api/v1/todos?completed=false&window=7",
             None, False),
    Workload("post", "POST", "/api/v1/todos", "post.lua", True, writes=True),
    Workload("put", "PUT one of 10,000", "/api/v1/todos", "put.lua", True, writes=True),
    # Only the service has DELETE: it runs against the service's baseline alone.
    Workload("post_delete", "POST, then DELETE it", "/api/v1/todos", "post_delete.lua", True,
             BASELINE_APPS, writes=True),
]  # fmt: skip


class Target(NamedTuple):
    """A ratio a workload's results should reach (at least), or a latency spread (at most)."""

    value: float
    at_most: bool = False

    def met(self, ratio):
        return ratio <= self.value if self.at_most else ratio >= self.value

    def mark(self, ratio):
        """Return the ratio with ✓ or ✗ for the target."""
        if math.isnan(ratio):
            return "–"
        met = self.met(ratio)
        # Three digits where two would round a miss onto the target (0.848 to 0.85).
        text = f"{ratio:.3f}" if not met and number(ratio) == number(self.value) else number(ratio)
        return f"{text} {'✓' if met else '✗'}"


# Issue 13's targets, all ratios within one interleaved run: against what users would pick
# instead, against Flask's own floor, against the raw driver on PostgreSQL (single todos,
# lists), and the service's tail latency on single todos at 8 connections.
FASTAPI_TARGET = Target(4.0)
FLOOR_TARGET = Target(0.9)
CEILING_TARGETS = {"postgresql": {True: Target(0.8), False: Target(1.0)}}
TAIL_TARGET = Target(5.0, at_most=True)


class Comparison(NamedTuple):
    """Two apps that take turns on the same workloads: `measured`'s req/s over `reference`'s."""

    apps: tuple[str, str]  # (reference, measured), as the workloads name them
    names: tuple[str, str]  # how the table calls them
    intro: str
    target: Target
    writes_only: bool = False  # the target is for writes; reads are shown, not judged

    def mark(self, ratio, workload):
        return self.target.mark(ratio) if workload.writes or not self.writes_only else number(ratio)


# Issue 12's: AUTH token may cost at most 15 % of GET one's throughput.
TOKEN = Comparison(
    TOKEN_APPS, ("none", "token"),
    "The service in AUTH token, each request with a user's bearer token, against AUTH none:",
    Target(0.85),
)  # fmt: skip
# Issue 15's: sync may cost writes at most 15 % of their throughput before it.
BASELINE = Comparison(
    BASELINE_APPS, ("baseline", "service"), "The service against itself at {ref}:",
    Target(0.85), writes_only=True,
)  # fmt: skip


class Sample(NamedTuple):
    rps: float
    p50: float
    p99: float
    errors: int


def seed(database: Server, count, name="seed", source=None):
    """Make the database `name` and fill it with `count` todos, the same way every time.

    The schema is the service's, made by its own code: this checkout's, or `source`'s.
    """
    url = database.create(name)
    # The service creates its own schema, so every app reads the table it really uses.
    env = {**os.environ, "DATABASE_URL": url, **importing_from(source)}
    code = "import todo; todo.create_app(); print(todo.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=source or ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    if done.returncode:
        sys.exit(
            f"The service cannot start from {sys.executable}:\n{done.stderr[-2000:]}"
            "Install it (pip install -e .) and run this script with that Python."
        )
    if source is not None and not Path(done.stdout.strip()).is_relative_to(source):
        raise RuntimeError(f"todo came from {done.stdout.strip()}, not from {source}")
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

    database.insert(
        name,
        "INSERT INTO todos (title, description, completed, deadline_at,"
        " created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [row(number) for number in range(1, count + 1)],
    )
    database.settle(name)


def importing_from(source):
    """Return the environment in which Python imports `todo` from the checkout `source`.

    None: the installed package, this checkout. Python puts the working directory before
    PYTHONPATH for `python -c`, so a process given this must also run in `source`.
    """
    if source is None:
        return {}
    paths = (str(source), os.environ.get("PYTHONPATH"))
    return {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}


@contextlib.contextmanager
def worktree(ref, tmp):
    """Check out `ref` in a git worktree of its own; yield its path, and remove it after."""
    path = tmp / "baseline"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run(
        [*git, "add", "--detach", str(path), ref], capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], capture_output=True, timeout=120)


def serves_changes(url):
    """Return whether the server at `url` has sync's GET /api/v1/changes."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/changes?limit=1", timeout=60) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def sign_up(url):
    """Give the todos in database `url` to a new user, as an administrator would; return its token.

    With the CLI: `flask --app todo users create`, `tokens create`, and `todos adopt`, which
    gives the user the seeded todos (they have no owner), as when a service moves from AUTH
    none to token.
    """
    env = {**os.environ, "DATABASE_URL": url, "TODO_AUTH": "token"}

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


def serve_command(app, port, workers):
    """Return the command that serves `app` in production."""
    if app == SERVICE:
        return [str(TODO), "serve"]
    if app == FASTAPI:
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log",
        ]  # fmt: skip
    return [sys.executable, "-c", RUN_APP, app]


@contextlib.contextmanager
def server(app, database_url, workers, log, settings=None, source=None):
    """Run the production server on core 0 for `app` on the database; yield it, its URL.

    `settings` adds to its environment (TODO_AUTH, say); `source` is the checkout whose
    `todo` it imports (None: this one).
    """
    port = free_port()
    # Every Flask and WSGI app runs under the service's production settings, without the
    # access log.
    env = {
        **os.environ, "DATABASE_URL": database_url,
        "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers),
        "GRANIAN_LOG_ACCESS_ENABLED": "false", "GRANIAN_WORKERS_KILL_TIMEOUT": "5",
        **importing_from(source), **(settings or {}),
    }  # fmt: skip
    command = ["taskset", "-c", "0", *serve_command(app, port, workers)]
    with log.open("ab") as out:
        # A session of its own, so that stopping it stops every worker too.
        proc = subprocess.Popen(
            command, env=env, cwd=source or ROOT, stdout=out, stderr=subprocess.STDOUT,
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


def load(url, workload, duration, token=None, todos=TODOS):
    """Run wrk on core 1 against one workload and return what it measured.

    With a token every request carries it as a bearer token (the scripts read BENCH_TOKEN
    from the environment, so that no command line or error message shows it). The scripts
    pick ids among the first `todos`.
    """
    command = [
        "taskset", "-c", "1", "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s",
        "--latency", "--timeout", "30s",
    ]  # fmt: skip
    if workload.script:
        command += ["-s", str(BENCH / workload.script)]
    command += [url + workload.path, "--", str(todos)]
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


def throughput(database, tmp, apps, workloads, rounds, duration, baseline=None):
    """Run each workload on each of its apps in turn, round after round; return the samples.

    All the servers the workloads need are up at once, each on its own copy of the seeded
    data, and a workload's apps take turns, in an order that alternates every round. Each
    sample of one app then has one of every other app taken seconds away, and a machine
    whose speed drifts over minutes (another tenant, heat) shifts them all alike.

    `baseline` is the checkout the app "baseline" runs from, on data seeded by its own code.
    """
    needed = [name for name in apps if any(name in w.apps for w in workloads)]
    seed(database, TODOS)
    if "baseline" in needed:
        seed(database, TODOS, "seed_baseline", baseline)
    samples = {(name, w.key): [] for w in workloads for name in w.apps}
    tokens, logs = {}, {}
    with contextlib.ExitStack() as servers:
        urls = {}
        for name in needed:
            source = baseline if name == "baseline" else None
            database_url = database.copy("seed_baseline" if source else "seed", name)
            settings = None
            if name in BEARER_APPS:
                tokens[name] = sign_up(database_url)
                settings = {"TODO_AUTH": "token"}
            logs[name] = tmp / f"{name}.log"
            _, urls[name] = servers.enter_context(
                server(apps[name], database_url, 2, logs[name], settings, source)
            )
            warm(urls[name], tokens.get(name))
        if baseline is not None:
            # Which code each server runs, as far as the API shows it (sync came in 966dfbf).
            found = {name: serves_changes(url) for name, url in urls.items()}
            print(f"GET /api/v1/changes answers: {found} (baseline from {baseline})",
                  file=sys.stderr)  # fmt: skip
        for workload in workloads:
            for index in range(rounds):
                order = workload.apps if index % 2 == 0 else workload.apps[::-1]
                for name in order:
                    seconds = max(duration, workload.least_seconds)
                    sample = load(urls[name], workload, seconds, tokens.get(name))
                    samples[name, workload.key].append(sample)
                    print(f"round {index + 1} {name} {workload.key}: {sample}", file=sys.stderr)
                    if sample.errors:
                        # What the server said about them, before its log goes with the run.
                        print(f"{name}'s log ends:\n{tail(logs[name])}", file=sys.stderr)
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


def report(samples, workloads, rounds, duration, database, version, baseline_ref=None):
    """Print the medians over rounds as markdown tables; return whether any request failed.

    `baseline_ref` names the commit the app "baseline" runs, if any.
    """
    print(
        f"\n{version}: {rounds} round(s) × {duration} s per workload{longer(workloads, duration)};"
        f" wrk -t2 -c{CONNECTIONS}"
        f" on core 1; {SERVER}; 2 workers each on core 0; req/s and latencies are medians"
        " over rounds, ratios the medians of each round's ratios"
    )
    notes, failed = [], False
    results = {(name, w.key): summary(samples[name, w.key]) for w in workloads for name in w.apps}
    ceiling_targets = CEILING_TARGETS.get(database.kind, {})
    if frameworks := [w for w in workloads if w.apps == APPS]:
        print(
            "\n| workload | service req/s | fastapi req/s | floor req/s | ceiling req/s"
            f" | service/fastapi ≥ {FASTAPI_TARGET.value:g}"
            f" | service/floor ≥ {FLOOR_TARGET.value:g}"
            f" | service/ceiling{' (target)' if ceiling_targets else ''} | floor/ceiling"
            f" | service p50/p99 ms | service p99/p50 ≤ {TAIL_TARGET.value:g} |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for workload in frameworks:
        service, fastapi, floor, ceiling = (results[name, workload.key] for name in APPS)
        against_ceiling = ratio(samples, "service", "ceiling", workload)
        if target := ceiling_targets.get(workload.single):
            against_ceiling_cell = f"{target.mark(against_ceiling)} (≥ {target.value:g})"
        else:
            against_ceiling_cell = number(against_ceiling)
        spread = median(run.p99 / run.p50 for run in samples["service", workload.key])
        print(
            f"| {workload.name} | {number(service.rps)} | {number(fastapi.rps)}"
            f" | {number(floor.rps)} | {number(ceiling.rps)}"
            f" | {FASTAPI_TARGET.mark(ratio(samples, 'service', 'fastapi', workload))}"
            f" | {FLOOR_TARGET.mark(ratio(samples, 'service', 'floor', workload))}"
            f" | {against_ceiling_cell}"
            f" | {number(ratio(samples, 'floor', 'ceiling', workload))}"
            f" | {number(service.p50)} / {number(service.p99)}"
            f" | {TAIL_TARGET.mark(spread) if workload.single else number(spread)} |"
        )
    for comparison in (TOKEN, BASELINE):
        chosen = [w for w in workloads if w.apps == comparison.apps]
        if chosen:
            compare(comparison, chosen, samples, results, baseline_ref)
    for workload in workloads:
        for name in workload.apps:
            result = results[name, workload.key]
            where = f"{name}, {workload.name} ({workload.key}):"
            if result.errors:
                failed = True
                notes.append(f"{where} {result.errors} failed (non-2xx or socket errors)")
            if math.isnan(result.p50):
                seconds = max(duration, workload.least_seconds)
                notes.append(f"{where} no request completed in {seconds} s")
    for note in notes:
        print(f"\nWARNING {note}")
    return failed


def compare(comparison, workloads, samples, results, baseline_ref):
    """Print the table of one comparison's workloads: each app's req/s and latency, the ratio."""
    (reference, measured), (reference_name, measured_name) = comparison.apps, comparison.names
    where = " on writes" if comparison.writes_only else ""
    print(f"\n{comparison.intro.format(ref=baseline_ref)}\n")
    print(
        f"| workload | {reference_name} req/s | {measured_name} req/s"
        f" | {measured_name}/{reference_name} ≥ {comparison.target.value:g}{where}"
        " | rounds' range"
        f" | {reference_name} p50/p99 ms | {measured_name} p50/p99 ms |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for workload in workloads:
        before, after = (results[name, workload.key] for name in comparison.apps)
        ratios = round_ratios(samples[measured, workload.key], samples[reference, workload.key])
        print(
            f"| {workload.name} | {before.rps:.0f} | {after.rps:.0f}"
            f" | {comparison.mark(median(ratios), workload)} | {ratio_range(ratios)}"
            f" | {number(before.p50)} / {number(before.p99)}"
            f" | {number(after.p50)} / {number(after.p99)} |"
        )


def longer(workloads, duration):
    """Name the workloads whose rounds last longer than `duration`, if any."""
    stretched = [w for w in workloads if w.least_seconds > duration]
    return "".join(f" ({w.key}: {w.least_seconds} s)" for w in stretched)


def ratio(samples, name, reference, workload):
    """Return the median over rounds of one app's req/s over another's in the same round."""
    return median(round_ratios(samples[name, workload.key], samples[reference, workload.key]))


def round_ratios(mine, theirs):
    """Return each round's req/s of one sample over the other's (NaN where it had none)."""
    pairs = zip(mine, theirs, strict=True)
    return [one.rps / other.rps if other.rps else math.nan for one, other in pairs]


def ratio_range(ratios):
    """Return the lowest and highest of the rounds' ratios as text: how noisy the run was."""
    measured = [value for value in ratios if not math.isnan(value)]
    return f"{number(min(measured))}–{number(max(measured))}" if len(measured) > 1 else "–"


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


def memory(database, tmp, apps, count):
    """Measure one worker's memory growth and timing while it serves the whole list."""
    seed(database, count)
    print(f"\n{database.version()}: GET /api/v1/todos over {count:,} todos; {SERVER};"
          " 1 worker\n")  # fmt: skip
    print("| app | body MB | RSS before MB | RSS after MB | RSS delta MB | peak RSS delta MB"
          " | first byte s | total s |")  # fmt: skip
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, app in apps.items():
        database_url = database.copy("seed", f"memory_{name}")
        with server(app, database_url, 1, tmp / f"memory-{name}.log") as (proc, url):
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


def choose(keys, service, baseline):
    """Return the workloads named by --workloads, in the harness's order (default: all).

    AUTH none against token compares the service with itself, so those workloads need it.
    With a baseline, every workload compares the service with the baseline instead, in AUTH
    none; those that only the service can serve (DELETE) need one.
    """
    known = [w.key for w in WORKLOADS]
    if unknown := [key for key in keys or () if key not in known]:
        sys.exit(f"Unknown workload {', '.join(unknown)}: choose from {', '.join(known)}")
    chosen = [w for w in WORKLOADS if keys is None or w.key in keys]
    if not baseline:
        if keys is not None and any(w.apps == BASELINE_APPS for w in chosen):
            sys.exit("post_delete measures the service against its baseline: add --baseline REF")
        chosen = [w for w in chosen if w.apps != BASELINE_APPS]
    if service != SERVICE or baseline:
        option = f"--service {service}" if service != SERVICE else f"--baseline {baseline}"
        if keys is not None and any(w.apps == TOKEN_APPS for w in chosen):
            sys.exit(f"Token workloads measure the service in AUTH token: drop {option}")
        chosen = [w for w in chosen if w.apps != TOKEN_APPS]
    if baseline:
        chosen = [w._replace(apps=BASELINE_APPS) for w in chosen]
    if not chosen:
        sys.exit("No workload to run.")
    return chosen


def passes(args):
    """Return the databases to run on, in turn: the one asked for, or the quick mode's.

    The quick mode, with no --database, proves SQLite and then, briefly, PostgreSQL: the
    second pass runs only the single-todo workloads, and is skipped when PostgreSQL does not
    answer, unless in CI.
    """
    if args.database or args.memory or not args.quick:
        return [(args.database or "sqlite", None, True)]
    single = [w.key for w in WORKLOADS if w.single and w.apps == APPS]
    return [("sqlite", None, True), ("postgresql", single, IN_CI)]


def measure(kind, tmp, apps, workloads, args, required, baseline=None):
    """Run the benchmark on one kind of database; return whether any request failed.

    A database server that does not answer stops the run when `required`; otherwise that
    database is skipped with a note. `baseline` is the checkout of --baseline.
    """
    database = server_for(kind, tmp, POSTGRES_URL, MYSQL_URL)
    try:
        version = database.version()
    except Exception as error:  # each driver has its own OperationalError
        message = f"{kind} does not answer ({type(error).__name__}: {error})".strip()
        if required:
            raise RuntimeError(message) from error
        setting = {"postgresql": "BENCH_POSTGRES_URL", "mariadb": "BENCH_MYSQL_URL"}[kind]
        print(f"\nSKIPPED {message}; {setting} says where it is")
        return False
    rounds = args.rounds or (1 if args.quick else 5)
    if args.quick:
        workloads = [w._replace(least_seconds=0) for w in workloads]
    duration = args.duration or (2 if args.quick else 5)
    try:
        if args.memory:
            measured = {name: apps[name] for name in ("service", "ceiling")}
            memory(database, tmp, measured, TODOS if args.quick else MEMORY_TODOS)
            return False
        samples = throughput(database, tmp, apps, workloads, rounds, duration, baseline)
    finally:
        database.drop_all()
    return report(samples, workloads, rounds, duration, database, version, args.baseline)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, to prove it works")
    parser.add_argument(
        "--database", choices=KINDS,
        help="sqlite (default), or postgresql at BENCH_POSTGRES_URL, mariadb at BENCH_MYSQL_URL;"
        " --quick without it: sqlite, then briefly postgresql",
    )  # fmt: skip
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
    parser.add_argument(
        "--baseline", metavar="REF",
        help="measure the service against itself at this git commit (a worktree of it) instead"
        " of against the other apps",
    )  # fmt: skip
    args = parser.parse_args()
    if args.baseline and (args.memory or args.service != SERVICE):
        sys.exit("--baseline measures the service's throughput: drop --memory and --service")
    workloads = choose(args.workloads, args.service, args.baseline)
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `apt-get install -y {package}`")
    if not TODO.exists():
        sys.exit(f"No `todo` beside {sys.executable}: run this with the project's venv Python.")
    # Turn a plain kill into an exception, so that the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    # The token app and the baseline are always the service itself, the baseline as it was.
    apps = {
        "service": args.service, "fastapi": FASTAPI, "floor": FLOOR, "ceiling": CEILING,
        "token": SERVICE, "baseline": SERVICE,
    }  # fmt: skip
    failed = False
    with tempfile.TemporaryDirectory(prefix="todo-bench-") as tmp, contextlib.ExitStack() as stack:
        baseline = None
        if args.baseline:
            try:
                baseline = stack.enter_context(worktree(args.baseline, Path(tmp)))
            except subprocess.CalledProcessError as error:
                sys.exit(f"Cannot check out {args.baseline}: {error.stderr.strip()}")
        for kind, keys, required in passes(args):
            chosen = workloads if keys is None else [w for w in workloads if w.key in keys]
            if not chosen:
                continue
            try:
                failed |= measure(kind, Path(tmp), apps, chosen, args, required, baseline)
            except (RuntimeError, subprocess.SubprocessError) as error:
                sys.exit(f"Benchmark failed on {kind}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
