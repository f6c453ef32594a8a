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
from functools import cache
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import bindparam
from werkzeug.exceptions import BadRequest, Gone

from todo import store, streams
from todo.driver import Connection, Statement
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
_SEQ = [column.key for column in _TODOS.columns].index("change_seq")


class _Reads(NamedTuple):
    state: Statement
    changed_todos: dict[store.Scope, Statement]
    tombstones: Statement
    snapshot_page: dict[store.Scope, Statement]


@cache
def _reads() -> _Reads:
    """Build the statements of GET /changes, once (todo.store builds its own first)."""
    scopes: tuple[store.Scope, ...] = ("shared", "user")
    changed_todos = (
        sa.select(*store.ROW_COLUMNS)
        .where(_TODOS.c.change_stream == bindparam("stream"))
        .where(_TODOS.c.change_seq > bindparam("since"))
        .order_by(_TODOS.c.change_seq)
        .limit(bindparam("limit"))
    )
    snapshot_page = {"completed": False, "window": False, "after": True, "limit": True}
    return _Reads(
        # What a cursor is checked against: the generation and secret, and the counter.
        state=Statement(
            sa.select(
                _STATE.c.generation, _STATE.c.secret, _STREAMS.c.last_seq, _STREAMS.c.pruned_seq
            )
            .select_from(
                _STATE.outerjoin(
                    _STREAMS, _STREAMS.c.stream == bindparam("stream", type_=sa.BigInteger)
                )
            )
            .where(_STATE.c.id == streams.STATE_ID)
        ),  # fmt: skip
        changed_todos={scope: Statement(store.owned(changed_todos, scope)) for scope in scopes},
        tombstones=Statement(
            sa.select(_TOMBS.c.seq, _TOMBS.c.todo_id)
            .where(_TOMBS.c.stream == bindparam("stream"), _TOMBS.c.seq > bindparam("since"))
            .order_by(_TOMBS.c.seq)
            .limit(bindparam("limit"))
        ),
        snapshot_page={scope: store.select_todos(scope=scope, **snapshot_page) for scope in scopes},
    )


class Position(NamedTuple):
    """Where a client is: every change up to `seq` applied, and, while it is still taking
    its first snapshot, every todo up to id `after`."""

    generation: int
    stream: int
    seq: int
    after: int | None = None


class Changes(NamedTuple):
    """One answer: ("upsert", stored todo) and ("delete", id) in order, and where it ends."""

    changes: list[tuple[str, Any]]
    cursor: str
    more: bool


def _signature(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def encode_cursor(position: Position, secret: str) -> str:
    after = "" if position.after is None else str(position.after)
    payload = f"{position.generation}.{position.stream}.{position.seq}.{after}".encode()
    return _encoded(payload + _signature(secret, payload))


def _encoded(signed: bytes) -> str:
    return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()


def decode_cursor(cursor: str, secret: str) -> Position:
    """Read a cursor: 400 if it cannot be read, 410 if this database did not sign it."""
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
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise _gone("The cursor was not issued for this list by this server.")
    generation, stream, seq, after = fields.groups()
    return Position(int(generation), int(stream), int(seq), int(after) if after else None)


def _unreadable() -> BadRequest:
    return BadRequest("The cursor in since cannot be read: send one this API returned.")


def _gone(why: str) -> Gone:
    return Gone(f"{why} Start again without since.")


def changes(owner: "store.Owner", since: str | None, limit: int) -> Changes:
    """Return the owner's changes after the cursor `since` (from nothing without one)."""
    user = store.owner_id(owner)
    stream = streams.stream_for(user)
    scope = store.scope_of(user)
    streams.ensure_started()
    with store.connect() as connection:
        # One snapshot for the state and every read, so that they agree with each other.
        connection.begin_snapshot()
        state = connection.first(_reads().state, {"stream": stream})
        if state is None:
            # The state row went while the service ran (tables emptied by hand): made anew,
            # with a new secret, so every cursor of before is a 410.
            connection.commit()
            streams.ensure_started(again=True)
            connection.begin_snapshot()
            state = connection.first(_reads().state, {"stream": stream})
            assert state is not None, "ensure_started makes the row"
        generation, secret, last_seq, pruned_seq = state
        last_seq, pruned_seq = last_seq or 0, pruned_seq or 0
        if since:
            position = decode_cursor(since, secret)
            if position.generation != generation or position.stream != stream:
                raise _gone("The cursor is not for this list as it is now.")
            if position.seq > last_seq:
                raise _gone("The cursor is ahead of this list.")
            if position.seq < pruned_seq:
                raise _gone("Deletions after this cursor are no longer remembered.")
        else:
            position = Position(generation, stream, last_seq, after=0)
        values = {"stream": stream, "owner": user, "limit": limit + 1}
        if position.after is not None:
            found, following = _snapshot_page(connection, position, scope, values, limit)
        else:
            found, following = _changes_since(connection, position, scope, values, limit, last_seq)
        connection.commit()
    streams.prune_now_and_then()
    more = following.after is not None or following.seq < last_seq
    return Changes(found, encode_cursor(following, secret), more)


def _snapshot_page(
    connection: Connection, position: Position, scope: store.Scope, values: dict, limit: int
) -> tuple[list[tuple[str, Any]], Position]:
    """Return a page of the first snapshot, in id order, and the position after it."""
    rows = connection.all(_reads().snapshot_page[scope], values | {"after": position.after})
    found = [("upsert", row) for row in rows[:limit]]
    if len(rows) > limit:
        return found, position._replace(after=rows[limit - 1][0])
    # The snapshot is complete; what changed since it began comes next.
    return found, position._replace(after=None)


def _changes_since(
    connection: Connection,
    position: Position,
    scope: store.Scope,
    values: dict,
    limit: int,
    last_seq: int,
) -> tuple[list[tuple[str, Any]], Position]:
    """Return the first changes after the position, in order, and the position after them.

    A todo's row holds only its latest change, so each todo comes at most once.
    """
    values |= {"since": position.seq}
    todos = connection.all(_reads().changed_todos[scope], values)
    tombstones = connection.all(_reads().tombstones, values)
    merged = sorted(
        [(row[_SEQ], "upsert", row) for row in todos]
        + [(seq, "delete", todo_id) for seq, todo_id in tombstones]
    )
    found = [(op, item) for _, op, item in merged[:limit]]
    if len(merged) > limit:
        return found, position._replace(seq=merged[limit - 1][0])
    # Every change up to the counter is in this answer, or was superseded by one that is.
    return found, position._replace(seq=last_seq)
