"""Prebuilt statements run on the database driver's own connection, from SQLAlchemy's pool.

The API reads and writes one todo, or one page of them, per request. Through the ORM
session and Core's execution machinery the bookkeeping around such a statement costs
several times the query itself (bench/README.md). Here SQLAlchemy still writes the SQL
for each dialect, once per statement, and still owns the pool; a request only binds values,
runs the driver's cursor and reads its tuples. Driver errors come out as SQLAlchemy's own
exception classes, and a connection that broke is dropped from the pool, as Core does.
"""

import select
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter, methodcaller
from types import MappingProxyType
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPIModule
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement, ColumnElement, literal_column
from sqlalchemy.sql.compiler import SQLCompiler

from todo import spares, write_queue

_NO_VALUES: Mapping[str, Any] = MappingProxyType({})
# libpq's status of a connection in working order (CONNECTION_OK).
_PSYCOPG_OK = 0
# How each engine starts a read-only transaction that sees one moment of the database.
# PostgreSQL (whose driver begins the transaction) takes the level before the first read;
# MariaDB's consistent snapshot needs its own START; SQLite's WAL gives a reader a snapshot.
_SNAPSHOT = {
    "postgresql": ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",),
    "mysql": (
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    ),
    "sqlite": ("BEGIN",),
}


class _Compiled(NamedTuple):
    sql: str
    # Every bound value in the driver's order: name, default value and type conversion.
    binds: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    positional: bool
    returning: bool

    def parameters(self, values: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        """Return the values to send with the SQL, converted and in the driver's style."""
        bound = []
        for name, default, process in self.binds:
            value = values.get(name, default)
            bound.append(value if process is None else process(value))
        if self.positional:
            return bound
        return {name: value for (name, _, _), value in zip(self.binds, bound, strict=True)}


def constant(value: int) -> ColumnElement:
    """An integer written into the SQL instead of bound as a parameter.

    PostgreSQL plans a prepared statement once for any value of its parameters (its generic
    plan): `change_seq = $1` is planned as the column's commonest value, which may be every
    row's, and read by a table scan; `change_seq = -1` is planned from what the column holds.
    """
    return literal_column(str(int(value)))


class Statement:
    """A Core statement, compiled once per dialect into the driver's SQL and parameters.

    Values are bound by the names of the statement's `bindparam`s; a constant in the
    statement keeps its own value.
    """

    def __init__(self, statement: ClauseElement):
        self.statement = statement
        self._compiled: WeakKeyDictionary[Dialect, _Compiled] = WeakKeyDictionary()
        # The dialect it was last compiled for, with the result: a process serves one
        # database, and a weak dictionary's lookup makes a weak reference each time.
        self._last: tuple[Dialect, _Compiled] | None = None

    def compiled(self, dialect: Dialect) -> _Compiled:
        last = self._last
        if last is not None and last[0] is dialect:
            return last[1]
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = self._compile(dialect)
        self._last = (dialect, compiled)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        # Statements compile to SQL; their bind names and order are the compiler's own.
        assert isinstance(compiled, SQLCompiler)
        # Core computes a column's Python-side default (`default=`/`onupdate=` a function) as
        # it executes; this driver does not, and would send NULL in its place.
        computed = [column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if computed:
            raise ValueError(f"Give the statement a value for {', '.join(computed)}.")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = (compiled.positiontup or []) if dialect.positional else list(by_name)
        binds = tuple(
            (
                name,
                by_name[name].value,
                by_name[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in names
        )
        returning = bool(getattr(compiled, "effective_returning", None))
        return _Compiled(compiled.string, binds, dialect.positional, returning)


class Connection:
    """A connection of an engine's for one transaction, as a context manager.

    On PostgreSQL and MariaDB the statements run in one transaction until `commit`; on
    SQLite each is its own unless `begin` started one, and so is a lone write on PostgreSQL
    (`begin`). Whatever was not committed is rolled back when the connection is given back,
    on leaving the `with` block.
    """

    _pooled: PoolProxiedConnection

    def __init__(self, engine: Engine):
        self.dialect = engine.dialect
        self._engine = engine
        self._spares = spares.of(engine)
        self._errors = engine.dialect.loaded_dbapi.Error
        # Lone statements run in autocommit until `begin` on PostgreSQL (todo.spares says
        # why, and takes a connection out of it before the pool gets it back).
        self._reads_in_autocommit = self._spares.reads_in_autocommit

    def __enter__(self) -> "Connection":
        self._pooled = self._checkout()
        return self

    def _checkout(self) -> PoolProxiedConnection:
        pooled = self._spares.take()
        try:
            if pooled is None:
                pooled = self._engine.raw_connection()
            if self._reads_in_autocommit:
                driver = pooled.driver_connection
                if not driver.autocommit:  # type: ignore[union-attr]
                    driver.autocommit = True  # type: ignore[union-attr]
        except self._errors as error:
            translated = self._translated(error, pooled)
            if pooled is not None:
                pooled.close()
            raise translated from error
        # Whether no statement has run on the connection yet in this checkout, and whether
        # `begin` has been called.
        self._fresh = True
        self._in_transaction = False
        # Whether a lone write runs in psycopg's autocommit, committing on its own.
        self._alone = False
        # Whether a statement has run since the checkout or the last commit.
        self._since_commit = False
        # Where this connection holds SQLite's queue of writers (todo.write_queue), if it does.
        self._queued: write_queue.Place | None = None
        return pooled

    def __exit__(self, *exc_info) -> None:
        pooled = self._pooled
        driver = pooled.driver_connection  # None once invalidated
        kept = False
        try:
            if self._queued is not None:
                # The queue moves on once nothing of this write holds SQLite's lock, and
                # before the connection, with the queue's open file, can go to another thread.
                try:
                    if driver is not None:
                        pooled.rollback()
                finally:
                    self._leave_queue()
            kept = driver is not None and self._kept_spare(pooled, driver)
        except self._errors as error:
            self._translated(error, pooled)
        finally:
            if not kept:
                self._spares.give_back(pooled)

    def _kept_spare(self, pooled: PoolProxiedConnection, driver: Any) -> bool:
        """Keep the connection for the next one, out of any transaction, if spares are kept."""
        if not self._spares.most:
            return False
        if self._since_commit and self._spares.in_transaction(driver):
            pooled.rollback()
        return self._spares.keep(pooled)

    def _translated(
        self, error: DBAPIModule.Error, pooled: PoolProxiedConnection | None
    ) -> StatementError:
        """Turn a driver error into SQLAlchemy's, dropping the connection if it broke and
        giving the spares back to the pool (what broke one, a server restart, broke them too)."""
        broken = self.dialect.is_disconnect(error, pooled, None)
        if broken and pooled is not None:
            pooled.invalidate(error)
            self._spares.give_all_back()
        return DBAPIError.instance(
            None, None, error, self._errors, connection_invalidated=broken, dialect=self.dialect
        )

    def _cursor(self, statement: Statement | str, values: Mapping[str, Any], many: list | None):
        cursor = self._pooled.cursor()
        if isinstance(statement, str):
            cursor.execute(statement)
        elif many is not None:
            cursor.executemany(statement.compiled(self.dialect).sql, many)
        else:
            compiled = statement.compiled(self.dialect)
            cursor.execute(compiled.sql, compiled.parameters(values))
        return cursor

    def _run(
        self,
        statement: Statement | str,
        values: Mapping[str, Any],
        result: Callable,
        many: list | None = None,
    ):
        """Run a statement on a cursor of its own and return `result(cursor)`.

        The first statement on a pooled connection that turns out to have died (a server
        restart) runs again on a new one: nothing of it took effect, since it ran in a
        transaction that only `commit` ends, or in psycopg's autocommit as a read. A lone
        write in autocommit is not run again (`_gone`). SQLite never disconnects.
        """
        self._since_commit = True
        try:
            cursor = self._cursor(statement, values, many)
            try:
                outcome = result(cursor)
            finally:
                cursor.close()
        except self._errors as error:
            if write_queue.refused_at_once(self._pooled, error):
                # A writer outside the queue holds SQLite's lock (or, for a read, another
                # connection recovers the WAL), and the statement did nothing: it waits for
                # the lock in SQLite's busy handler, as configured, out of the queue.
                self._leave_queue()
                write_queue.waits_as_configured(self._pooled)
                return self._run(statement, values, result, many)
            translated = self._translated(error, self._pooled)
            if not (self._fresh and translated.connection_invalidated) or self._alone:
                raise translated from error
            self._spares.give_back(self._pooled)
            self._pooled = self._checkout()
            if self._in_transaction:
                self._leave_autocommit()
            self._fresh = False
            return self._run(statement, values, result, many)
        self._fresh = False
        return outcome

    def execute(self, statement: Statement | str, values: Mapping[str, Any] = _NO_VALUES) -> int:
        """Run a statement; return how many rows it changed."""
        return self._run(statement, values, attrgetter("rowcount"))

    def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once for each row of values (nothing for none)."""
        if not rows:
            return
        compiled = statement.compiled(self.dialect)
        parameters = [compiled.parameters(values) for values in rows]
        self._run(statement, {}, lambda cursor: None, many=parameters)

    def first(self, statement: Statement, values: Mapping[str, Any] = _NO_VALUES) -> tuple | None:
        """Run a query; return its first row as the driver's tuple, or None."""
        return self._run(statement, values, methodcaller("fetchone"))

    def all(self, statement: Statement, values: Mapping[str, Any] = _NO_VALUES) -> Sequence[tuple]:
        """Run a query; return its rows as the driver's tuples."""
        return self._run(statement, values, methodcaller("fetchall"))

    def insert(self, statement: Statement, values: Mapping[str, Any]) -> int:
        """Insert one row; return its new primary key.

        The statement should ask for the key with `return_defaults`: engines that can send
        it back with RETURNING do, the others report it as the cursor's last row id.
        """
        if statement.compiled(self.dialect).returning:
            return self._run(statement, values, methodcaller("fetchone"))[0]
        return self._run(statement, values, attrgetter("lastrowid"))

    def begin(self, lone: bool = False) -> None:
        """Start a transaction that will write: every write begins with this.

        SQLite connections run in autocommit (todo.database), and this takes SQLite's write
        lock at once, so that a read in the transaction never has to be upgraded to a write;
        a `lone` statement, the write's only one, is a transaction of its own there, and on
        PostgreSQL too, when it is the connection's first (see `_gone`). Otherwise psycopg's
        leaves autocommit; PostgreSQL and MariaDB then start the transaction with the first
        statement and lock rows as needed.
        """
        if self.dialect.name == "sqlite":
            if self._queued is None:
                self._queued = write_queue.join(self._pooled)
            if not lone:
                self.execute("BEGIN IMMEDIATE")
        elif self._reads_in_autocommit:
            if lone and self._fresh and not self._gone():
                self._alone = True
            else:
                self._leave_autocommit()

    def _gone(self) -> bool:
        """Tell, without a round trip, whether the server has closed this idle connection.

        A write that commits on its own in psycopg's autocommit takes one round trip where a
        transaction takes three (BEGIN, the statement, COMMIT), but it cannot run again on a
        new connection after a disconnect, since it may have committed. So it runs so only on
        a connection still open: a server that went away (a restart) said so on the socket,
        or closed it. Otherwise the write takes a transaction, whose first statement does run
        again on a new connection.
        """
        driver = self._pooled.driver_connection
        if driver is None or driver.closed:
            return True
        if not select.select([driver.fileno()], [], [], 0)[0]:
            return False
        try:
            driver.pgconn.consume_input()
        except self._errors:
            return True
        return driver.pgconn.status != _PSYCOPG_OK

    def _leave_queue(self) -> None:
        place, self._queued = self._queued, None
        if place is not None:
            write_queue.leave(place)

    def _leave_autocommit(self) -> None:
        """From here on, statements run in a transaction that `commit` ends."""
        self._in_transaction = True
        try:
            self._pooled.driver_connection.autocommit = False  # type: ignore[union-attr]
        except self._errors as error:
            raise self._translated(error, self._pooled) from error

    def begin_snapshot(self) -> None:
        """Start a read-only transaction whose reads all see the same moment; `commit` ends it."""
        if self._reads_in_autocommit:
            self._leave_autocommit()
        # On SQLite its first read, once BEGIN has run, is not run again if refused at once.
        write_queue.waits_as_configured(self._pooled)
        for statement in _SNAPSHOT[self.dialect.name]:
            self.execute(statement)

    def commit(self) -> None:
        try:
            self._pooled.commit()
            self._since_commit = False
            self._leave_queue()
        except self._errors as error:
            raise self._translated(error, self._pooled) from error
