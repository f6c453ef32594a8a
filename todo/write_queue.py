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

Setting SQLite's busy timeout takes a statement (`PRAGMA busy_timeout`), which cost a write 7 %
of its time when it was set to 0 on joining the queue and back on leaving (bench/README.md).
So a connection that joined the queue once stays at 0 until it goes back to SQLAlchemy's pool,
which gets it back waiting as configured; under `todo serve` the driver keeps its connections
between requests (todo.spares), and a write's connection sets nothing. A statement that such a
connection's SQLite refuses at once, outside a transaction, did nothing: the driver runs it
again waiting as configured (todo.driver), out of the queue. (In WAL mode a read meets the
lock only while another connection recovers the WAL.)
"""

import fcntl
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection

_QUEUE = "todo.write_queue"
# The queue's file through which this thread holds the queue, if it does.
_holder = threading.local()


@dataclass(slots=True)
class Place:
    """A connection's own open file of the queue (a flock belongs to one open file, so two
    connections of one process wait for each other too), its configured busy timeout, and
    whether it waits that long now (False: SQLite refuses it at once, since it joined the
    queue)."""

    fd: int
    busy_timeout_ms: int
    waits: bool = True


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

    def wait_in_the_pool(dbapi_connection, connection_record) -> None:
        _wait_as_configured(connection_record.info, dbapi_connection)

    event.listen(engine, "connect", open_place)
    event.listen(engine, "close", close_place)
    event.listen(engine, "checkin", wait_in_the_pool)


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
        _set_waits(pooled.driver_connection, place, False)
    except BaseException:
        leave(place)
        raise
    return place


def leave(place: Place) -> None:
    """Let the next writer in. The connection stays refused at once (`waits_as_configured`)."""
    fcntl.flock(place.fd, fcntl.LOCK_UN)
    _holder.fd = None


def refused_at_once(pooled: PoolProxiedConnection, error: Exception) -> bool:
    """Whether SQLite refused a statement on this connection for its lock without waiting,
    outside a transaction: a statement that did nothing, to run again `waits_as_configured`."""
    place = pooled.info.get(_QUEUE)
    driver = pooled.driver_connection
    return (
        place is not None
        and not place.waits
        and is_busy(error)
        and driver is not None
        and not driver.in_transaction
    )


def waits_as_configured(pooled: PoolProxiedConnection) -> None:
    """Have the connection wait for SQLite's lock as configured, until it joins the queue."""
    _wait_as_configured(pooled.info, pooled.driver_connection)


def _wait_as_configured(info: dict, dbapi_connection: Any) -> None:
    place = info.get(_QUEUE)
    if place is not None and dbapi_connection is not None:  # None once invalidated
        _set_waits(dbapi_connection, place, True)


def _set_waits(dbapi_connection: Any, place: Place, waits: bool) -> None:
    """Have SQLite wait for its lock as configured on this connection, or refuse at once."""
    if place.waits != waits:
        dbapi_connection.execute(f"PRAGMA busy_timeout = {place.busy_timeout_ms if waits else 0}")
        place.waits = waits


def is_busy(error: Exception) -> bool:
    """Whether SQLite refused a statement because another connection holds its lock, or is
    recovering the WAL, or holds a snapshot too old: every SQLITE_BUSY, whose extended codes
    (SQLITE_BUSY_RECOVERY, ...) keep it in their low byte."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
