"""Reading and writing todos for the views: each write is one transaction, committed here."""

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine
from werkzeug.exceptions import NotFound, PreconditionFailed

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


def _connection() -> Connection:
    # The session's connection: reads and writes of one request share its transaction.
    return db.session.connection()


def find(todo_id: int, lock: bool = False) -> StoredTodo | None:
    """Return the todo with this id, or None; `lock` keeps it unchanged until the commit."""
    if not can_exist(todo_id):
        return None
    connection = _connection()
    if not lock:
        return connection.execute(SELECT_TODO, {"todo_id": todo_id}).first()
    if (
        connection.dialect.name == "sqlite"
        and not connection.connection.dbapi_connection.in_transaction
    ):
        # SQLite has no row locks and ignores FOR UPDATE: its one write lock, taken before
        # the read, does the same job (readers carry on meanwhile, in WAL mode).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    return connection.execute(SELECT_TODO_FOR_UPDATE, {"todo_id": todo_id}).first()


def get(todo_id: int) -> StoredTodo:
    """Return the todo with this id, or raise 404."""
    todo = find(todo_id)
    if todo is None:
        raise NotFound(f"There is no todo with id {todo_id}." if todo_id >= 0 else None)
    return todo


def insert(fields: dict[str, Any]) -> StoredTodo:
    """Insert a new todo in the current transaction, without committing it."""
    now = utcnow()
    values = {**fields, "created_at": now, "updated_at": now, "version": 1}
    todo_id = _connection().execute(INSERT_TODO, values).inserted_primary_key[0]
    stored_now = naive_utc(now)
    return StoredTodo(
        id=todo_id,
        title=values["title"],
        description=values["description"],
        completed=values["completed"],
        deadline_at=naive_utc(values["deadline_at"]),
        created_at=stored_now,
        updated_at=stored_now,
        version=1,
    )


def create(fields: dict[str, Any]) -> StoredTodo:
    """Store a new todo."""
    todo = insert(fields)
    db.session.commit()
    return todo


def _reject_stale(todo: StoredTodo, versions: set[int] | None) -> None:
    if versions is not None and todo.version not in versions:
        raise PreconditionFailed("The todo has changed since the version in If-Match.")


def update(todo_id: int, changes: dict[str, Any], versions: set[int] | None) -> StoredTodo:
    """Apply a partial update, only to a version the client names in If-Match (if any)."""
    if not changes:
        todo = get(todo_id)
        _reject_stale(todo, versions)
        return todo
    statement = update_todo(frozenset(changes), versions is not None)
    parameters = {**changes, "todo_id": todo_id, "now": utcnow(), "versions": list(versions or ())}
    if can_exist(todo_id) and _connection().execute(statement, parameters).rowcount == 1:
        todo = get(todo_id)
        db.session.commit()
        return todo
    db.session.rollback()
    _reject_stale(get(todo_id), versions)
    # The todo changed between the failed update and this read.
    raise PreconditionFailed("The todo has changed since the version in If-Match.")


def delete(todo_id: int, versions: set[int] | None) -> StoredTodo | None:
    """Delete a todo and return it as it was; None when there was none."""
    # Locked from the read to the delete, the todo cannot change in between however many
    # clients update it, so the answer is exactly what was deleted.
    todo = find(todo_id, lock=True)
    if todo is not None and (versions is None or todo.version in versions):
        _connection().execute(DELETE_TODO, {"todo_id": todo_id, "version": todo.version})
        db.session.commit()
        return todo
    # Let go of the lock now rather than when the request ends.
    db.session.rollback()
    if todo is not None:
        _reject_stale(todo, versions)
    return None


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
    result = connection.execute(statement, parameters)
    # The driver's own tuples: for a long list, building SQLAlchemy's Row objects and
    # converting their values would cost more than the query and the JSON together.
    # schemas.todos_json reads them as stored (see StoredTodo's columns).
    rows = result.cursor.fetchall()
    result.close()
    return rows


def page(query: TodoListQuery) -> tuple[list[tuple], int | None]:
    """Return one page of todos, and the id to continue after when more follow."""
    parameters = _list_parameters(query) | {"limit": query.limit + 1}
    rows = _execute_list(_connection(), parameters)
    if len(rows) > query.limit:
        return rows[: query.limit], rows[query.limit - 1][0]
    return rows, None


def stream(query: TodoListQuery) -> Iterator[list[tuple]]:
    """Yield every matching todo in batches, read by id in pages of STREAM_BATCH.

    Paging by id keeps memory flat on every engine without server-side cursors. The first
    batch is read before this returns, so a database error still becomes a proper answer.
    """
    parameters = _list_parameters(query) | {"limit": STREAM_BATCH}
    first = _execute_list(_connection(), parameters)
    return _following_batches(db.engine, first, parameters)


def _following_batches(
    engine: Engine, batch: list[tuple], parameters: dict[str, Any]
) -> Iterator[list[tuple]]:
    yield batch
    # Later batches are read after the view has returned and its session is gone, on a
    # connection of their own, each one only as the server is ready to send it.
    while len(batch) == STREAM_BATCH:
        with engine.connect() as connection:
            batch = _execute_list(connection, parameters | {"after": batch[-1][0]})
        yield batch
