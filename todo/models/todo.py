"""The Todo model: the one declaration of a stored todo's columns."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, event, text
from sqlalchemy.orm import Mapped, mapped_column

from todo.models import UTCDateTime, db, only_on, utcnow

# The largest id any supported engine can store (a signed 64-bit integer); larger ids cannot
# exist, so lookups answer "not found" without asking the database.
MAX_ID = 2**63 - 1
# Versions are a plain INTEGER column: 32 bits on the database servers. After the largest
# one a todo's version goes back to 1 (docs/behaviour.md says why).
MAX_VERSION = 2**31 - 1
TITLE_MAX_LENGTH = 80
DESCRIPTION_MAX_LENGTH = 120
# Marks a column the API reads and writes but never shows; such columns come last.
INTERNAL = {"internal": True}
# The todos of someone: those a user's list reads (no one owns any in AUTH none).
_OWNED = text("owner_id IS NOT NULL")


def next_version(version: int | None) -> int:
    """Return the version after this one (the first for a new todo), as the API's UPDATE does."""
    return 1 if version is None or version >= MAX_VERSION else version + 1


class Todo(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    __tablename__ = "todos"
    __table_args__ = (
        Index("ix_todos_deadline_at", "deadline_at"),
        # A user's list, in id order, without reading anyone else's todos. SQLite and
        # PostgreSQL leave out the todos of no one (every todo, in AUTH none), which no user's
        # list reads, so that a write of one does not write this index too.
        Index(
            "ix_todos_owner_id_id",
            "owner_id",
            "id",
            sqlite_where=_OWNED,
            postgresql_where=_OWNED,
        ),
        # A list's changes since a cursor, in the order they were made (todo.sync).
        Index("ix_todos_change_stream_change_seq", "change_stream", "change_seq"),
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
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"), info=INTERNAL)
    # The user whose todo this is (AUTH token); None for todos made while AUTH was none. No
    # foreign key: deleting a user deletes its todos in the same transaction (todo.accounts).
    owner_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), info=INTERNAL
    )
    # The list whose change this todo last was, and that change's number in it (todo.sync):
    # set on every change, through the API or the ORM. 0 and 0 for todos imported or seeded.
    change_stream: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), server_default=text("0"), info=INTERNAL
    )
    change_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), info=INTERNAL)

    __mapper_args__ = {"version_id_col": version, "version_id_generator": next_version}

    def __repr__(self) -> str:
        return f"<Todo {self.id} {self.title!r}>"


# Open todos by deadline: few, however many completed ones pile up, and found without reading
# the rest (todo.lists); everyone's, and each user's. SQLite and PostgreSQL index only open
# todos, and only owned ones in the users' indexes, so that a completed todo costs the indexes
# nothing and, in AUTH none, the users' index is empty. MariaDB has no partial indexes: its
# hold every todo, open ones first.
_OPEN = ~Todo.completed
_OWNED_OPEN = sa.and_(~Todo.completed, Todo.owner_id.is_not(None))
OPEN_BY_DEADLINE = only_on(
    Index("ix_todos_completed_deadline_at", Todo.completed, Todo.deadline_at, sqlite_where=_OPEN),
    "sqlite",
    "mysql",
)
OWNED_OPEN_BY_DEADLINE = only_on(
    Index(
        "ix_todos_owner_id_completed_deadline_at",
        Todo.owner_id,
        Todo.completed,
        Todo.deadline_at,
        sqlite_where=_OWNED_OPEN,
    ),
    "sqlite",
    "mysql",
)
# PostgreSQL leaves out of an index search a condition that the index's own WHERE implies, so
# its indexes of open todos start with the deadline; they hold the id, so that counting
# matches reads no rows.
only_on(
    Index(
        "ix_todos_open_deadline_at",
        Todo.deadline_at,
        postgresql_where=_OPEN,
        postgresql_include=["id"],
    ),
    "postgresql",
)
only_on(
    Index(
        "ix_todos_owner_id_open_deadline_at",
        Todo.owner_id,
        Todo.deadline_at,
        postgresql_where=_OWNED_OPEN,
        postgresql_include=["id"],
    ),
    "postgresql",
)


# PostgreSQL's id sequence does not notice ids given explicitly (as tutorial code does);
# moving it past them keeps the next id the API hands out from colliding.
ADVANCE_POSTGRES_ID_SEQUENCE = text(
    "SELECT setval(pg_get_serial_sequence('todos', 'id'), GREATEST(:id, COALESCE("
    "pg_sequence_last_value(pg_get_serial_sequence('todos', 'id')::regclass), 0)))"
)


@event.listens_for(Todo, "before_insert")
def _advance_id_sequence_past_explicit_ids(mapper, connection, todo: Todo) -> None:
    if todo.id is not None and connection.dialect.name == "postgresql":
        connection.execute(ADVANCE_POSTGRES_ID_SEQUENCE, {"id": todo.id})
