"""Reading and writing todos for the views: each write is one transaction, committed here."""

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine
from werkzeug.exceptions import NotFound, PreconditionFailed

from todo.driver import Connection, Statement
from todo.models import db, naive_utc, utcnow
from todo.models.todo import (
    DELETE_TODO,
    INSERT_TODO,
    MAX_ID,
    SELECT_TODO,
    SELECT_TODO_FOR_UPDATE,
    StoredTodo,
    can_exist,
    select_todos,
    update_todo,
    window_horizon,
)
from todo.schemas import TodoListQuery

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
    return None if row is None else StoredTodo._make(row)


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
    todo = StoredTodo(
        id=0,
        title=fields["title"],
        description=fields["description"],
        completed=fields["completed"],
        deadline_at=naive_utc(fields["deadline_at"]),
        created_at=now,
        updated_at=now,
        version=1,
    )
    return todo._replace(id=connection.insert(INSERT_TODO, todo._asdict()))


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
        return None if row is None else StoredTodo._make(row)
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


def _execute_list(connection: Connection, parameters: dict[str, Any]) -> list[tuple]:
    statement = select_todos(
        completed=parameters["completed"] is not None,
        window=parameters["horizon"] is not None,
        after=parameters["after"] is not None,
        limit=parameters["limit"] is not None,
    )
    return connection.all(statement, parameters)


def page(query: TodoListQuery) -> tuple[list[tuple], int | None]:
    """Return one page of todos, and the id to continue after when more follow."""
    parameters = _list_parameters(query) | {"limit": query.limit + 1}
    with connect() as connection:
        rows = _execute_list(connection, parameters)
    if len(rows) > query.limit:
        return rows[: query.limit], rows[query.limit - 1][0]
    return rows, None


def stream(query: TodoListQuery) -> Iterator[list[tuple]]:
    """Yield every matching todo in batches, read by id in pages of STREAM_BATCH.

    Paging by id keeps memory flat on every engine without server-side cursors. The first
    batch is read before this returns, so a database error still becomes a proper answer.
    """
    parameters = _list_parameters(query) | {"limit": STREAM_BATCH}
    with connect() as connection:
        first = _execute_list(connection, parameters)
    return _following_batches(db.engine, first, parameters)


def _following_batches(
    engine: Engine, batch: list[tuple], parameters: dict[str, Any]
) -> Iterator[list[tuple]]:
    yield batch
    # Later batches are read after the view has returned, each one only as the server is
    # ready to send it, on a connection held just for that query.
    while len(batch) == STREAM_BATCH:
        with Connection(engine) as connection:
            batch = _execute_list(connection, parameters | {"after": batch[-1][0]})
        yield batch
