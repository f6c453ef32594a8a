"""Each list's changes, numbered: the counters, the tombstones and the sync state.

A list is a stream: the shared list (stream 0) in AUTH none, a user's own (their id) in
AUTH token. A write marks the todo it changes as a pending change of its list (or, for a
deletion, leaves a pending tombstone) and takes no lock beyond its own rows. Numbers are
given later, by `number_pending`, which GET /changes runs when a list has pending changes:
holding the list's counter row, it numbers every pending change that has committed, in one
transaction. So a number is only ever given to a committed change, and all of a batch's
numbers become visible at once, above every number before them: once a reader sees number
n, it sees every number before it, and a change committed after a reader's call gets a
number above any cursor that reader holds. The API's writes (todo.store) and the ORM's (the
listeners below) mark theirs alike; GET /changes (todo.sync) numbers and reads them.
"""

import secrets
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from itertools import count

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy import bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, object_session

from todo.driver import Connection, Statement, constant
from todo.models import db, naive_utc, utcnow
from todo.models.sync import STATE_ID, SyncState, SyncStream, Tombstone
from todo.models.todo import Todo

SHARED_STREAM = 0
# How often a worker prunes tombstones by itself, at most (`flask changes prune` any time).
PRUNE_INTERVAL_SECONDS = 60
_STATE = SyncState.__table__
_STREAMS = SyncStream.__table__
_TOMBS = Tombstone.__table__
_TODOS = Todo.__table__


def stream_for(user_id: int | None) -> int:
    """Return the stream of a write by this user (None: the shared list of AUTH none)."""
    return SHARED_STREAM if user_id is None else user_id


def _insert_if_missing(table: sa.Table, dialect: str) -> sa.Insert:
    """An INSERT that does nothing where the row's key is taken, on each engine."""
    if dialect == "mysql":
        return sa.insert(table).prefix_with("IGNORE")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


@cache
def create_stream(dialect: str) -> Statement:
    """Make the counter of the list `stream` if it has none: with a new user, or at the
    first numbering of a list that has none yet."""
    row = {"stream": bindparam("stream"), "last_seq": 0, "pruned_seq": 0}
    return Statement(_insert_if_missing(_STREAMS, dialect).values(row))


# --- Marking: what every write does ---------------------------------------------------------

# The number of a todo's change that is not numbered yet. A tombstone's is minus the todo's
# id, one per todo and list (numbers proper are positive; 0 is a todo's that no change of
# the API or the ORM made: imported or seeded).
PENDING = -1


def pending_change(user_id: int | None) -> dict[str, int]:
    """Return the columns that mark a write of this user's list as a pending change."""
    return {"change_stream": stream_for(user_id), "change_seq": PENDING}


@cache
def _insert_pending_tombstone(dialect: str) -> Statement:
    row = {
        "stream": bindparam("stream"),
        "seq": -bindparam("todo_id", type_=sa.BigInteger),
        "todo_id": bindparam("todo_id"),
        "deleted_at": bindparam("deleted_at"),
    }
    # A todo that left a list twice before the list was numbered (the ORM can move todos
    # between owners) needs one tombstone there.
    return Statement(_insert_if_missing(_TOMBS, dialect).values(row))


def bury(connection: Connection, stream: int, todo_id: int) -> None:
    """Remember a deleted todo in its stream, as a pending change."""
    values = {"stream": stream, "todo_id": todo_id, "deleted_at": naive_utc(utcnow())}
    connection.execute(_insert_pending_tombstone(connection.dialect.name), values)


# --- Numbering: what GET /changes does first when a list has pending changes ----------------

# A todo's change, and a tombstone, not numbered yet (the number written into the SQL, so
# that a plan made for any value still reads them by index: todo.driver.constant).
_IS_PENDING = _TODOS.c.change_seq == constant(PENDING)
_IS_PENDING_TOMBSTONE = _TOMBS.c.seq < constant(0)
# Whether the list `stream` has pending changes, for a query to ask beside its own work.
HAS_PENDING = sa.or_(
    sa.exists().where(_TODOS.c.change_stream == bindparam("stream"), _IS_PENDING),
    sa.exists().where(_TOMBS.c.stream == bindparam("stream"), _IS_PENDING_TOMBSTONE),
)


_COUNTER = Statement(
    sa.select(_STREAMS.c.last_seq).where(_STREAMS.c.stream == bindparam("stream")).with_for_update()
)
_PENDING_TODOS = Statement(
    sa.select(_TODOS.c.id)
    .where(_TODOS.c.change_stream == bindparam("stream"), _IS_PENDING)
    .order_by(_TODOS.c.id)
)
# Each pending tombstone, and whether it is moot: a todo back in a list it had left (an ORM
# owner change) is there, and its own change says what it is now.
_moot_by = _TODOS.alias("moot_by")
_PENDING_TOMBSTONES = Statement(
    sa.select(_TOMBS.c.seq, _moot_by.c.id.is_not(None))
    .select_from(
        _TOMBS.outerjoin(
            _moot_by,
            sa.and_(_moot_by.c.id == _TOMBS.c.todo_id, _moot_by.c.change_stream == _TOMBS.c.stream),
        )
    )
    .where(_TOMBS.c.stream == bindparam("stream"), _IS_PENDING_TOMBSTONE)
    .order_by(_TOMBS.c.seq.desc())
)
_DROP_TOMBSTONE = Statement(
    sa.delete(_TOMBS).where(
        _TOMBS.c.stream == bindparam("stream"), _TOMBS.c.seq == bindparam("pending")
    )
)
_NUMBER_TOMBSTONE = Statement(
    sa.update(_TOMBS)
    .where(_TOMBS.c.stream == bindparam("stream"), _TOMBS.c.seq == bindparam("pending"))
    .values(seq=bindparam("number"))
)
_NUMBER_TODO = Statement(
    sa.update(_TODOS)
    .where(_TODOS.c.id == bindparam("todo_id"), _IS_PENDING)
    # Numbering does not change the todo: its updated_at stays as it is (the column's
    # `onupdate` would make it now).
    .values(change_seq=bindparam("number"), updated_at=_TODOS.c.updated_at)
)
_SET_COUNTER = Statement(
    sa.update(_STREAMS)
    .where(_STREAMS.c.stream == bindparam("stream"))
    .values(last_seq=bindparam("last_seq"))
)


def number_pending(stream: int) -> int:
    """Number the list's pending changes that have committed; return how many there were.

    One transaction holds the list's counter row and numbers the pending rows after the
    counter: deletions first, then todos by id (so that a todo the ORM moved out of the list
    and back comes back last). A change still uncommitted is left for the next call, and
    gets a number above these.
    """
    with Connection(db.engine) as connection:
        connection.begin()
        counter = connection.first(_COUNTER, {"stream": stream})
        if counter is None:
            # A list without a counter yet: made on its own, then numbered.
            connection.commit()
            with Connection(db.engine) as separately:
                separately.begin()
                separately.execute(create_stream(separately.dialect.name), {"stream": stream})
                separately.commit()
            connection.begin()
            counter = connection.first(_COUNTER, {"stream": stream})
            assert counter is not None, "the counter was just made"
        (last,) = counter
        # Read, then written by primary key, row by row: a write locks its todo by key first
        # too, so the two never wait for each other in opposite orders. A row that changed
        # since it was read is still pending (every write marks it) and is numbered; one
        # deleted since is skipped, its number unused.
        todos = [todo_id for (todo_id,) in connection.all(_PENDING_TODOS, {"stream": stream})]
        buried = connection.all(_PENDING_TOMBSTONES, {"stream": stream})
        moot = [seq for seq, is_moot in buried if is_moot]
        tombstones = [seq for seq, is_moot in buried if not is_moot]
        numbers = count(last + 1)
        connection.execute_many(
            _DROP_TOMBSTONE, [{"stream": stream, "pending": seq} for seq in moot]
        )
        connection.execute_many(
            _NUMBER_TOMBSTONE,
            [{"stream": stream, "pending": seq, "number": next(numbers)} for seq in tombstones],
        )
        connection.execute_many(
            _NUMBER_TODO, [{"todo_id": todo_id, "number": next(numbers)} for todo_id in todos]
        )
        numbered = len(tombstones) + len(todos)
        connection.execute(_SET_COUNTER, {"stream": stream, "last_seq": last + numbered})
        connection.commit()
    return numbered


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
_STREAMS_WITH_OLD_PENDING = Statement(
    sa.select(_TOMBS.c.stream)
    .where(_IS_PENDING_TOMBSTONE, _TOMBS.c.deleted_at < bindparam("cutoff"))
    .distinct()
)
_prune_lock = threading.Lock()


def prune(days: int | None = None) -> int:
    """Forget tombstones older than TOMBSTONE_DAYS; return how many went.

    Each stream remembers the number of its latest pruned tombstone: a cursor before it
    answers 410, since it may not have seen that deletion.
    """
    days = current_app.config["TOMBSTONE_DAYS"] if days is None else days
    cutoff = naive_utc(utcnow() - timedelta(days=days))
    # A deletion no sync has numbered yet is numbered first, so that a cursor from before
    # it is refused once it is pruned.
    with Connection(db.engine) as connection:
        waiting = connection.all(_STREAMS_WITH_OLD_PENDING, {"cutoff": cutoff})
    for (stream,) in waiting:
        number_pending(stream)
    old = sa.and_(_TOMBS.c.deleted_at < cutoff, _TOMBS.c.seq > 0)
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
def _mark_orm_insert(mapper, connection: sa.Connection, todo: Todo) -> None:
    todo.change_stream = _orm_stream(todo.owner_id)
    todo.change_seq = PENDING


@event.listens_for(Todo, "before_update")
def _mark_orm_update(mapper, connection: sa.Connection, todo: Todo) -> None:
    # The ORM calls this for every object marked dirty, changed or not.
    session = object_session(todo)
    if session is not None and session.is_modified(todo, include_collections=False):
        _mark_orm_insert(mapper, connection, todo)
        former_owners: Sequence[int | None] = sa.inspect(todo).attrs.owner_id.history.deleted
        former = _orm_stream(former_owners[0]) if former_owners else todo.change_stream
        if former != todo.change_stream:
            # Given to another owner, it leaves its former owner's list: a deletion there.
            _orm_bury(connection, former, todo.id)


@event.listens_for(Todo, "after_delete")
def _bury_orm_deletion(mapper, connection: sa.Connection, todo: Todo) -> None:
    _orm_bury(connection, _orm_stream(todo.owner_id), todo.id)


def _orm_bury(connection: sa.Connection, stream: int, todo_id: int) -> None:
    statement = _insert_pending_tombstone(connection.dialect.name).statement
    values = {"stream": stream, "todo_id": todo_id, "deleted_at": naive_utc(utcnow())}
    connection.execute(statement, values)  # type: ignore[call-overload]
