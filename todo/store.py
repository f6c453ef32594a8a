"""Reading and writing todos for the views: each write is one transaction, committed here."""

from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import Row
from werkzeug.exceptions import NotFound, PreconditionFailed, ServiceUnavailable

from todo.models import db
from todo.models.todo import Todo, can_exist, delete_todo, select_todo, select_todos, update_todo
from todo.schemas import TodoListQuery

# Rows fetched per round-trip while streaming a long list.
STREAM_BATCH = 500
# Attempts at deleting a todo that other clients keep changing underneath.
DELETE_ATTEMPTS = 5


def find(todo_id: int) -> Row | None:
    """Return the todo with this id, or None."""
    if not can_exist(todo_id):
        return None
    return db.session.execute(select_todo(todo_id)).first()


def get(todo_id: int) -> Row:
    """Return the todo with this id, or raise 404."""
    todo = find(todo_id)
    if todo is None:
        raise NotFound(
            f"There is no todo with id {todo_id}." if todo_id >= 0 else "There is no such todo."
        )
    return todo


def create(fields: dict) -> Todo:
    """Store a new todo."""
    todo = Todo(**fields)
    db.session.add(todo)
    db.session.commit()
    return todo


def _reject_stale(todo: Row, versions: Iterable[int] | None) -> None:
    if versions is not None and todo.version not in versions:
        raise PreconditionFailed("The todo has changed since the version in If-Match.")


def update(todo_id: int, changes: dict, versions: set[int] | None) -> Row:
    """Apply a partial update, only to a version the client names in If-Match (if any)."""
    if not changes:
        todo = get(todo_id)
        _reject_stale(todo, versions)
        return todo
    if (
        can_exist(todo_id)
        and db.session.execute(update_todo(todo_id, changes, versions)).rowcount == 1
    ):
        todo = get(todo_id)
        db.session.commit()
        return todo
    db.session.rollback()
    _reject_stale(get(todo_id), versions)
    # The todo changed between the failed update and this read.
    raise PreconditionFailed("The todo has changed since the version in If-Match.")


def delete(todo_id: int, versions: set[int] | None) -> Row | None:
    """Delete a todo and return it as it was; None when there was none."""
    for _ in range(DELETE_ATTEMPTS):
        todo = find(todo_id)
        if todo is None:
            return None
        _reject_stale(todo, versions)
        # The delete names the version read, so a change in between is noticed, not lost.
        if db.session.execute(delete_todo(todo_id, todo.version)).rowcount == 1:
            db.session.commit()
            return todo
        db.session.rollback()
    raise ServiceUnavailable("The todo kept changing while it was being deleted; try again.")


def page(query: TodoListQuery) -> tuple[list[Row], bool]:
    """Return one page of todos and whether more follow."""
    rows = db.session.execute(todos_statement(query, extra=1)).all()
    return rows[: query.limit], len(rows) > query.limit


class RowStream:
    """Every matching todo, read in batches on a connection of its own.

    The rows are read while the response is being sent, after the request's session is gone,
    so the stream owns its connection and gives it back when the server closes the response.
    """

    def __init__(self, query: TodoListQuery):
        self._connection = db.engine.connect()
        try:
            statement = todos_statement(query).execution_options(yield_per=STREAM_BATCH)
            self._result = self._connection.execute(statement)
        except BaseException:
            self._connection.close()
            raise

    def batches(self) -> Iterator[Sequence[Row]]:
        """Yield the rows in batches, fetching each from the database when it is needed."""
        try:
            yield from self._result.partitions()
        finally:
            self.close()

    def close(self) -> None:
        """Give the connection back, whether or not every row was read."""
        self._result.close()
        self._connection.close()


def todos_statement(query: TodoListQuery, extra: int = 0):
    """Build the list statement from the query, fetching `extra` rows past the limit."""
    return select_todos(
        completed=query.completed,
        window=query.window,
        after=query.after,
        limit=None if query.limit is None else query.limit + extra,
    )
