"""Benchmark the service as its data grows: 10,000, 100,000 and 1,000,000 todos (issue 13).

    .venv/bin/python bench/growth.py [--quick] [--database sqlite|postgresql]
        [--sizes 10000,100000,1000000] [--rounds N] [--duration S] [--plot PATH]
        [--source DIR]

One seeded database per size, each served by the service at once; GET one, the filter
`?completed=false&window=7` (always MATCHING todos, whatever the size), POST and PUT take
turns across the sizes, round after round; then one worker streams each whole list while its
memory is read. Prints markdown tables, draws the curve (matplotlib). See bench/README.md.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import run
from databases import server_for
from run import (
    CONNECTIONS,
    DB_TIME,
    MYSQL_URL,
    POSTGRES_URL,
    SERVICE,
    Target,
    Workload,
    load,
    median,
    number,
    ratio_range,
    round_ratios,
    seed,
    server,
    status_kb,
    summary,
    timed_get,
)

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
# The filter's answer has this many todos at every size, so that only the table grows.
MATCHING = 100
WINDOW_DAYS = 7
WINDOW = f"/api/v1/todos?completed=false&window={WINDOW_DAYS}"
# The matching todos' deadlines: inside the window for days, however long the run lasts.
MATCHING_DEADLINE = timedelta(days=3)
# No other open todo is due sooner than the window's end plus this, for the same reason.
MARGIN = timedelta(days=1)
WORKERS = 2
WORKLOADS = [
    Workload("get_one", "GET one", "/api/v1/todos/1", "get_one.lua", True),
    Workload("window", f"GET ?completed=false&window=7 ({MATCHING} match)", WINDOW, None, False),
    Workload("post", "POST", "/api/v1/todos", "post.lua", True, writes=True),
    Workload("put", "PUT one", "/api/v1/todos", "put.lua", True, writes=True),
]  # fmt: skip
# Issue 13: at the largest size each workload keeps 90 % of its throughput at the smallest,
# and a worker streaming the whole list grows by less than 30 MB.
THROUGHPUT_TARGET = Target(0.9)
MEMORY_LIMIT_MB = 30
DATABASES = ("sqlite", "postgresql")


def database_name(size):
    return f"growth_{size}"


def matching_ids(size):
    """Return the ids of the todos the filter finds: MATCHING of them, spread over the table."""
    return [1 + index * size // MATCHING for index in range(MATCHING)]


def narrow_window(database, size):
    """Make the filter match exactly MATCHING todos, and the table hold exactly `size` again.

    run.seed's deadlines spread 30 days either side of now, so about a quarter of its todos
    are open and due within the window (overdue ones included): all of those are marked
    completed, then MATCHING todos spread over the ids are reopened with a deadline inside
    it. Also undoes what a round's writes did to that: the todos POST added are deleted, and
    matching todos that PUT completed are reopened.
    """
    name = database_name(size)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    horizon = (now + timedelta(days=WINDOW_DAYS) + MARGIN).strftime(DB_TIME)
    deadline = (now + MATCHING_DEADLINE).strftime(DB_TIME)
    # Server.insert runs any statement once per row given: here, deletes and updates.
    database.insert(name, "DELETE FROM todos WHERE id > ?", [(size,)])
    database.insert(
        name, "UPDATE todos SET completed = ? WHERE completed = ? AND deadline_at <= ?",
        [(True, False, horizon)],
    )  # fmt: skip
    database.insert(
        name, "UPDATE todos SET completed = ?, deadline_at = ? WHERE id = ?",
        [(False, deadline, todo_id) for todo_id in matching_ids(size)],
    )  # fmt: skip


def check_window(url):
    """Warm the paths measured, and check that the filter finds exactly MATCHING todos."""
    urllib.request.urlopen(f"{url}/api/v1/todos/1", timeout=60).read()
    with urllib.request.urlopen(url + WINDOW, timeout=60) as response:
        found = len(json.load(response))
    if found != MATCHING:
        raise RuntimeError(f"{url}{WINDOW} found {found} todos, not {MATCHING}")


def throughput(database, sizes, rounds, duration, tmp, source):
    """Run each workload on every size in turn, round after round; return the samples.

    A server per size, all up at once, each sample of one size taken seconds from one of
    every other, as run.py does with apps: the machine's drift shifts them all alike.
    """
    samples = {(size, w.key): [] for size in sizes for w in WORKLOADS}
    with contextlib.ExitStack() as servers:
        urls = {}
        for size in sizes:
            log = tmp / f"service-{size}.log"
            database_url = database.url(database_name(size))
            _, urls[size] = servers.enter_context(
                server(SERVICE, database_url, WORKERS, log, source=source)
            )
            check_window(urls[size])
        for workload in WORKLOADS:
            for index in range(rounds):
                for size in sizes if index % 2 == 0 else sizes[::-1]:
                    sample = load(urls[size], workload, duration, todos=size)
                    samples[size, workload.key].append(sample)
                    print(f"round {index + 1} {size:,} {workload.key}: {sample}", file=sys.stderr)
                    if workload.writes:
                        narrow_window(database, size)
        for size in sizes:
            # The writes undone, the filter still finds what it found before them.
            check_window(urls[size])
    return samples


def memory(database, sizes, tmp, source):
    """Measure one worker's memory while it streams each size's whole list; return rows."""
    rows = {}
    for size in sizes:
        database_url = database.url(database_name(size))
        log = tmp / f"memory-{size}.log"
        with server(SERVICE, database_url, 1, log, source=source) as (proc, url):
            (worker,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            urllib.request.urlopen(f"{url}/api/v1/todos?limit=1", timeout=60).read()
            before = status_kb(worker, "VmRSS")
            _, total, body = timed_get(url, "/api/v1/todos")
            after, peak = status_kb(worker, "VmRSS"), status_kb(worker, "VmHWM")
        rows[size] = (body / 1e6, before / 1024, after / 1024, (peak - before) / 1024, total)
        print(f"memory {size:,}: {rows[size]}", file=sys.stderr)
    return rows


def ratios_to_smallest(samples, sizes):
    """Return each (size, workload)'s median over rounds of its req/s over the smallest size's."""
    smallest = sizes[0]
    return {
        (size, w.key): median(round_ratios(samples[size, w.key], samples[smallest, w.key]))
        for size in sizes
        for w in WORKLOADS
    }


def report(samples, ratios, footprints, sizes, rounds, duration, version):
    """Print the results as markdown tables; return whether any request failed."""
    smallest = sizes[0]
    print(
        f"\n{version}, {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores:"
        f" {rounds} round(s) × {duration} s per workload and size; wrk -t2 -c{CONNECTIONS}"
        f" on core 1; todo serve (granian), {WORKERS} workers on core 0, one server per size;"
        " req/s are medians over rounds, ratios (to the smallest size) the medians of each"
        " round's ratios"
    )
    print(
        f"req/s, and in brackets their ratio to {smallest:,} todos"
        f" (✓ at ≥ {THROUGHPUT_TARGET.value:g}):\n"
    )
    print("| todos | " + " | ".join(w.name for w in WORKLOADS) + " |")
    print("|--:|" + "--:|" * len(WORKLOADS))
    for size in sizes:
        cells = []
        for w in WORKLOADS:
            rps = number(summary(samples[size, w.key]).rps)
            ratio = ratios[size, w.key]
            cells.append(rps if size == smallest else f"{rps} ({THROUGHPUT_TARGET.mark(ratio)})")
        print(f"| {size:,} | " + " | ".join(cells) + " |")
    for size in sizes[1:]:
        ranges = (
            f"{w.key} {ratio_range(round_ratios(samples[size, w.key], samples[smallest, w.key]))}"
            for w in WORKLOADS
        )
        print(f"\nRounds' ranges of the ratios at {size:,}: {', '.join(ranges)}")
    latencies = (
        f"{w.key} {number(result.p50)}/{number(result.p99)}"
        for w in WORKLOADS
        for result in [summary(samples[sizes[-1], w.key])]
    )
    print(f"p50/p99 ms at {sizes[-1]:,}: {', '.join(latencies)}")
    print(
        "\nThe whole list (GET /api/v1/todos), streamed by one worker; peak growth is the"
        " worker's VmHWM after the response less its VmRSS before it\n"
    )
    print(
        "| todos | body MB | RSS before MB | RSS after MB"
        f" | peak growth MB (< {MEMORY_LIMIT_MB}) | seconds |"
    )
    print("|--:|--:|--:|--:|--:|--:|")
    for size, (body, before, after, growth, total) in footprints.items():
        met = "✓" if growth < MEMORY_LIMIT_MB else "✗"
        print(
            f"| {size:,} | {body:.1f} | {before:.1f} | {after:.1f} | {growth:.1f} {met}"
            f" | {number(total)} |"
        )
    failed = sum(sample.errors for runs in samples.values() for sample in runs)
    if failed:
        print(f"\nWARNING {failed} requests failed (non-2xx or socket errors)")
    return bool(failed)


def plot(path, ratios, sizes, version):
    """Draw each workload's throughput relative to the smallest size, sizes on a log scale."""
    # Imported here: only this step needs it, and without a display.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FixedLocator, FuncFormatter

    figure, axes = pyplot.subplots(figsize=(6.4, 3.6), dpi=100)
    for w in WORKLOADS:
        axes.plot(sizes, [ratios[size, w.key] for size in sizes], marker="o", label=w.name)
    axes.axhline(THROUGHPUT_TARGET.value, color="grey", linestyle="--", linewidth=1)
    axes.text(sizes[0], THROUGHPUT_TARGET.value, " target", color="grey", va="bottom")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(sizes))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda size, _: f"{size:,.0f}"))
    axes.xaxis.set_minor_locator(FixedLocator([]))
    axes.set_xlabel("todos in the table")
    axes.set_ylabel(f"req/s relative to {sizes[0]:,}")
    axes.set_ylim(0, max(1.2, *(ratio * 1.1 for ratio in ratios.values())))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="lower left")
    # "PostgreSQL 15.20 (Debian 15.20-0+deb12u1)": the packager's part does not fit.
    engine = version.split(" (")[0]
    title = f"{engine}: as the table grows ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores)"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    parser.add_argument(
        "--sizes", type=lambda text: tuple(sorted(int(size) for size in text.split(","))),
        help=f"todos per database, comma-separated (default {','.join(map(str, SIZES))})",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per workload (default 5; quick: 2)")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"sizes {','.join(map(str, QUICK_SIZES))}, one round of 2 s: proves it works",
    )  # fmt: skip
    parser.add_argument("--plot", type=Path, help="the PNG (default docs/growth-DATABASE.png)")
    parser.add_argument(
        "--source", type=Path,
        help="the checkout whose `todo` the service runs (default: this one), e.g. a"
        " `git archive` of a commit, so that edits made meanwhile do not reach a long run",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (2 if args.quick else 5)
    path = args.plot or run.ROOT / "docs" / f"growth-{args.database}.png"
    source = args.source.resolve() if args.source else None
    if len(sizes) < 2 or sizes[0] < MATCHING:
        sys.exit(f"Give at least two sizes of {MATCHING} todos or more.")
    # Turn a plain kill into an exception, so that the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    with tempfile.TemporaryDirectory(prefix="todo-growth-") as tmp:
        database = server_for(args.database, Path(tmp), POSTGRES_URL, MYSQL_URL)
        version = database.version()
        try:
            for size in sizes:
                seed(database, size, database_name(size), source)
                narrow_window(database, size)
                database.settle(database_name(size))
                print(f"seeded {size:,}", file=sys.stderr)
            samples = throughput(database, sizes, rounds, duration, Path(tmp), source)
            footprints = memory(database, sizes, Path(tmp), source)
        finally:
            database.drop_all()
    ratios = ratios_to_smallest(samples, sizes)
    failed = report(samples, ratios, footprints, sizes, rounds, duration, version)
    plot(path, ratios, sizes, version)
    print(f"\nPlot: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
