"""Each list's changes, numbered: the counters, the tombstones and the sync state.

A list is a stream: the shared list (stream 0) in AUTH none, a user's own (their id) in
AUTH token. Every write to a list takes the stream's next change number in its own
transaction, from a counter row it holds locked until it commits, and stamps it on the todo
(or, for a deletion, on a tombstone). So a list's writes commit in the order of their
numbers, whatever the engine, worker or thread: once a reader sees number n, it sees every
number before it. The API's writes (todo.store) and the ORM's (the listeners below) both
number theirs; GET /changes (todo.sync) reads them.
"""

import secrets
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cache

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy import bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, object_session

from todo.driver import Connection, Statement
from todo.models import db, naive_utc, utcnow
from todo.models.sync import STATE_ID, SyncState, SyncStream, Tombstone
from todo.models.todo import Todo

SHARED_STREAM = 0
# How often a worker prunes tombstones by itself, at most (`flask changes prune` any time).
PRUNE_INTERVAL_SECONDS = 60
_STATE = SyncState.__table__
_STREAMS = SyncStream.__table__
_TOMBS = Tombstone.__table__


def stream_for(user_id: int | None) -> int:
    """Return the stream of a write by this user (None: the shared list of AUTH none)."""
    return SHARED_STREAM if user_id is None else user_id


@cache
def _next_change(dialect: str) -> Statement:
    """Take a stream's next change number.

    PostgreSQL and SQLite create the counter with the first number if need be, and hand the
    number back with RETURNING. MariaDB can do neither safely: concurrent upserts of a new
    row deadlock there, so its counters are made beforehand (`create_stream`), and the number
    comes back through LAST_INSERT_ID(expr), which the driver reports as the last row id (0:
    no such counter).
    """
    table = _STREAMS
    if dialect == "mysql":
        return Statement(
            sa.update(table)
            .where(table.c.stream == bindparam("stream_key"))
            .values(last_seq=sa.func.last_insert_id(table.c.last_seq + 1))
        )
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = (
        insert(table)
        .values(stream=bindparam("stream_key"), last_seq=1, pruned_seq=0)
        .on_conflict_do_update(
            index_elements=[table.c.stream], set_={"last_seq": table.c.last_seq + 1}
        )
    )
    return Statement(upsert.returning(table.c.last_seq))


def _insert_if_missing(table: sa.Table, dialect: str) -> sa.Insert:
    """An INSERT that does nothing where the row's key is taken, on each engine."""
    if dialect == "mysql":
        return sa.insert(table).prefix_with("IGNORE")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


@cache
def create_stream(dialect: str) -> Statement:
    """Make the counter of the list `stream` if it has none: with a new user, or at the
    first write of a list that has none yet."""
    row = {"stream": bindparam("stream"), "last_seq": 0, "pruned_seq": 0}
    return Statement(_insert_if_missing(_STREAMS, dialect).values(row))


def next_change(connection: Connection, stream: int) -> int:
    """Take the stream's next change number in the connection's transaction.

    The counter stays locked until the transaction ends, so the write commits before any
    later number is taken. Take it before the write's own statements: on MariaDB, for a list
    whose counter is not made yet, what the transaction did so far is committed first.
    """
    statement = _next_change(connection.dialect.name)
    seq = connection.insert(statement, {"stream_key": stream})
    if not seq:
        # MariaDB, on a list whose counter is not made yet (a user from before sync): end
        # the transaction, so that no lock of its own stops the counter's insert on another
        # connection, make the counter, and go on in a new transaction.
        connection.commit()
        with Connection(db.engine) as separately:
            separately.begin()
            separately.execute(create_stream(separately.dialect.name), {"stream": stream})
            separately.commit()
        seq = connection.insert(statement, {"stream_key": stream})
    return seq


INSERT_TOMBSTONE = Statement(
    sa.insert(Tombstone).values(
        stream=bindparam("stream"),
        seq=bindparam("seq"),
        todo_id=bindparam("todo_id"),
        deleted_at=bindparam("deleted_at"),
    )
)


def bury(connection: Connection, stream: int, todo_id: int, seq: int) -> None:
    """Remember a deleted todo in its stream, under the change number its deletion took."""
    values = {"stream": stream, "seq": seq, "todo_id": todo_id, "deleted_at": utcnow()}
    connection.execute(INSERT_TOMBSTONE, values)


# --- The state: started once per worker, invalidated by bulk changes -------------------------

_STARTED = "todo.streams.started_mode"
_start_lock = threading.Lock()


def _mode() -> str:
    return current_app.config["AUTH"]


def ensure_started(again: bool = False) -> None:
    """Record the app's AUTH mode in the database before its first write or sync, once
    (`again`: once more, for a state row that has gone).

    Lists are streams of the mode; when the service starts in the other mode, cursors of
    the former one no longer describe the lists, so they become a generation too old.
    """
    extensions = current_app.extensions
    mode = _mode()
    if extensions.get(_STARTED) == mode and not again:
        return
    with _start_lock, Connection(db.engine) as connection:
        if extensions.get(_STARTED) == mode and not again:
            return
        dialect = connection.dialect.name
        connection.begin()
        # The migration made the row, so workers starting together wait for each other's
        # update here, and only the first one changes it.
        changed = connection.execute(
            Statement(
                sa.update(SyncState)
                .where(SyncState.id == STATE_ID, SyncState.mode != mode)
                .values(mode=mode, generation=SyncState.generation + 1)
            )
        )
        if not changed:
            # A row deleted since the migration (tables emptied by hand): made again.
            row = {"id": STATE_ID, "mode": mode, "generation": 1, "secret": secrets.token_hex(32)}
            connection.execute(Statement(_insert_if_missing(_STATE, dialect).values(row)))
        connection.execute(create_stream(dialect), {"stream": SHARED_STREAM})
        connection.commit()
    extensions[_STARTED] = mode


# For writes that change lists without change numbers (import, seed, adopt): every cursor
# becomes a generation too old, and its client starts again from a snapshot.
NEW_GENERATION = (
    sa.update(SyncState).where(SyncState.id == STATE_ID).values(generation=SyncState.generation + 1)
)
INVALIDATE_CURSORS = Statement(NEW_GENERATION)
# A deleted account's list goes with it.
FORGET_STREAM = (
    Statement(sa.delete(Tombstone).where(Tombstone.stream == bindparam("user_id"))),
    Statement(sa.delete(SyncStream).where(SyncStream.stream == bindparam("user_id"))),
)


# --- Pruning -----------------------------------------------------------------------------

_last_prune = float("-inf")
_prune_lock = threading.Lock()


def prune(days: int | None = None) -> int:
    """Forget tombstones older than TOMBSTONE_DAYS; return how many went.

    Each stream remembers the number of its latest pruned tombstone: a cursor before it
    answers 410, since it may not have seen that deletion.
    """
    days = current_app.config["TOMBSTONE_DAYS"] if days is None else days
    cutoff = naive_utc(utcnow() - timedelta(days=days))
    old = _TOMBS.c.deleted_at < cutoff
    latest_pruned = (
        sa.select(sa.func.max(_TOMBS.c.seq))
        .where(_TOMBS.c.stream == _STREAMS.c.stream, old)
        .scalar_subquery()
    )
    with Connection(db.engine) as connection:
        connection.begin()
        # Never lowered: a clock that stepped back must not readmit a cursor already refused.
        connection.execute(
            Statement(
                sa.update(_STREAMS)
                .where(_STREAMS.c.stream.in_(sa.select(_TOMBS.c.stream).where(old)))
                .values(
                    pruned_seq=sa.case(
                        (latest_pruned > _STREAMS.c.pruned_seq, latest_pruned),
                        else_=_STREAMS.c.pruned_seq,
                    )
                )
            )
        )
        pruned = connection.execute(Statement(sa.delete(_TOMBS).where(old)))
        connection.commit()
    return pruned


def prune_now_and_then() -> None:
    """Prune unless this worker did so within the last PRUNE_INTERVAL_SECONDS."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune < PRUNE_INTERVAL_SECONDS or not _prune_lock.acquire(blocking=False):
        return
    try:
        _last_prune = now
        prune()
    finally:
        _prune_lock.release()


# --- The Python interface: the ORM's writes are changes too ----------------------------------


def _orm_stream(owner_id: int | None) -> int:
    if has_app_context() and _mode() == "token" and owner_id is not None:
        return owner_id
    return SHARED_STREAM


@event.listens_for(Session, "before_flush")
def _start_before_orm_writes(session: Session, flush_context, instances) -> None:
    if has_app_context() and any(
        isinstance(todo, Todo) for todo in (*session.new, *session.dirty, *session.deleted)
    ):
        ensure_started()


@event.listens_for(Session, "do_orm_execute")
def _invalidate_cursors_on_bulk_writes(state) -> None:
    """Bulk INSERT, UPDATE and DELETE statements on todos number no change: as after an
    import, every cursor becomes stale, in the statement's own transaction."""
    if (state.is_insert or state.is_update or state.is_delete) and any(
        mapper.class_ is Todo for mapper in state.all_mappers
    ):
        state.session.execute(NEW_GENERATION)


@event.listens_for(Todo, "before_insert")
def _stamp_orm_insert(mapper, connection: sa.Connection, todo: Todo) -> None:
    todo.change_stream = _orm_stream(todo.owner_id)
    todo.change_seq = _orm_next_change(connection, todo.change_stream)


@event.listens_for(Todo, "before_update")
def _stamp_orm_update(mapper, connection: sa.Connection, todo: Todo) -> None:
    # The ORM calls this for every object marked dirty, changed or not.
    session = object_session(todo)
    if session is not None and session.is_modified(todo, include_collections=False):
        _stamp_orm_insert(mapper, connection, todo)
        former_owners: Sequence[int | None] = sa.inspect(todo).attrs.owner_id.history.deleted
        former = _orm_stream(former_owners[0]) if former_owners else todo.change_stream
        if former != todo.change_stream:
            # Given to another owner, it leaves its former owner's list: a deletion there.
            _orm_bury(connection, former, todo.id)


@event.listens_for(Todo, "after_delete")
def _bury_orm_deletion(mapper, connection: sa.Connection, todo: Todo) -> None:
    _orm_bury(connection, _orm_stream(todo.owner_id), todo.id)


def _orm_bury(connection: sa.Connection, stream: int, todo_id: int) -> None:
    seq = _orm_next_change(connection, stream)
    connection.execute(
        sa.insert(Tombstone).values(stream=stream, seq=seq, todo_id=todo_id, deleted_at=utcnow())
    )


def _orm_next_change(connection: sa.Connection, stream: int) -> int:
    statement = _next_change(connection.dialect.name).statement
    result = connection.execute(statement, {"stream_key": stream})  # type: ignore[call-overload]
    if connection.dialect.name != "mysql":
        return result.scalar_one()
    if not result.lastrowid:
        # A list without a counter yet (a user the ORM made): made in this transaction.
        connection.execute(create_stream(connection.dialect.name).statement, {"stream": stream})  # type: ignore[call-overload]
        result = connection.execute(statement, {"stream_key": stream})  # type: ignore[call-overload]
    return result.lastrowid
