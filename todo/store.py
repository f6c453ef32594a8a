"""The API's todos in the database: the row, its prebuilt statements, and the reads and writes.

Each write is one transaction, committed here. The row's shape is derived from the Todo model,
so a column added there (and in a migration) is read and written by every statement below.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy import bindparam
from werkzeug.exceptions import NotFound

from todo import streams
from todo.driver import Connection, Statement
from todo.errors import StalePrecondition
from todo.models import UTCDateTime, db, naive_utc, utcnow
from todo.models.todo import MAX_ID, MAX_VERSION, Todo
from todo.models.user import Token, live_token

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
    owner_id = property(itemgetter(ROW_KEYS.index("owner_id")))
    _updated_at = property(itemgetter(ROW_KEYS.index("updated_at")))

    @property
    def updated_at(self) -> datetime:
        """Return when the todo last changed, as naive UTC."""
        value = self._updated_at
        return datetime.fromisoformat(value) if isinstance(value, str) else naive_utc(value)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "StoredTodo":
        """Make a row of a value for each column, by name."""
        return cls(values[key] for key in ROW_KEYS)


class Bearer(NamedTuple):
    """A request's owner known by the digest of its bearer token, not yet looked up.

    Each statement finds the owner itself, with a subquery on the token's digest: a request
    that finds its todo runs one statement, token check included. When a statement finds
    nothing, or an insert needs the owner's id, `confirm` looks the token up: it returns the
    user's id, or raises the 401 of a token that names no one.
    """

    digest: str
    confirm: Callable[[], int]


# Whose todos a request may touch: everyone's (None: AUTH none, one shared list), a user's
# by id, or a user's by bearer token. Scoped statements carry the condition in their WHERE
# clause, so that no request can reach another user's todo, whatever it asks for.
Owner = int | Bearer | None
_TOKEN_OWNER = sa.select(Token.user_id).where(live_token(bindparam("digest"))).scalar_subquery()
OWNED = {
    "shared": None,
    "user": Todo.owner_id == bindparam("owner"),
    "bearer": Todo.owner_id == _TOKEN_OWNER,
}
Scope = Literal["shared", "user", "bearer"]


def scope_of(owner: Owner) -> Scope:
    """Tell which condition scopes the owner's statements."""
    if owner is None:
        return "shared"
    return "bearer" if isinstance(owner, Bearer) else "user"


def owned(statement: Any, scope: Scope) -> Any:
    """Add the scope's condition to a statement: only the owner's todos."""
    condition = OWNED[scope]
    return statement if condition is None else statement.where(condition)


def owner_values(owner: Owner) -> dict[str, Any]:
    if isinstance(owner, Bearer):
        return {"digest": owner.digest}
    return {"owner": owner}


def owner_id(owner: Owner) -> int | None:
    """Return the owner's user id (None for the shared list), looking a token up if need be."""
    return owner.confirm() if isinstance(owner, Bearer) else owner


def found_nothing(owner: Owner) -> None:
    # Nothing found may mean a token that names no one: that is a 401, not a missing todo.
    if isinstance(owner, Bearer):
        owner.confirm()


# Built once per shape; each request only binds its values (see todo.driver).
@cache
def select_todo(scope: Scope, lock: bool = False) -> Statement:
    """Select one todo by id; locked until the transaction ends with `lock`.

    SQLite, which has no row locks, ignores FOR UPDATE.
    """
    statement = owned(sa.select(*ROW_COLUMNS).where(Todo.id == bindparam("todo_id")), scope)
    return Statement(statement.with_for_update(of=Todo) if lock else statement)


@cache
def delete_todo(scope: Scope) -> Statement:
    """Delete one todo by id, only at `version`."""
    statement = sa.delete(Todo).where(
        Todo.id == bindparam("todo_id"), Todo.version == bindparam("version")
    )
    return Statement(owned(statement, scope))


INSERT_TODO = Statement(
    sa.insert(Todo)
    .values({column.key: bindparam(column.key) for column in ROW_COLUMNS if not column.primary_key})
    .return_defaults(Todo.id)
)


# The columns that mark a change for sync (todo.streams); every write sets them.
CHANGE_COLUMNS = frozenset({"change_stream", "change_seq"})

# The version after `version`: one more, back to 1 after the largest a column can hold, so
# that a todo never stops changing its ETag (docs/behaviour.md). The ORM's is Todo's own.
NEXT_VERSION = sa.case((Todo.version < MAX_VERSION, Todo.version + 1), else_=1)


@cache
def update_todo(
    fields: frozenset[str], scope: Scope, checks_version: bool, checks_date: bool, returning: bool
) -> Statement:
    """Update the given fields of a todo, only at `version` and if unchanged since `since`.

    Comparing in the WHERE clause makes a precondition and the write one atomic step on
    every engine. With `returning`, the statement also reads the todo back as it is after
    the update (SQLite and PostgreSQL; MariaDB cannot).
    """
    statement = (
        sa.update(Todo)
        .where(Todo.id == bindparam("todo_id"))
        .values(
            {name: bindparam(name, type_=Todo.__table__.c[name].type) for name in fields}
            | {"version": NEXT_VERSION, "updated_at": bindparam("now", type_=UTCDateTime())}
            | {"change_stream": bindparam("change_stream"), "change_seq": bindparam("change_seq")}
        )
    )
    statement = owned(statement, scope)
    if checks_version:
        statement = statement.where(Todo.version == bindparam("version"))
    if checks_date:
        statement = statement.where(Todo.updated_at <= bindparam("since", type_=UTCDateTime()))
    if returning:
        statement = statement.returning(*ROW_COLUMNS)
    return Statement(statement)


@dataclass(frozen=True)
class Preconditions:
    """What a write asks of the todo's current state (RFC 9110 §13.1), read from its headers.

    `match`: the versions If-Match accepts (None when any will do: no If-Match, or `*`).
    `none_match`: the versions If-None-Match refuses; `none_match_any` for `If-None-Match: *`.
    `unmodified_since`: If-Unmodified-Since as naive UTC (None when absent, ignored or
    invalid).
    """

    match: frozenset[int] | None = None
    none_match: frozenset[int] = frozenset()
    none_match_any: bool = False
    unmodified_since: datetime | None = None

    def refusal(self, todo: StoredTodo) -> str | None:
        """Say why the todo as it is fails a precondition; None when it passes them all."""
        # In RFC 9110's order (§13.2.2); If-Unmodified-Since counts only without If-Match.
        if self.match is not None and todo.version not in self.match:
            return "The todo has changed since the version in If-Match."
        if self.unmodified_since is not None and todo.updated_at > self.unmodified_since:
            return "The todo has changed since the date in If-Unmodified-Since."
        if self.none_match_any:
            return "The todo exists, and If-None-Match is *."
        if todo.version in self.none_match:
            return "The todo's current version is in If-None-Match."
        return None

    @property
    def can_pass(self) -> bool:
        """Tell whether a todo could pass them (`If-None-Match: *` or no version: never)."""
        return not self.none_match_any and self.match != frozenset()

    @property
    def fit_one_statement(self) -> bool:
        """Tell whether the WHERE clause of the update can check them all."""
        return not self.none_match and (self.match is None or len(self.match) == 1)


def can_exist(todo_id: int) -> bool:
    """Tell whether an id is within the range the database can hold."""
    return 1 <= todo_id <= MAX_ID


def connect() -> Connection:
    """Return the database connection for one transaction, to use in a `with` block."""
    return Connection(db.engine)


def _find(
    connection: Connection, todo_id: int, owner: Owner, lock: bool = False
) -> StoredTodo | None:
    if not can_exist(todo_id):
        return None
    # SQLite ignores FOR UPDATE; its transactions take the write lock up front instead.
    statement = select_todo(scope_of(owner), lock)
    row = connection.first(statement, {"todo_id": todo_id, **owner_values(owner)})
    return None if row is None else StoredTodo(row)


def _not_found(todo_id: int, owner: Owner) -> NotFound:
    found_nothing(owner)
    return NotFound(f"There is no todo with id {todo_id}." if todo_id >= 0 else None)


def get(todo_id: int, owner: Owner) -> StoredTodo:
    """Return the owner's todo with this id, or raise 404."""
    with connect() as connection:
        todo = _find(connection, todo_id, owner)
    if todo is None:
        raise _not_found(todo_id, owner)
    return todo


def insert(connection: Connection, fields: dict[str, Any], owner: Owner) -> StoredTodo:
    """Insert a new todo of this owner in the connection's transaction, without committing.

    The transaction must have begun (`Connection.begin`). The todo is a pending change of
    its owner's list (todo.streams).
    """
    user = owner_id(owner)
    now = naive_utc(utcnow())
    # Naive UTC, as the driver returns stored timestamps, so that the encoders write them alike.
    values = fields | {
        "deadline_at": naive_utc(fields["deadline_at"]),
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "owner_id": user,
        **streams.pending_change(user),
    }
    return StoredTodo.from_values(values | {"id": connection.insert(INSERT_TODO, values)})


def create(fields: dict[str, Any], owner: Owner) -> StoredTodo:
    """Store a new todo of this owner."""
    streams.ensure_started()
    with connect() as connection:
        connection.begin(lone=True)
        todo = insert(connection, fields, owner)
        connection.commit()
    return todo


def update(
    todo_id: int, owner: Owner, changes: dict[str, Any], preconditions: Preconditions
) -> StoredTodo:
    """Apply a partial update, only to a todo that meets the preconditions.

    The work is the same however many tags the preconditions name: one UPDATE whose WHERE
    clause checks them, or, for those it cannot, a locked read and one UPDATE.
    """
    streams.ensure_started()
    with connect() as connection:
        if changes and can_exist(todo_id) and preconditions.can_pass:
            # The owner's id, the token looked up once: the change is one of their list's.
            user = owner_id(owner)
            one_statement = preconditions.fit_one_statement and connection.dialect.update_returning
            connection.begin(lone=one_statement)
            changes = changes | streams.pending_change(user)
            if preconditions.fit_one_statement:
                todo = _update_where(connection, todo_id, user, changes, preconditions)
            else:
                todo = _update_locked(connection, todo_id, user, changes, preconditions)
            if todo is not None:
                connection.commit()
                return todo
        todo = _find(connection, todo_id, owner)
    if todo is None:
        raise _not_found(todo_id, owner)
    refusal = preconditions.refusal(todo)
    if refusal is not None:
        raise _stale(refusal, todo)
    if changes:
        # The guarded update matched nothing, yet the todo passes now: it changed meanwhile.
        raise _stale("The todo changed while the request was made.", todo)
    return todo


def _update_where(
    connection: Connection,
    todo_id: int,
    owner: Owner,
    changes: dict[str, Any],
    preconditions: Preconditions,
) -> StoredTodo | None:
    """Update in one statement that checks the preconditions; None if it matched nothing."""
    (version,) = preconditions.match or (None,)
    since = preconditions.unmodified_since
    returning = connection.dialect.update_returning
    statement = update_todo(
        frozenset(changes) - CHANGE_COLUMNS,
        scope_of(owner),
        version is not None,
        since is not None,
        returning,
    )
    values = {
        **changes,
        "todo_id": todo_id,
        **owner_values(owner),
        "now": utcnow(),
        "version": version,
        "since": since,
    }
    return _update_one(connection, statement, values, returning, owner)


def _update_locked(
    connection: Connection,
    todo_id: int,
    owner: Owner,
    changes: dict[str, Any],
    preconditions: Preconditions,
) -> StoredTodo | None:
    """Read the todo locked, check the preconditions and update it; None if it is missing."""
    todo = _find_locked(connection, todo_id, owner, preconditions)
    if todo is None:
        return None
    returning = connection.dialect.update_returning
    statement = update_todo(
        frozenset(changes) - CHANGE_COLUMNS, scope_of(owner), True, False, returning
    )
    values = {
        **changes,
        "todo_id": todo_id,
        **owner_values(owner),
        "now": utcnow(),
        "version": todo.version,
    }
    return _update_one(connection, statement, values, returning, owner)


def _find_locked(
    connection: Connection, todo_id: int, owner: Owner, preconditions: Preconditions
) -> StoredTodo | None:
    """Read the todo locked in the transaction and check the preconditions (412)."""
    todo = _find(connection, todo_id, owner, lock=True)
    if todo is not None:
        refusal = preconditions.refusal(todo)
        if refusal is not None:
            raise _stale(refusal, todo)
    return todo


def _stale(refusal: str, todo: StoredTodo) -> StalePrecondition:
    """A 412 with the todo's current tag: only ever for a todo the owner may see."""
    # Imported here: todo.views.http, which owns the tag's format, reads this module.
    from todo.views.http import etag_for

    return StalePrecondition(refusal, etag_for(todo.id, todo.version))


def _update_one(
    connection: Connection,
    statement: Statement,
    values: dict[str, Any],
    returning: bool,
    owner: Owner,
) -> StoredTodo | None:
    """Run an update of one todo; return the todo as it is now, or None if none matched."""
    if returning:
        row = connection.first(statement, values)
        return None if row is None else StoredTodo(row)
    if connection.execute(statement, values) == 1:
        return _find(connection, values["todo_id"], owner)
    return None


def delete(todo_id: int, owner: Owner, preconditions: Preconditions) -> StoredTodo | None:
    """Delete the owner's todo if it meets the preconditions; return it as it was, or None."""
    streams.ensure_started()
    user = owner_id(owner)
    with connect() as connection:
        connection.begin()
        # Locked from the read to the delete, the todo cannot change in between however
        # many clients update it, so the answer is exactly what was deleted.
        todo = _find_locked(connection, todo_id, user, preconditions)
        if todo is None:
            return None
        values = {"todo_id": todo_id, "owner": user, "version": todo.version}
        connection.execute(delete_todo(scope_of(user)), values)
        streams.bury(connection, streams.stream_for(user), todo_id)
        connection.commit()
    return todo
