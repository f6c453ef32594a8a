"""Prebuilt statements run on the database driver's own connection, from SQLAlchemy's pool.

The API reads and writes one todo, or one page of them, per request. Through the ORM
session and Core's execution machinery the bookkeeping around such a statement costs
several times the query itself (README, Performance). Here SQLAlchemy still writes the SQL
for each dialect, once per statement, and still owns the pool; a request only binds values,
runs the driver's cursor and reads its tuples. Driver errors come out as SQLAlchemy's own
exception classes, and a connection that broke is dropped from the pool, as Core does.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement

_NO_VALUES: Mapping[str, Any] = MappingProxyType({})


class _Compiled(NamedTuple):
    sql: str
    # Every bound value in the driver's order: name, default value and type conversion.
    binds: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    positional: bool
    returning: bool

    def parameters(self, values: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        bound = [
            (name, value if process is None else process(value))
            for name, default, process in self.binds
            for value in (values.get(name, default),)
        ]
        if self.positional:
            return [value for _, value in bound]
        return dict(bound)


class Statement:
    """A Core statement, compiled once per dialect into the driver's SQL and parameters.

    Values are bound by the names of the statement's `bindparam`s; a constant in the
    statement keeps its own value.
    """

    def __init__(self, statement: ClauseElement):
        self.statement = statement
        self._compiled: WeakKeyDictionary[Dialect, _Compiled] = WeakKeyDictionary()

    def compiled(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = compiled.positiontup if dialect.positional else list(by_name)
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


@contextmanager
def _translated(dialect: Dialect, pooled: PoolProxiedConnection | None = None, cursor=None):
    """Raise the driver's errors as SQLAlchemy's, dropping a connection that broke."""
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        connection = pooled.dbapi_connection if pooled is not None else None
        broken = dialect.is_disconnect(error, connection, cursor)
        if broken and pooled is not None:
            pooled.invalidate(error)
        raise DBAPIError.instance(
            None, None, error, dialect.loaded_dbapi.Error,
            connection_invalidated=broken, dialect=dialect,
        ) from error  # fmt: skip


class Connection:
    """A pooled driver connection: statements run in one transaction until `commit`."""

    def __init__(self, pooled: PoolProxiedConnection, dialect: Dialect):
        self._pooled = pooled
        self.dialect = dialect

    @contextmanager
    def _cursor(self, statement: Statement | str, values: Mapping[str, Any]):
        dbapi_connection = self._pooled.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            with _translated(self.dialect, self._pooled, cursor):
                if isinstance(statement, str):
                    cursor.execute(statement)
                    yield cursor, False
                else:
                    compiled = statement.compiled(self.dialect)
                    cursor.execute(compiled.sql, compiled.parameters(values))
                    yield cursor, compiled.returning
        finally:
            cursor.close()

    def execute(self, statement: Statement | str, values: Mapping[str, Any] = _NO_VALUES) -> int:
        """Run a statement; return how many rows it changed."""
        with self._cursor(statement, values) as (cursor, _):
            return cursor.rowcount

    def first(self, statement: Statement, values: Mapping[str, Any] = _NO_VALUES) -> tuple | None:
        """Run a query; return its first row as the driver's tuple, or None."""
        with self._cursor(statement, values) as (cursor, _):
            return cursor.fetchone()

    def all(self, statement: Statement, values: Mapping[str, Any] = _NO_VALUES) -> list[tuple]:
        """Run a query; return its rows as the driver's tuples."""
        with self._cursor(statement, values) as (cursor, _):
            return cursor.fetchall()

    def insert(self, statement: Statement, values: Mapping[str, Any]) -> int:
        """Insert one row; return its new primary key.

        The statement should ask for the key with `return_defaults`: engines that can send
        it back with RETURNING do, the others report it as the cursor's last row id.
        """
        with self._cursor(statement, values) as (cursor, returning):
            return cursor.fetchone()[0] if returning else cursor.lastrowid

    def commit(self) -> None:
        with _translated(self.dialect, self._pooled):
            self._pooled.dbapi_connection.commit()


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """Check a connection out of the engine's pool for one unit of work.

    Whatever was not committed is rolled back when the pool takes the connection back.
    """
    with _translated(engine.dialect):
        pooled = engine.raw_connection()
    try:
        yield Connection(pooled, engine.dialect)
    finally:
        pooled.close()
