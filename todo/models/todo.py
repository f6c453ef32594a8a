"""The Todo model and the statements that read and write it."""

from datetime import datetime, timedelta
from functools import cache
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    bindparam,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from todo.driver import Statement
from todo.models import UTCDateTime, db, utcnow

# The largest id any supported engine can store (a signed 64-bit integer); larger ids cannot
# exist, so lookups answer "not found" without asking the database.
MAX_ID = 2**63 - 1
# Versions are a plain INTEGER column: 32 bits on the database servers.
MAX_VERSION = 2**31 - 1
TITLE_MAX_LENGTH = 80
DESCRIPTION_MAX_LENGTH = 120


class Todo(db.Model):
    __tablename__ = "todos"
    __table_args__ = (
        Index("ix_todos_deadline_at", "deadline_at"),
        # SQLite would otherwise hand out the id of a deleted last row again.
        {"sqlite_autoincrement": True, "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH))
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Bumped on every change, through the API or the ORM; the ETag is derived from it.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __mapper_args__ = {"version_id_col": version}

    def __repr__(self) -> str:
        return f"<Todo {self.id} {self.title!r}>"


# PostgreSQL's id sequence does not notice ids given explicitly (as tutorial code does);
# moving it past them keeps the next id the API hands out from colliding.
_ADVANCE_POSTGRES_ID_SEQUENCE = text(
    "SELECT setval(pg_get_serial_sequence('todos', 'id'), GREATEST(:id, COALESCE("
    "pg_sequence_last_value(pg_get_serial_sequence('todos', 'id')::regclass), 0)))"
)


@event.listens_for(Todo, "before_insert")
def _advance_id_sequence_past_explicit_ids(mapper, connection, todo: Todo) -> None:
    if todo.id is not None and connection.dialect.name == "postgresql":
        connection.execute(_ADVANCE_POSTGRES_ID_SEQUENCE, {"id": todo.id})


def can_exist(todo_id: int) -> bool:
    """Tell whether an id is within the range the database can hold."""
    return 1 <= todo_id <= MAX_ID


class StoredTodo(NamedTuple):
    """A todo's columns in API order, as the database driver returns them.

    `completed` may come as 0/1, and a timestamp as a naive UTC datetime or, on SQLite, as
    the stored text (already in the API's format); schemas.todos_json writes either.
    """

    id: int
    title: str
    description: str | None
    completed: bool | int
    deadline_at: datetime | str | None
    created_at: datetime | str
    updated_at: datetime | str
    version: int


STORED_COLUMNS = (
    Todo.id,
    Todo.title,
    Todo.description,
    Todo.completed,
    Todo.deadline_at,
    Todo.created_at,
    Todo.updated_at,
    Todo.version,
)
# Built once; each request only binds its values (see todo.driver).
SELECT_TODO = Statement(select(*STORED_COLUMNS).where(Todo.id == bindparam("todo_id")))
# The same, locking the row until the transaction ends (SQLite, which has no row locks,
# ignores FOR UPDATE).
SELECT_TODO_FOR_UPDATE = Statement(SELECT_TODO.statement.with_for_update())
DELETE_TODO = Statement(
    delete(Todo).where(Todo.id == bindparam("todo_id"), Todo.version == bindparam("version"))
)
INSERTED_COLUMNS = (
    "title", "description", "completed", "deadline_at", "created_at", "updated_at", "version",
)  # fmt: skip
INSERT_TODO = Statement(
    insert(Todo)
    .values({name: bindparam(name) for name in INSERTED_COLUMNS})
    .return_defaults(Todo.id)
)


@cache
def select_todos(*, completed: bool, window: bool, after: bool, limit: bool) -> Statement:
    """Select the todos matching the filters that are given, ordered by id.

    Takes the parameters `completed`, `horizon` (latest deadline), `after` and `limit`.
    """
    statement = select(*STORED_COLUMNS).order_by(Todo.id)
    if completed:
        statement = statement.where(Todo.completed == bindparam("completed"))
    if window:
        statement = statement.where(
            Todo.deadline_at.is_not(None), Todo.deadline_at <= bindparam("horizon")
        )
    if after:
        statement = statement.where(Todo.id > bindparam("after"))
    if limit:
        statement = statement.limit(bindparam("limit"))
    return Statement(statement)


def window_horizon(days: int) -> datetime:
    """Return the latest deadline within a window of days from now."""
    return utcnow() + timedelta(days=days)


@cache
def update_todo(fields: frozenset[str], checks_version: bool, returning: bool) -> Statement:
    """Update the given fields of a todo, and only at `version` when it checks the version.

    Comparing the version in the WHERE clause makes the If-Match check and the write one
    atomic step on every engine. With `returning`, the statement also reads the todo back
    as it is after the update (SQLite and PostgreSQL; MariaDB cannot).
    """
    statement = (
        update(Todo)
        .where(Todo.id == bindparam("todo_id"))
        .values(
            {name: bindparam(name, type_=Todo.__table__.c[name].type) for name in fields}
            | {"version": Todo.version + 1, "updated_at": bindparam("now", type_=UTCDateTime())}
        )
    )
    if checks_version:
        statement = statement.where(Todo.version == bindparam("version"))
    if returning:
        statement = statement.returning(*STORED_COLUMNS)
    return Statement(statement)
