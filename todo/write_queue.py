"""The service's writes to a SQLite file wait for each other in a queue, across its workers.

SQLite lets one writer in at a time, and one that finds its lock taken sleeps in SQLite's busy
handler, 1, 2, 5, 10 ms and longer between tries, however soon the lock is free again: once
no request waited for a checkpoint any more (todo.checkpoints), those sleeps made the writes'
slowest percent (bench/README.md). So each of the service's writes first takes an exclusive
flock(2) on a file beside the database, `<database>-writers`: a waiter sleeps in the kernel,
which wakes it the moment the holder lets go, and a process that dies lets go with it.

The queue never waits on a writer outside it (the CLI, a script through the ORM): a write
that holds the queue tries SQLite's lock without waiting, and if it is taken, leaves the
queue and waits in SQLite's busy handler as every write did before, so
`TODO_SQLITE_BUSY_TIMEOUT` still bounds each wait. A thread that holds the queue and begins
another write on a second connection does not queue behind itself.
"""

import fcntl
import os
import sqlite3
import threading
from typing import NamedTuple

from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection

_QUEUE = "todo.write_queue"
# The queue's file through which this thread holds the queue, if it does.
_holder = threading.local()


class Place(NamedTuple):
    """A connection's own open file of the queue (a flock belongs to one open file, so two
    connections of one process wait for each other too), and the busy timeout it restores."""

    fd: int
    busy_timeout_ms: int


def attach(engine: Engine, database: str) -> None:
    """Give each new connection of the engine of the SQLite file `database` its own open
    file of the queue."""
    path = f"{database}-writers"

    def open_place(dbapi_connection, connection_record) -> None:
        try:
            # The mode SQLite gives its own -wal and -shm files, less the umask.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return  # a folder that takes no new file: the writers wait in SQLite alone
        (timeout,) = dbapi_connection.execute("PRAGMA busy_timeout").fetchone()
        connection_record.info[_QUEUE] = Place(fd, timeout)

    def close_place(dbapi_connection, connection_record) -> None:
        place = connection_record.info.pop(_QUEUE, None)
        if place is not None:
            os.close(place.fd)

    event.listen(engine, "connect", open_place)
    event.listen(engine, "close", close_place)


def join(pooled: PoolProxiedConnection) -> Place | None:
    """Wait for the database's queue and hold it: SQLite's lock is then tried without waiting.

    None, and nothing held, where the database has no queue (in memory, or a folder that
    takes no new file), or when this thread holds the queue already.
    """
    place = pooled.info.get(_QUEUE)
    if place is None or getattr(_holder, "fd", None) is not None:
        return None
    fcntl.flock(place.fd, fcntl.LOCK_EX)
    _holder.fd = place.fd
    try:
        pooled.driver_connection.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]
    except BaseException:
        fcntl.flock(place.fd, fcntl.LOCK_UN)
        _holder.fd = None
        raise
    return place


def leave(pooled: PoolProxiedConnection, place: Place) -> None:
    """Let the next writer in; the connection waits for SQLite's lock again as configured."""
    driver = pooled.driver_connection  # None once invalidated, and closed
    try:
        if driver is not None:
            driver.execute(f"PRAGMA busy_timeout = {place.busy_timeout_ms}")
    finally:
        fcntl.flock(place.fd, fcntl.LOCK_UN)
        _holder.fd = None


def is_busy(error: Exception) -> bool:
    """Whether SQLite refused a statement because another connection holds its lock, or is
    recovering the WAL, or holds a snapshot too old: every SQLITE_BUSY, whose extended codes
    (SQLITE_BUSY_RECOVERY, ...) keep it in their low byte."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
