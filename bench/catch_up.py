"""Benchmark sync's catch-up call against a page of todos, among 100,000 (issue 15).

    .venv/bin/python bench/catch_up.py [--quick] [--database sqlite|postgresql|mariadb]
        [--rounds N] [--duration S]

One server of the service on 100,000 seeded todos. A client syncs them all, then 100 todos
are updated; `changes` asks for what changed since that first sync (exactly those 100) and
`page` for a page of 100 todos, in turns, with nothing written meanwhile. See bench/README.md.
"""

import argparse
import json
import random
import signal
import sys
import tempfile
import urllib.request
from pathlib import Path

from databases import KINDS, server_for
from run import (
    CONNECTIONS,
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
    summary,
)

TODOS = 100_000
CHANGED = 100
# The page a list client would fetch: 100 todos from the middle of the list.
PAGE = "/api/v1/todos?limit=100&after=50000"
# Issue 15: the catch-up answers as fast as a page of 100 todos.
TARGET = Target(1.0)
# The largest page of a first sync: fewer calls to reach its end.
SNAPSHOT_LIMIT = 1000


def call(url, method="GET", body=None):
    """Send one request; return the JSON answer (any status but 2xx raises)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def first_sync(url):
    """Take every todo as a new client does, page after page; return the cursor at the end."""
    answer = call(f"{url}/api/v1/changes?limit={SNAPSHOT_LIMIT}")
    while answer["more"]:
        answer = call(f"{url}/api/v1/changes?limit={SNAPSHOT_LIMIT}&since={answer['cursor']}")
    return answer["cursor"]


def change_some(url):
    """Update CHANGED todos spread over the list, through the API; return their ids."""
    ids = random.Random(15).sample(range(1, TODOS + 1), CHANGED)
    for todo_id in ids:
        call(f"{url}/api/v1/todos/{todo_id}", "PUT", {"title": "Changed", "completed": True})
    return ids


def workloads(url):
    """Return the pair, after checking that the catch-up answers exactly the changes made."""
    cursor = first_sync(url)
    changed = change_some(url)
    path = f"/api/v1/changes?since={cursor}&limit={CHANGED}"
    answer = call(url + path)
    got = sorted(change["todo"]["id"] for change in answer["changes"] if change["op"] == "upsert")
    if got != sorted(changed) or len(answer["changes"]) != CHANGED or answer["more"]:
        raise RuntimeError(f"The catch-up did not answer the {CHANGED} changes made: {answer}")
    call(url + PAGE)
    return (
        Workload("changes", f"catch-up: {CHANGED} changes among {TODOS:,}", path, None, False),
        Workload("page", f"page: GET ?limit=100&after=50000 of {TODOS:,}", PAGE, None, False),
    )


def measure(database, tmp, rounds, duration):
    """Run the pair in turns, round after round, on one server; return the samples by key."""
    seed(database, TODOS)
    database_url = database.copy("seed", "sync")
    with server(SERVICE, database_url, 2, tmp / "service.log") as (_, url):
        pair = workloads(url)
        samples = {workload.key: [] for workload in pair}
        for index in range(rounds):
            for workload in pair if index % 2 == 0 else pair[::-1]:
                sample = load(url, workload, duration)
                samples[workload.key].append(sample)
                print(f"round {index + 1} {workload.key}: {sample}", file=sys.stderr)
    return pair, samples


def report(pair, samples, rounds, duration, version):
    """Print the pair's table; return whether any request failed."""
    changes, page = (samples[workload.key] for workload in pair)
    print(
        f"\n{version}: {rounds} round(s) × {duration} s per workload; wrk -t2 -c{CONNECTIONS}"
        " on core 1; the service under todo serve (granian, production settings, access log"
        " off), 2 workers on core 0; req/s and latencies are"
        " medians over rounds, ratios the medians of each round's ratios\n"
    )
    ratios = round_ratios(changes, page)
    print(f"| workload | req/s | p50/p99 ms | changes/page ≥ {TARGET.value:g} | rounds' range |")
    print("|---|--:|--:|--:|--:|")
    cells = (f"{TARGET.mark(median(ratios))} | {ratio_range(ratios)}", " | ")
    for workload, cell in zip(pair, cells, strict=True):
        result = summary(samples[workload.key])
        print(
            f"| {workload.name} | {number(result.rps)}"
            f" | {number(result.p50)} / {number(result.p99)} | {cell} |"
        )
    failed = sum(sample.errors for sample in changes + page)
    if failed:
        print(f"\nWARNING {failed} requests failed (non-2xx or socket errors)")
    return bool(failed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, to prove it works")
    parser.add_argument("--database", choices=KINDS, default="sqlite")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per workload (default 5; quick: 2)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    duration = args.duration or (2 if args.quick else 5)
    # Turn a plain kill into an exception, so that the server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    with tempfile.TemporaryDirectory(prefix="todo-bench-") as tmp:
        database = server_for(args.database, Path(tmp), POSTGRES_URL, MYSQL_URL)
        version = database.version()
        try:
            pair, samples = measure(database, Path(tmp), rounds, duration)
        finally:
            database.drop_all()
    return 1 if report(pair, samples, rounds, duration, version) else 0


if __name__ == "__main__":
    sys.exit(main())
