"""Connections the driver keeps between requests, outside SQLAlchemy's pool, under `todo serve`.

Taking a connection from SQLAlchemy's pool and giving it back cost a GET of one todo 8.5 % of
its instructions in the app (the pool's bookkeeping, its events, the reset on return;
callgrind, bench/README.md). A worker of `todo serve` has its engine keep the connections the
driver (todo.driver) is done with, for the driver's next requests.

Only there: a connection out of the pool keeps its pool, and so its engine, alive (SQLAlchemy
checks a lost one back in only when it is garbage), so an engine that keeps spares lives
until it is disposed of, as a worker's does. The Python interface, the CLI and gunicorn's
workers, which may make engines and drop them, give every connection back to the pool.
"""

import os
import threading
import weakref
from collections.abc import Callable
from operator import attrgetter
from time import monotonic
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

# How long a connection may stay among the spares. One idle for longer goes back to the pool,
# whose checks it then passes again (MariaDB's pool_recycle, a user's pool_pre_ping).
SPARE_SECONDS = 30.0
# Whether a driver's connection may be in a transaction, for each engine whose spares are
# kept. PyMySQL does not know (it reads the server's status from a write's answer only): any
# statement since the last commit may have begun one.
_IN_TRANSACTION: dict[str, Callable[[Any], bool]] = {
    "sqlite": attrgetter("in_transaction"),
    "postgresql": lambda driver: driver.info.transaction_status != 0,  # not IDLE
    "mysql": lambda driver: True,
}


class Spares:
    """The connections of one engine that the driver has used and keeps for its next ones.

    None until `keep` is called; then up to the pool's size of them, idle and out of any
    transaction, checked out of the pool all along; the last one given back is handed out
    first. Spares go back to the pool when they have waited SPARE_SECONDS and when a
    connection broke (the pool then makes new ones for the others), and are closed when the
    engine is disposed of. Only a QueuePool's connections are kept: the others' (SQLite in
    memory) belong to a thread.
    """

    def __init__(self, engine: Engine):
        self.most = 0
        self.engine = weakref.ref(engine)
        self._idle: list[tuple[PoolProxiedConnection, float]] = []
        self._errors = engine.dialect.loaded_dbapi.Error
        # psycopg runs the driver's lone statements in autocommit until a transaction begins:
        # a read then costs one round trip, with no BEGIN before it and no ROLLBACK after.
        # (Switching costs PyMySQL a round trip, so MariaDB does not.) The driver asks here.
        self.reads_in_autocommit = engine.dialect.name == "postgresql"
        self._in_transaction = _IN_TRANSACTION.get(engine.dialect.name)
        self._process = os.getpid()
        event.listen(engine, "engine_disposed", self._close_all)

    def take(self) -> PoolProxiedConnection | None:
        """Return the spare given back last, if there is one that has not waited too long."""
        while True:
            try:
                pooled, since = self._idle.pop()
            except IndexError:
                return None
            if monotonic() - since < SPARE_SECONDS:
                return pooled
            self.give_back(pooled)

    def keep(self, pooled: PoolProxiedConnection) -> bool:
        """Keep a connection that is out of any transaction; False if there are enough."""
        if len(self._idle) >= self.most:
            return False
        self._idle.append((pooled, monotonic()))
        return True

    def in_transaction(self, driver: Any) -> bool:
        assert self._in_transaction is not None
        return self._in_transaction(driver)

    def give_back(self, pooled: PoolProxiedConnection) -> None:
        """Give a connection back to the pool, as the rest of the app expects to find it."""
        driver = pooled.driver_connection  # None once invalidated
        try:
            if self.reads_in_autocommit and driver is not None and driver.autocommit:
                # The ORM and migrations expect transactions.
                driver.autocommit = False
        except self._errors as error:
            pooled.invalidate(error)
        finally:
            pooled.close()

    def give_all_back(self) -> None:
        """Give every spare back to the pool."""
        while (pooled := self._pop()) is not None:
            self.give_back(pooled)

    def _close_all(self, engine: Engine) -> None:
        # The engine was disposed of: its pool, which the spares would go back to, is gone.
        if os.getpid() != self._process:
            # Disposed of in a child process, whose parent still uses these connections: they
            # are forgotten here, and left open, as the pool leaves its own.
            self._idle.clear()
            return
        while (pooled := self._pop()) is not None:
            pooled.detach()
            pooled.close()

    def _pop(self) -> PoolProxiedConnection | None:
        try:
            return self._idle.pop()[0]
        except IndexError:
            return None


# Each engine's spares, by the engine's id: read on every request, where a weak dictionary's
# lookup would make a weak reference each time. An entry goes when its engine does.
_by_engine: dict[int, Spares] = {}
_made = threading.Lock()


def of(engine: Engine) -> Spares:
    """Return the engine's spares (none kept unless `keep_for` was called), made on first use."""
    spares = _by_engine.get(id(engine))
    if spares is None or spares.engine() is not engine:
        with _made:
            spares = _by_engine.get(id(engine))
            if spares is None or spares.engine() is not engine:
                spares = _by_engine[id(engine)] = Spares(engine)
                weakref.finalize(engine, _forget, id(engine), weakref.ref(spares))
    return spares


def _forget(engine_id: int, spares: "weakref.ref[Spares]") -> None:
    if _by_engine.get(engine_id) is spares():
        del _by_engine[engine_id]


def keep_for(engine: Engine) -> None:
    """Have the engine keep connections between the driver's requests, for as long as it
    lives: up to its pool's size of them."""
    spares = of(engine)
    if isinstance(engine.pool, QueuePool) and spares._in_transaction is not None:
        spares.most = engine.pool.size()
