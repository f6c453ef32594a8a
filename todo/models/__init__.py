"""The database object, the declarative base and the one UTC clock."""

from datetime import UTC, datetime
from typing import TypeVar

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Index, MetaData
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Named constraints let migrations drop and alter them portably (SQLite batch mode included).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def only_on(index: Index, *dialects: str) -> Index:
    """Create an index on these engines only; `created_on` tells Alembic's comparisons."""
    index.info["dialects"] = dialects
    # A tuple of dialects, as SQLAlchemy's documentation has it; its annotation says one.
    return index.ddl_if(dialect=dialects)  # type: ignore[arg-type]


def created_on(dialect: str):
    """Return Alembic's `include_object` hook that leaves out the indexes of other engines."""

    def include(obj, name, type_, reflected, compare_to) -> bool:
        return reflected or type_ != "index" or dialect in obj.info.get("dialects", (dialect,))

    return include


# Objects stay readable after commit, so a view can answer with what it just wrote.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


MaybeDatetime = TypeVar("MaybeDatetime", datetime, None)


def naive_utc(value: MaybeDatetime) -> MaybeDatetime:
    """Return a datetime as naive UTC, the form in which the database stores it."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, written with `isoformat`.

    The same text as the storage format below, several times faster than SQLAlchemy's
    generic formatter, which costs more than the rest of binding a new todo's values.
    """

    def bind_processor(self, dialect):
        def process(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat(timespec="seconds")

        return process


# SQLite keeps datetimes as text: stored exactly as the API writes them, a list is read and
# sent without converting a single value, and text order is still time order.
SQLITE_DATETIME = _SQLiteDateTime(
    storage_format="%(year)04d-%(month)02d-%(day)02dT%(hour)02d:%(minute)02d:%(second)02d",
    regexp=r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})",
)


class UTCDateTime(TypeDecorator):
    """Store aware datetimes as naive UTC and hand them back aware.

    Every engine then stores the same value in a plain DATETIME/TIMESTAMP column; a naive
    datetime from Python code is taken as UTC. Fractions of a second are dropped because the
    API never shows them and MariaDB's DATETIME would round them.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(SQLITE_DATETIME)
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return naive_utc(value).replace(microsecond=0)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
