"""Lists of todos: the statements that read them, and how a filtered list is read.

A list comes in id order. Read unfiltered, that is a walk of the primary key. A filtered list
can be read two ways: walk by id and keep the todos that match, which costs little when many
match; or find the matches through an index on the filters and sort their ids, which costs
little when few do (docs/design.md has figures). Which costs less depends on how many todos
match, which only the data knows: no engine's planner estimates it well for a state and a
deadline together. So a filtered list first counts its matches through the index, reading at
most one batch's worth of index entries, and reads through the index only when they all fit
in the batch; with more, it walks. A list keeps its choice for every batch it streams.
"""

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Engine, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from todo.driver import Connection, Statement
from todo.models import db, utcnow
from todo.models.todo import MAX_ID, OPEN_BY_DEADLINE, OWNED_OPEN_BY_DEADLINE, Todo
from todo.schemas import TodoListQuery
from todo.store import (
    ROW_COLUMNS,
    Bearer,
    Owner,
    Scope,
    StoredTodo,
    connect,
    found_nothing,
    owned,
    owner_values,
    scope_of,
)

# Rows per query while streaming a long list: bounds memory, whatever the list's length.
STREAM_BATCH = 1000
# A list reads through its filters' index when at most this many batches' worth of todos
# match. With more, each batch would read them all from the index again: the walk costs less
# (a list of 10,000 todos that 2,500 match, streamed, answered 0.63 as fast through the index).
INDEX_BATCHES = 1

# The indexes that find a filter's matches, by MariaDB's names (todo.models.todo), and the
# ones a walk must not use (SQLite's are kept out by `unindexed`).
_BY_DEADLINE = "ix_todos_deadline_at"
_OPEN = str(OPEN_BY_DEADLINE.name)
_OWNED_OPEN = str(OWNED_OPEN_BY_DEADLINE.name)
_FILTER_INDEXES = (_BY_DEADLINE, _OPEN, _OWNED_OPEN)


class Shape(NamedTuple):
    """What a list query gives, which decides its statements: each shape's are built once."""

    scope: Scope
    completed: bool | None
    window: bool
    after: bool


def filter_index(shape: Shape) -> str | None:
    """Return the index that finds few matches of these filters among many todos, if any.

    Only open todos are indexed by state (todo.models.todo): the completed ones are the many
    that pile up, and a filter on them walks. A user's window alone walks too, through the
    user's todos. The name is MariaDB's, for its index hint; SQLite's and PostgreSQL's
    planners find theirs, which hold open todos only, by themselves.
    """
    if shape.completed is False:
        return _OPEN if shape.scope == "shared" else _OWNED_OPEN
    if shape.completed is None and shape.window and shape.scope == "shared":
        return _BY_DEADLINE
    return None


class unindexed(FunctionElement):  # noqa: N801  # named like SQLAlchemy's own SQL functions
    """A column that the engine may compare but not look up in an index.

    SQLite has no index hints that SQLAlchemy writes; a unary plus, its documented way, keeps
    its planner from using the column's index. Elsewhere it is the column itself.
    """

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _column_itself(element: unindexed, compiler, **kw) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unary_plus(element: unindexed, compiler, **kw) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def _filters(shape: Shape, through_index: bool) -> list:
    """Return the conditions of the shape's filters, for a read through the filters' index
    (the id in no index: SQLite would take the user's todos by id instead) or for a walk by
    id (the filters in no index).

    The state is written into the statement, not bound: the open todos' index holds only
    open ones, and an engine uses it only for a statement that says so itself.
    """
    filtered, by_id = (_as_is, unindexed) if through_index else (unindexed, _as_is)
    conditions = []
    if shape.completed is not None:
        state = filtered(Todo.completed)
        conditions.append(state if shape.completed else ~state)
    if shape.window:
        deadline = filtered(Todo.deadline_at)
        conditions += [deadline.is_not(None), deadline <= bindparam("horizon")]
    if shape.after:
        conditions.append(by_id(Todo.id) > bindparam("after"))
    return conditions


def _as_is(column: Any) -> Any:
    return column


def _hint(statement: Any, hint: str) -> Any:
    """Give MariaDB an index hint; the other engines take none."""
    return statement.with_hint(Todo, hint, "mysql")


# Built once per shape; each request only binds its values (see todo.driver).
@cache
def select_todos(shape: Shape, through_index: bool = False) -> Statement:
    """Select the todos matching the shape's filters, ordered by id.

    Takes the owner's parameters, `horizon` (latest deadline), `after` and `limit`. Walks by
    id, never through the filters' index, unless `through_index`.
    """
    if through_index:
        return Statement(_through_index(shape))
    statement = sa.select(*ROW_COLUMNS).where(*_filters(shape, through_index=False))
    statement = owned(statement, shape.scope)
    if shape.completed is not None or shape.window:
        statement = _hint(statement, f"IGNORE INDEX ({', '.join(_FILTER_INDEXES)})")
    return Statement(statement.order_by(Todo.id).limit(bindparam("limit")))


def _through_index(shape: Shape) -> sa.Select:
    index = filter_index(shape)
    assert index is not None, "only filters with an index are read through it"
    matching = owned(sa.select(Todo.id).where(*_filters(shape, through_index=True)), shape.scope)
    # PostgreSQL's planner misjudges how few todos match both filters and would walk by id;
    # a materialized CTE is planned alone, without the ORDER BY id that tempts it.
    matching = (
        _hint(matching, f"FORCE INDEX ({index})")
        .cte("matching")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    # Sorted as values, not by an index's order, so that SQLite's planner, which merges the
    # CTE into this query, keeps reading the filters' index.
    first_ids = sa.select(matching.c.id).order_by(unindexed(matching.c.id))
    batch = first_ids.limit(bindparam("limit")).subquery("batch")
    return sa.select(*ROW_COLUMNS).join_from(Todo, batch, Todo.id == batch.c.id).order_by(Todo.id)


@cache
def count_matches(shape: Shape) -> Statement:
    """Count the todos matching the shape's filters through their index, up to `bound`."""
    index = filter_index(shape)
    assert index is not None, "only filters with an index are counted"
    matches: Any = sa.select(sa.literal_column("1"))
    matches = matches.where(*_filters(shape, through_index=True))
    # In the index's order (every filter index ends with the deadline, after equalities), so
    # that no planner prefers the table, nor sorts the matches.
    matches = _hint(owned(matches, shape.scope), f"FORCE INDEX ({index})")
    matches = matches.order_by(Todo.deadline_at).limit(bindparam("bound"))
    return Statement(sa.select(sa.func.count()).select_from(matches.subquery("matches")))


def window_horizon(days: int) -> datetime:
    """Return the latest deadline within a window of days from now."""
    return utcnow() + timedelta(days=days)


class _List(NamedTuple):
    """A list query ready to run: its shape, its values, and whether it reads through an index."""

    shape: Shape
    values: dict[str, Any]
    through_index: bool = False


def _prepared(query: TodoListQuery, owner: Owner, limit: int) -> _List:
    shape = Shape(
        scope=scope_of(owner),
        completed=query.completed,
        window=query.window is not None,
        after=query.after is not None,
    )
    values = {
        **owner_values(owner),
        "horizon": None if query.window is None else window_horizon(query.window),
        "after": None if query.after is None else min(max(query.after, 0), MAX_ID),
        "limit": limit,
    }
    return _List(shape, values)


def _choose(connection: Connection, todos: _List) -> _List:
    """Choose how to read the list: through its filters' index when few todos match."""
    if filter_index(todos.shape) is None:
        return todos
    bound = INDEX_BATCHES * todos.values["limit"]
    counting = todos.values | {"bound": bound + 1}
    [(matches,)] = connection.all(count_matches(todos.shape), counting)
    return todos._replace(through_index=matches <= bound)


def _read(connection: Connection, todos: _List) -> Sequence[tuple]:
    statement = select_todos(todos.shape, through_index=todos.through_index)
    return connection.all(statement, todos.values)


def page(query: TodoListQuery, owner: Owner) -> tuple[Sequence[tuple], int | None]:
    """Return one page of the owner's todos, and the id to continue after if more follow."""
    limit = query.limit
    assert limit is not None, "a page is what a limit asks for; without one, stream()"
    with connect() as connection:
        # One more todo than asked for tells whether a next page follows.
        todos = _choose(connection, _prepared(query, owner, limit + 1))
        rows = _read(connection, todos)
    if not rows:
        found_nothing(owner)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1][0]
    return rows, None


def stream(query: TodoListQuery, owner: Owner) -> Iterator[Sequence[tuple]]:
    """Yield every matching todo of the owner in batches, read by id in pages of STREAM_BATCH.

    Paging by id keeps memory flat on every engine without server-side cursors. The first
    batch is read before this returns, so a database error still becomes a proper answer.
    """
    with connect() as connection:
        todos = _choose(connection, _prepared(query, owner, STREAM_BATCH))
        first = _read(connection, todos)
    if not first:
        found_nothing(owner)
    elif isinstance(owner, Bearer):
        # The token was good when the list began: the rest of it is that user's, by id, even
        # if the token is revoked while the list is being sent.
        user = StoredTodo(first[0]).owner_id
        todos = todos._replace(
            shape=todos.shape._replace(scope=scope_of(user)),
            values=todos.values | {"owner": user},
        )
    return _following_batches(db.engine, first, todos)


def _following_batches(
    engine: Engine, batch: Sequence[tuple], todos: _List
) -> Iterator[Sequence[tuple]]:
    yield batch
    # Later batches are read after the view has returned, each one only as the server is
    # ready to send it, on a connection held just for that query.
    following = todos._replace(shape=todos.shape._replace(after=True))
    while len(batch) == STREAM_BATCH:
        values = following.values | {"after": batch[-1][0]}
        with Connection(engine) as connection:
            batch = _read(connection, following._replace(values=values))
        yield batch
