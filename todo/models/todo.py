"""The Todo model and the statements that read and write it."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    Select,
    String,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from todo.models import UTCDateTime, db, utcnow

# The largest id any supported engine can store (a signed 64-bit integer); larger ids cannot
# exist, so lookups answer "not found" without asking the database.
MAX_ID = 2**63 - 1
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


def select_todo(todo_id: int) -> Select:
    """Select one todo's columns by id."""
    return select(Todo.__table__).where(Todo.id == todo_id)


def select_todos(
    *,
    completed: bool | None = None,
    window: int | None = None,
    after: int | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> Select:
    """Select the columns of the todos matching every given filter, ordered by id."""
    statement = select(Todo.__table__).order_by(Todo.id)
    if completed is not None:
        statement = statement.where(Todo.completed == completed)
    if window is not None:
        horizon = (now or utcnow()) + timedelta(days=window)
        statement = statement.where(Todo.deadline_at.is_not(None), Todo.deadline_at <= horizon)
    if after is not None:
        statement = statement.where(Todo.id > min(max(after, 0), MAX_ID))
    if limit is not None:
        statement = statement.limit(limit)
    return statement


def update_todo(todo_id: int, changes: dict, versions: Iterable[int] | None = None):
    """Update a todo in one statement, only if its version is one of `versions` (when given).

    Comparing the version in the WHERE clause makes the If-Match check and the write one
    atomic step on every engine.
    """
    statement = (
        update(Todo)
        .where(Todo.id == todo_id)
        .values(**changes, version=Todo.version + 1, updated_at=utcnow())
    )
    if versions is not None:
        statement = statement.where(Todo.version.in_(list(versions)))
    return statement.execution_options(synchronize_session=False)


def delete_todo(todo_id: int, version: int):
    """Delete a todo only while it still has the version that was read."""
    return (
        delete(Todo)
        .where(Todo.id == todo_id, Todo.version == version)
        .execution_options(synchronize_session=False)
    )
