"""The API's todos in the database: the row, its prebuilt statements, and the reads and writes.

Each write is one transaction, committed here. The row's shape is derived from the Todo model,
so a column added there (and in a migration) is read and written by every statement below.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, bindparam
from werkzeug.exceptions import NotFound, PreconditionFailed

from todo.driver import Connection, Statement
from todo.models import UTCDateTime, db, naive_utc, utcnow
from todo.models.todo import MAX_ID, Todo
from todo.schemas import TodoListQuery

# Every column of the table, in the model's order: the driver's tuples have this shape.
ROW_COLUMNS = tuple(Todo.__table__.columns)
ROW_KEYS = tuple(column.key for column in ROW_COLUMNS)


class StoredTodo(tuple[Any, ...]):
    """A todo as the driver returns it: a tuple of every column, in the model's order.

    `completed` may come as 0/1, and a timestamp as a naive UTC datetime or, on SQLite, as
    the stored text (already in the API's format); the encoders in todo.schemas write either.
    """

    __slots__ = ()
    id = property(itemgetter(ROW_KEYS.index("id")))
    version = property(itemgetter(ROW_KEYS.index("version")))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "StoredTodo":
        """Make a row of a value for each column, by name."""
        return cls(values[key] for key in ROW_KEYS)


# Built once; each request only binds its values (see todo.driver).
SELECT_TODO = Statement(sa.select(*ROW_COLUMNS).where(Todo.id == bindparam("todo_id")))
# The same, locking the row until the transaction ends (SQLite, which has no row locks,
# ignores FOR UPDATE).
SELECT_TODO_FOR_UPDATE = Statement(
    sa.select(*ROW_COLUMNS).where(Todo.id == bindparam("todo_id")).with_for_update()
)
DELETE_TODO = Statement(
    sa.delete(Todo).where(Todo.id == bindparam("todo_id"), Todo.version == bindparam("version"))
)
INSERT_TODO = Statement(
    sa.insert(Todo)
    .values({column.key: bindparam(column.key) for column in ROW_COLUMNS if not column.primary_key})
    .return_defaults(Todo.id)
)


@cache
def select_todos(*, completed: bool, window: bool, after: bool, limit: bool) -> Statement:
    """Select the todos matching the filters that are given, ordered by id.

    Takes the parameters `completed`, `horizon` (latest deadline), `after` and `limit`.
    """
    statement = sa.select(*ROW_COLUMNS).order_by(Todo.id)
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


@cache
def update_todo(fields: frozenset[str], checks_version: bool, returning: bool) -> Statement:
    """Update the given fields of a todo, and only at `version` when it checks the version.

    Comparing the version in the WHERE clause makes the If-Match check and the write one
    atomic step on every engine. With `returning`, the statement also reads the todo back
    as it is after the update (SQLite and PostgreSQL; MariaDB cannot).
    """
    statement = (
        sa.update(Todo)
        .where(Todo.id == bindparam("todo_id"))
        .values(
            {name: bindparam(name, type_=Todo.__table__.c[name].type) for name in fields}
            | {"version": Todo.version + 1, "updated_at": bindparam("now", type_=UTCDateTime())}
        )
    )
    if checks_version:
        statement = statement.where(Todo.version == bindparam("version"))
    if returning:
        statement = statement.returning(*ROW_COLUMNS)
    return Statement(statement)


def can_exist(todo_id: int) -> bool:
    """Tell whether an id is within the range the database can hold."""
    return 1 <= todo_id <= MAX_ID


def window_horizon(days: int) -> datetime:
    """Return the latest deadline within a window of days from now."""
    return utcnow() + timedelta(days=days)


# Rows per query while streaming a long list: bounds memory, whatever the list's length.
STREAM_BATCH = 1000


def connect() -> Connection:
    """Return the database connection for one transaction, to use in a `with` block."""
    return Connection(db.engine)


def _find(connection: Connection, todo_id: int, lock: bool = False) -> StoredTodo | None:
    if not can_exist(todo_id):
        return None
    # SQLite ignores FOR UPDATE; its transactions take the write lock up front instead.
    row = connection.first(SELECT_TODO_FOR_UPDATE if lock else SELECT_TODO, {"todo_id": todo_id})
    return None if row is None else StoredTodo(row)


def _not_found(todo_id: int) -> NotFound:
    return NotFound(f"There is no todo with id {todo_id}." if todo_id >= 0 else None)


def get(todo_id: int) -> StoredTodo:
    """Return the todo with this id, or raise 404."""
    with connect() as connection:
        todo = _find(connection, todo_id)
    if todo is None:
        raise _not_found(todo_id)
    return todo


def insert(connection: Connection, fields: dict[str, Any]) -> StoredTodo:
    """Insert a new todo in the connection's transaction, without committing it."""
    now = naive_utc(utcnow())
    # Naive UTC, as the driver returns stored timestamps, so that the encoders write them alike.
    values = fields | {
        "deadline_at": naive_utc(fields["deadline_at"]),
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    return StoredTodo.from_values(values | {"id": connection.insert(INSERT_TODO, values)})


def create(fields: dict[str, Any]) -> StoredTodo:
    """Store a new todo."""
    with connect() as connection:
        todo = insert(connection, fields)
        connection.commit()
    return todo


def _stale() -> PreconditionFailed:
    return PreconditionFailed("The todo has changed since the version in If-Match.")


def update(todo_id: int, changes: dict[str, Any], versions: set[int] | None) -> StoredTodo:
    """Apply a partial update, only to a version the client names in If-Match (if any)."""
    with connect() as connection:
        if changes and can_exist(todo_id):
            returning = connection.dialect.update_returning
            statement = update_todo(frozenset(changes), versions is not None, returning)
            if not returning:
                # The todo is read back after the update, in the same transaction.
                connection.begin()
            values = {**changes, "todo_id": todo_id, "now": utcnow()}
            # Each try is atomic, and at most one can match the todo's one current version.
            for version in (None,) if versions is None else sorted(versions):
                todo = _update_one(connection, statement, values | {"version": version}, returning)
                if todo is not None:
                    connection.commit()
                    return todo
        todo = _find(connection, todo_id)
    if todo is None:
        raise _not_found(todo_id)
    if changes or (versions is not None and todo.version not in versions):
        # With changes to make, the todo exists but matched none of the versions.
        raise _stale()
    return todo


def _update_one(
    connection: Connection, statement: Statement, values: dict[str, Any], returning: bool
) -> StoredTodo | None:
    """Run an update of one todo; return the todo as it is now, or None if none matched."""
    if returning:
        row = connection.first(statement, values)
        return None if row is None else StoredTodo(row)
    if connection.execute(statement, values) == 1:
        return _find(connection, values["todo_id"])
    return None


def delete(todo_id: int, versions: set[int] | None) -> StoredTodo | None:
    """Delete a todo and return it as it was; None when there was none."""
    with connect() as connection:
        # Locked from the read to the delete, the todo cannot change in between however
        # many clients update it, so the answer is exactly what was deleted.
        connection.begin()
        todo = _find(connection, todo_id, lock=True)
        if todo is None:
            return None
        if versions is not None and todo.version not in versions:
            raise _stale()
        connection.execute(DELETE_TODO, {"todo_id": todo_id, "version": todo.version})
        connection.commit()
    return todo


def _list_parameters(query: TodoListQuery) -> dict[str, Any]:
    return {
        "completed": query.completed,
        "horizon": None if query.window is None else window_horizon(query.window),
        "after": None if query.after is None else min(max(query.after, 0), MAX_ID),
        "limit": query.limit,
    }


def _execute_list(connection: Connection, parameters: dict[str, Any]) -> Sequence[tuple]:
    statement = select_todos(
        completed=parameters["completed"] is not None,
        window=parameters["horizon"] is not None,
        after=parameters["after"] is not None,
        limit=parameters["limit"] is not None,
    )
    return connection.all(statement, parameters)


def page(query: TodoListQuery) -> tuple[Sequence[tuple], int | None]:
    """Return one page of todos, and the id to continue after when more follow."""
    limit = query.limit
    assert limit is not None, "a page is what a limit asks for; without one, stream()"
    parameters = _list_parameters(query) | {"limit": limit + 1}
    with connect() as connection:
        rows = _execute_list(connection, parameters)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1][0]
    return rows, None


def stream(query: TodoListQuery) -> Iterator[Sequence[tuple]]:
    """Yield every matching todo in batches, read by id in pages of STREAM_BATCH.

    Paging by id keeps memory flat on every engine without server-side cursors. The first
    batch is read before this returns, so a database error still becomes a proper answer.
    """
    parameters = _list_parameters(query) | {"limit": STREAM_BATCH}
    with connect() as connection:
        first = _execute_list(connection, parameters)
    return _following_batches(db.engine, first, parameters)


def _following_batches(
    engine: Engine, batch: Sequence[tuple], parameters: dict[str, Any]
) -> Iterator[Sequence[tuple]]:
    yield batch
    # Later batches are read after the view has returned, each one only as the server is
    # ready to send it, on a connection held just for that query.
    while len(batch) == STREAM_BATCH:
        with Connection(engine) as connection:
            batch = _execute_list(connection, parameters | {"after": batch[-1][0]})
        yield batch
