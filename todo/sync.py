"""Incremental sync (GET /api/v1/changes): cursors, and the changes after one.

A cursor is a position in a list's numbered changes (todo.streams), and an answer holds
every change after it, read in one snapshot of the database: since a list's changes commit
in the order of their numbers, nothing committed later can hide behind a cursor.

A cursor is signed with the database's own secret, so one that this server did not issue
for this list, or that an import, a seed, an adoption or a change of AUTH mode made
meaningless, answers 410, never a wrong answer (docs/behaviour.md, "Sync").
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import bindparam
from werkzeug.exceptions import BadRequest, Gone

from todo import store, streams
from todo.driver import Statement, constant
from todo.models import db
from todo.models.sync import SyncState, SyncStream, Tombstone
from todo.models.todo import Todo
from todo.schemas import CURSOR_MAX_LENGTH

# Bytes of HMAC-SHA256 a cursor carries: forging one takes 2**128 tries.
_SIGNATURE_BYTES = 16
_POSITION = re.compile(rb"(\d{1,10})\.(\d{1,19})\.(\d{1,19})\.(\d{0,19})")


_STATE = SyncState.__table__
_STREAMS = SyncStream.__table__
_TOMBS = Tombstone.__table__
_TODOS = Todo.__table__
# An answer is read in one statement, in rows of the todos' columns and no others (on SQLite
# every column of every row costs): first the list's state, then the changes, each a todo's
# row or a deletion's (the todo's id, its stream and number, and no title).
_ROW_KEYS = store.ROW_KEYS
_ID = _ROW_KEYS.index("id")
_SEQ = _ROW_KEYS.index("change_seq")
# The state's row holds each of its values in one of the todos' columns, of the value's own
# type; its column that the answer is ordered by is 0, which puts it first, the others NULL.
_STATE_IN = {  # the state's field: (the todos' column that holds it, its value)
    "generation": ("version", _STATE.c.generation),
    "secret": ("title", _STATE.c.secret),
    "last_seq": ("change_stream", _STREAMS.c.last_seq),
    "pruned_seq": ("owner_id", _STREAMS.c.pruned_seq),
    "pending": ("completed", streams.HAS_PENDING),
}
_STATE_AT = {field: _ROW_KEYS.index(key) for field, (key, _) in _STATE_IN.items()}
# The largest number a cursor can hold that the database can compare (BIGINT).
_LARGEST = 2**63 - 1


def _null(key: str, dialect: str) -> sa.ColumnElement:
    """NULL in the todos' column `key`: typed on PostgreSQL, whose UNION takes a column's type
    from its first parts, where NULLs alone would make it text."""
    if dialect == "postgresql":
        return sa.cast(sa.null(), _TODOS.c[key].type)
    return sa.null()


def _state_first(order: str, dialect: str) -> sa.Select:
    """The state's row: the secret and generation that cursors are checked against, the
    list's counter and pruned number, and whether it has changes not numbered yet."""
    values = dict(_STATE_IN.values()) | {order: sa.literal_column("0")}
    return (
        sa.select(*(values.get(key, _null(key, dialect)).label(key) for key in _ROW_KEYS))
        .select_from(
            _STATE.outerjoin(
                _STREAMS, _STREAMS.c.stream == bindparam("stream", type_=sa.BigInteger)
            )
        )
        .where(_STATE.c.id == constant(streams.STATE_ID))
    )


def _answer(order: str, parts: list[sa.Select], dialect: str) -> Statement:
    """The state's row, then the parts' first rows in order of `order`: `limit` of them,
    `rows` in all.

    One statement sees one moment of the database on every engine, so the counter and the
    rows agree with each other without a transaction. The todos come last: SQLite merges
    the parts in pairs, from the first, and the many rows of the last pass one merge only.
    """
    if dialect != "sqlite":
        # SQLite merges the parts in order, each read by an index, and stops at the limit.
        # MariaDB would read every row of each part first, and PostgreSQL's plan, made once
        # for any `since` (todo.database), expects a third of the table after it: so each
        # part is bounded, and read by its index in order until its bound.
        parts = [
            part.order_by(part.selected_columns[_ROW_KEYS.index(order)]).limit(bindparam("limit"))
            for part in parts
        ]
    union = sa.union_all(_state_first(order, dialect), *parts)
    ordered = union.order_by(union.selected_columns[order])
    return Statement(ordered.limit(bindparam("rows")))


@cache
def _changes(scope: store.Scope, dialect: str) -> Statement:
    """Every change after `since`: the tombstones and the todos' latest."""
    as_todo = {"id": _TOMBS.c.todo_id, "change_stream": _TOMBS.c.stream, "change_seq": _TOMBS.c.seq}
    buried = sa.select(*(as_todo.get(key, _null(key, dialect)) for key in _ROW_KEYS)).where(
        _TOMBS.c.stream == bindparam("stream"), _TOMBS.c.seq > bindparam("since")
    )
    changed = store.owned(
        sa.select(*store.ROW_COLUMNS)
        .where(_TODOS.c.change_stream == bindparam("stream"))
        .where(_TODOS.c.change_seq > bindparam("since")),
        scope,
    )
    return _answer("change_seq", [buried, changed], dialect)


@cache
def _snapshot_page(scope: store.Scope, dialect: str) -> Statement:
    """The list by id after `after`, as the first sync takes it."""
    todos = store.owned(
        sa.select(*store.ROW_COLUMNS).where(_TODOS.c.id > bindparam("after")), scope
    )
    return _answer("id", [todos], dialect)


class Position(NamedTuple):
    """Where a client is: every change up to `seq` applied, and, while it is still taking
    its first snapshot, every todo up to id `after`."""

    generation: int
    stream: int
    seq: int
    after: int | None = None


class Changes(NamedTuple):
    """One answer: the changes in order, and where it ends. A change is a stored todo's row,
    or a deletion's: the todo's id, and None for its title (a todo always has one)."""

    changes: Sequence[tuple]
    cursor: str
    more: bool


@lru_cache(maxsize=4)
def _keyed(secret: str) -> "hmac.HMAC":
    """HMAC-SHA256 with the secret as its key, ready for a payload: copying it skips the
    key's preparation, which is most of the work on a cursor's few bytes."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _signature(secret: str, payload: bytes) -> bytes:
    mac = _keyed(secret).copy()
    mac.update(payload)
    return mac.digest()[:_SIGNATURE_BYTES]


def encode_cursor(position: Position, secret: str) -> str:
    after = "" if position.after is None else str(position.after)
    payload = f"{position.generation}.{position.stream}.{position.seq}.{after}".encode()
    return _encoded(payload + _signature(secret, payload))


def _encoded(signed: bytes) -> str:
    return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()


class _Cursor(NamedTuple):
    """A cursor as read, before its signature is checked."""

    position: Position
    payload: bytes
    signature: bytes

    def check(self, secret: str) -> Position:
        """Return the position if this database signed it; otherwise 410."""
        if not hmac.compare_digest(self.signature, _signature(secret, self.payload)):
            raise _gone("The cursor was not issued for this list by this server.")
        return self.position


def read_cursor(cursor: str) -> _Cursor:
    """Read a cursor (400 if it cannot be read); its signature is checked against the secret."""
    try:
        if len(cursor) > CURSOR_MAX_LENGTH or not cursor.isascii():
            raise ValueError
        signed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise _unreadable() from None
    payload, signature = signed[:-_SIGNATURE_BYTES], signed[-_SIGNATURE_BYTES:]
    fields = _POSITION.fullmatch(payload)
    # Only the one spelling the server writes: base64 leaves spare bits in the last
    # character, and a cursor with them changed was not issued by anyone.
    if fields is None or _encoded(signed) != cursor:
        raise _unreadable()
    generation, stream, seq, after = fields.groups()
    position = Position(int(generation), int(stream), int(seq), int(after) if after else None)
    return _Cursor(position, payload, signature)


def _unreadable() -> BadRequest:
    return BadRequest("The cursor in since cannot be read: send one this API returned.")


def _gone(why: str) -> Gone:
    return Gone(f"{why} Start again without since.")


def changes(owner: "store.Owner", since: str | None, limit: int) -> Changes:
    """Return the owner's changes after the cursor `since` (from nothing without one).

    One statement reads the state and the changes (or the snapshot's page) after the
    position the cursor names; the cursor is checked against the state it read before
    anything else is done, so an answer to a cursor that fails is never sent. If changes
    are pending, they are numbered and the statement runs again.
    """
    user = store.owner_id(owner)
    stream = streams.stream_for(user)
    streams.ensure_started()
    cursor = read_cursor(since) if since else None
    # Until it is checked, the position only bounds the read: kept to what the columns hold.
    asked = cursor.position if cursor else Position(0, stream, 0, after=0)
    values = {
        "stream": stream,
        "owner": user,
        "limit": limit + 1,
        "rows": limit + 2,
        "since": min(asked.seq, _LARGEST),
        "after": None if asked.after is None else min(asked.after, store.MAX_ID),
    }
    scope, dialect = store.scope_of(user), db.engine.dialect.name
    if asked.after is None:
        statement = _changes(scope, dialect)
    else:
        statement = _snapshot_page(scope, dialect)
    rows = _read(statement, values)
    state = _state(rows[0])
    position = _checked(cursor, state, stream)
    # Changes that committed before this call but have no number yet are numbered, then
    # read with the others; a snapshot's first page takes the counter above them. (Later
    # pages hold each todo as it is; what changed since the first is numbered above it.)
    if state.pending and (asked.after is None or cursor is None):
        streams.number_pending(stream)
        rows = _read(statement, values)
        state = _state(rows[0])
        position = _checked(cursor, state, stream)
    rows = rows[1:]
    if position.after is not None:
        found, following = _first_snapshot(rows, position, limit)
    else:
        found, following = _changes_since(rows, position, limit, state.last_seq)
    streams.prune_now_and_then()
    more = following.after is not None or following.seq < state.last_seq
    return Changes(found, encode_cursor(following, state.secret), more)


class _State(NamedTuple):
    """The list's state, as the answer's first row has it."""

    generation: int
    secret: str
    last_seq: int
    pruned_seq: int
    # Whether the list has changes not numbered yet.
    pending: bool


_state_values = itemgetter(*(_STATE_AT[field] for field in _State._fields))


def _state(row: tuple) -> _State:
    """Read the state's row."""
    generation, secret, last_seq, pruned_seq, pending = _state_values(row)
    # A list without a counter yet has none of its values.
    return _State(generation, secret, last_seq or 0, pruned_seq or 0, bool(pending))


def _checked(cursor: _Cursor | None, state: _State, stream: int) -> Position:
    """Return where the answer starts: the cursor's position if it holds for the list in
    this state (410 otherwise), or the start of a first sync."""
    if cursor is None:
        return Position(state.generation, stream, state.last_seq, after=0)
    position = cursor.check(state.secret)
    if position.generation != state.generation or position.stream != stream:
        raise _gone("The cursor is not for this list as it is now.")
    if position.seq > state.last_seq:
        raise _gone("The cursor is ahead of this list.")
    if position.seq < state.pruned_seq:
        raise _gone("Deletions after this cursor are no longer remembered.")
    return position


def _read(statement: Statement, values: dict[str, Any]) -> Sequence[tuple]:
    """Run one of the answer's statements; return its rows, the state's first."""
    with store.connect() as connection:
        rows = connection.all(statement, values)
    if not rows:
        # The state row went while the service ran (tables emptied by hand): made anew,
        # with a new secret, so every cursor of before is a 410.
        streams.ensure_started(again=True)
        with store.connect() as connection:
            rows = connection.all(statement, values)
        assert rows, "ensure_started makes the state row"
    return rows


def _first_snapshot(
    rows: Sequence[tuple], position: Position, limit: int
) -> tuple[Sequence[tuple], Position]:
    """Return a page of the first snapshot, in id order, and the position after it."""
    found = rows[:limit]
    if len(rows) > limit:
        return found, position._replace(after=rows[limit - 1][_ID])
    # The snapshot is complete; what changed since it began comes next.
    return found, position._replace(after=None)


def _changes_since(
    rows: Sequence[tuple], position: Position, limit: int, last_seq: int
) -> tuple[Sequence[tuple], Position]:
    """Return the first changes after the position, in order, and the position after them.

    A todo's row holds only its latest change, so each todo comes at most once.
    """
    found = rows[:limit]
    if len(rows) > limit:
        return found, position._replace(seq=rows[limit - 1][_SEQ])
    # Every change up to the counter is in this answer, or was superseded by one that is.
    return found, position._replace(seq=last_seq)
