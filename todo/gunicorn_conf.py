"""Settings for gunicorn, the alternative to `todo serve` (todo/serve.py, the production server):
`gunicorn -c python:todo.gunicorn_conf "todo:create_app()"`. Run it behind a buffering proxy
only (docs/deployment.md says why).

Every setting can be changed through the environment; gunicorn's own command-line options and
`GUNICORN_CMD_ARGS` still win over this file.
"""

import gc
import os

from todo import serve
from todo.config import DEFAULTS


def _cpu_count() -> int:
    # The CPUs this process may run on, which a container or `taskset` can make fewer than
    # the machine has.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# Loopback by default: the service is meant to sit behind a reverse proxy on the same host
# (see "Slow clients" in docs/deployment.md). HOST=0.0.0.0 or GUNICORN_BIND exposes it directly.
bind = os.environ.get("GUNICORN_BIND") or (
    f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
)

# gunicorn's rule of thumb, 2 x CPUs + 1: requests mostly wait on the database, so more
# processes than CPUs keep the CPUs busy. Each worker holds up to `threads` database
# connections at once: keep workers x threads under a database server's connection limit.
workers = _int("WEB_CONCURRENCY", _int("GUNICORN_WORKERS", 2 * _cpu_count() + 1))
# Threads let a worker serve several requests while others wait on the database, and keep
# a worker's heartbeat going while a slow client holds one of them; one thread per pooled
# connection means no request waits for a connection.
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", _int("TODO_DATABASE_POOL_SIZE", DEFAULTS["DATABASE_POOL_SIZE"]))

# A worker whose main loop is silent this long (hung, not merely busy) is killed and replaced.
timeout = _int("GUNICORN_TIMEOUT", 30)
# On SIGTERM gunicorn stops accepting and lets the requests in flight finish for up to this
# long before it kills the workers. Whatever stops the service must wait longer before its own
# SIGKILL: Kubernetes waits 30 s and systemd 90 s, but `docker stop` only 10 s unless given
# --time (or stop_grace_period in Compose).
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Idle kept-alive connections wait in the worker's poll loop, not in a thread; a proxy in
# front should close its idle upstream connections sooner than this.
keepalive = _int("GUNICORN_KEEPALIVE", 5)

# Building the app in each worker, not once before forking, keeps every worker's database
# connections its own; the schema bootstrap is safe to run from all of them at once.
preload_app = False

# An empty GUNICORN_ACCESSLOG turns the access log off.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
errorlog = os.environ.get("GUNICORN_ERRORLOG", "-")
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# The common log format, plus the request's duration in milliseconds and the worker's pid.
# Without gunicorn's %(u)s: the username of HTTP Basic credentials, which is sometimes a
# password typed into the wrong field, stays out of the log.
access_log_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms %(p)s'

# gunicorn's control socket (for `gunicornc`) is off unless given a path of its own: its
# default path is one per user, which two services on one host would fight over.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# The workers' heartbeat files are touched every second; memory keeps that off a slow disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


def post_worker_init(worker) -> None:
    """Keep the objects of the loaded app out of the garbage collector's way."""
    # They live as long as the worker, yet every full collection would walk them all again:
    # frozen, they no longer stall requests (in the benchmark, GET one todo's p99 went from
    # 86 ms to 18 ms and its throughput up by a quarter).
    gc.freeze()


def on_starting(server) -> None:
    """Refuse, before listening, what `todo serve` refuses (todo/serve.py, `check`)."""
    # App settings (TODO_*) that every worker would refuse, and one open list (AUTH none, by
    # default) on an address beyond loopback. Here, not at import: the bind is final only once
    # gunicorn's command line and GUNICORN_CMD_ARGS have been read. A RuntimeError stops
    # gunicorn with its message alone.
    auth = os.environ.get("TODO_AUTH", "").strip()
    try:
        serve.check_app_settings()
        for address in server.cfg.address:
            # A Unix socket (a path) reaches local clients only; a socket handed over by
            # file descriptor could be bound anywhere.
            if not isinstance(address, str):
                serve.check_exposure(_host(address), auth)
    except serve.SettingsError as error:
        raise RuntimeError(error) from None


def _host(address: tuple[str, int] | int) -> str:
    return address[0] if isinstance(address, tuple) else f"fd://{address}"
