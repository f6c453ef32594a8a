"""The production server: granian running the app in worker processes. `todo serve` runs it.

Every setting comes from the environment (`settings`), is checked before anything starts
(`check`), and is then handed to granian (`run`). docs/deployment.md says why granian and
what each setting is for.
"""

import gc
import ipaddress
import os
import signal
import sys
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, fields

from flask import Flask

from todo import checkpoints, create_app, spares
from todo.config import SettingsError, configure
from todo.models import db

# The factory each worker calls to build its own app.
WORKER_APP = "todo.serve:worker_app"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# The signals that stop a worker gracefully.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# Names that granian would read as request data: it starts every request's WSGI environ from
# a copy of the process environment, and a request sets only the headers it carries.
_REQUEST_NAMES = ("CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_USER", "AUTH_TYPE")
# Names that always mean this host's loopback interface; any address of 127.0.0.0/8 or ::1 too.
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Settings:
    """What `todo serve` runs: address, processes, threads and limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Worker processes; `settings()` defaults to one per usable CPU, at least 2.
    workers: int = 2
    # Python threads per worker. A request holds one while it is read, handled and written,
    # whatever it waits on, so a client that stalls its body or never reads holds one;
    # idle connections and headers still arriving hold none.
    threads: int = 128
    backlog: int = 1024
    # Connections one worker holds open at once, idle ones included; None: backlog / workers.
    backpressure: int | None = None
    # A connection whose headers have not all arrived, idle kept-alive ones included, is
    # closed after this long; a proxy in front must drop its idle upstream connections sooner.
    header_timeout_ms: int = 5_000
    # On SIGTERM the requests in flight get this long, then their worker is killed.
    graceful_timeout: int = 20
    access_log: bool = True
    log_level: str = "info"
    # TODO_AUTH as given; empty when unset, and the app then serves one open list (AUTH none).
    auth: str = ""


# The variable that sets each setting: granian's own name where granian has one.
VARIABLES = {
    "host": "HOST",
    "port": "PORT",
    "workers": "WEB_CONCURRENCY",
    "threads": "GRANIAN_BLOCKING_THREADS",
    "backlog": "GRANIAN_BACKLOG",
    "backpressure": "GRANIAN_BACKPRESSURE",
    "header_timeout_ms": "GRANIAN_HTTP1_HEADER_READ_TIMEOUT",
    "graceful_timeout": "GRANIAN_WORKERS_KILL_TIMEOUT",
    "access_log": "GRANIAN_LOG_ACCESS_ENABLED",
    "log_level": "GRANIAN_LOG_LEVEL",
    "auth": "TODO_AUTH",
}
# The values each number may take, as granian or the system accepts them.
_RANGES = {
    "port": (1, 65535),
    "workers": (1, 1024),
    "threads": (1, 10_000),
    "backlog": (128, 65535),
    "backpressure": (1, 1_000_000),
    "header_timeout_ms": (1, 60_000),
    "graceful_timeout": (1, 1800),
}
_SWITCHES = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def usable_cpus() -> int:
    """Return how many CPUs this process may run on (a container or taskset can limit them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _read(name: str, text: str, default: object) -> object:
    if isinstance(default, bool):
        if text.lower() not in _SWITCHES:
            raise SettingsError(f"{name} must be true or false, not {text!r}.")
        return _SWITCHES[text.lower()]
    if isinstance(default, str):
        return text.lower() if name == VARIABLES["log_level"] else text
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {text!r}.") from None


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the server's settings from the environment; unset or empty ones keep the defaults."""
    environ = os.environ if environ is None else environ
    # Threads, not processes, wait on the database; a second process keeps the service
    # answering while a dead worker is replaced.
    defaults = Settings(workers=max(2, usable_cpus()))
    values = {}
    for field in fields(Settings):
        name, default = VARIABLES[field.name], getattr(defaults, field.name)
        text = environ.get(name, "").strip()
        values[field.name] = _read(name, text, default) if text else default
    return Settings(**values)  # type: ignore[arg-type]


def check(settings: Settings) -> None:
    """Refuse settings the server must not start with, naming the variable and why.

    The app's own settings (TODO_*) are read here as every worker will read them, once, so that
    a bad one stops the server with one message rather than a traceback from each worker.
    """
    for field, (lowest, highest) in _RANGES.items():
        value = getattr(settings, field)
        if value is not None and not lowest <= value <= highest:
            name = VARIABLES[field]
            raise SettingsError(f"{name} must be from {lowest} to {highest}, not {value}.")
    if settings.log_level not in LOG_LEVELS:
        name = VARIABLES["log_level"]
        raise SettingsError(f"{name} must be one of {', '.join(LOG_LEVELS)}.")
    check_app_settings()
    check_exposure(settings.host, settings.auth)


def check_app_settings() -> None:
    """Refuse the app settings of the environment that `create_app()` would refuse."""
    # The settings alone, on a bare app named as the real one (the same instance folder):
    # no database, no extension.
    configure(Flask("todo", instance_relative_config=True))


def is_loopback(host: str) -> bool:
    """Tell whether an address to listen on is this host's loopback: only local clients reach it."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other name may resolve to an address the network reaches.
        return False


def check_exposure(host: str, auth: str) -> None:
    """Refuse to serve one open list beyond loopback unless TODO_AUTH (`auth`) asked for it.

    With AUTH none everyone who reaches the port reads and deletes every todo: fine for a
    proxy on the same host, not for the network, unless that was meant.
    """
    if auth or is_loopback(host):
        return
    raise SettingsError(
        f"Refusing to listen on {host}, beyond loopback, with TODO_AUTH unset (AUTH none): "
        "anyone who reaches it could read and delete every todo. Set TODO_AUTH=token so that "
        "every client needs a token, or set TODO_AUTH=none explicitly to accept an open list."
    )


def worker_app() -> Flask:
    """Build the app inside a worker process (granian's factory)."""
    _take_stop_signals_on_a_thread_of_their_own()
    app = create_app()
    checkpoints.take_in_background(app)
    with app.app_context():
        spares.keep_for(db.engine)
    # The app's objects live as long as the worker, yet every full collection would walk
    # them again: frozen, they stay out of the collector's way (bench/README.md, history).
    gc.freeze()
    return app


def _take_stop_signals_on_a_thread_of_their_own() -> None:
    # granian stops a worker from a Python signal handler, which only the main thread runs,
    # and the worker's main thread sleeps on a lock that only a signal sent to that thread
    # wakes. Under load the kernel often hands SIGTERM to a thread that is running instead,
    # and the worker went on serving until the graceful timeout killed it (about one stop in
    # 30 with three busy workers). Blocked here, before the worker starts any other thread
    # (they all inherit the mask), the stop signals wait for one thread that runs granian's
    # handler itself.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    threading.Thread(target=_run_stop_handlers, name="stop signals", daemon=True).start()


def _run_stop_handlers() -> None:
    while True:
        signum = signal.sigwait(_STOP_SIGNALS)
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_DFL, signal.default_int_handler):
            # Asked to stop before granian has set its handlers: stop as the default does.
            os._exit(128 + signum)
        if callable(handler):
            handler(signum, None)


def drop_request_lookalikes(environ: MutableMapping[str, str]) -> list[str]:
    """Remove the variables a worker would mistake for request data; return their names."""
    names = [name for name in environ if name.startswith("HTTP_") or name in _REQUEST_NAMES]
    for name in names:
        del environ[name]
    return names


def run(settings: Settings, app: str = WORKER_APP) -> None:
    """Run granian with these settings until it is stopped; `app` names a WSGI app factory."""
    # Imported here, so that reading and checking settings loads no server.
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    dropped = drop_request_lookalikes(os.environ)
    if dropped:
        print(
            f"todo serve: ignoring {', '.join(sorted(dropped))}: every request would carry "
            "them as if the client had sent them.",
            file=sys.stderr,
        )
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=settings.workers,
        blocking_threads=settings.threads,
        backlog=settings.backlog,
        backpressure=settings.backpressure,
        # HTTP/1.1 only: what browsers, proxies and API clients speak to an upstream.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=settings.header_timeout_ms),
        websockets=False,
        # A worker that dies is replaced (one that dies again within seconds stops the server).
        respawn_failed_workers=True,
        workers_kill_timeout=settings.graceful_timeout,
        log_access=settings.access_log,
        log_level=LogLevels(settings.log_level),
    )
    server.serve()
