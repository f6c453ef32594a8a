"""What incremental sync keeps besides the todos: each stream's change counter, the deleted
todos' tombstones, and the state that makes cursors verifiable (todo.sync)."""

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from todo.models import UTCDateTime, db

_ID = BigInteger().with_variant(Integer, "sqlite")
# Hex of the 256-bit key that signs cursors.
SECRET_LENGTH = 64
# The id of sync_state's one row.
STATE_ID = 1


class SyncStream(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    """One list's change counter: the shared list's (stream 0) or a user's (their id).

    The list's pending changes are numbered after it in a transaction that holds the row
    (todo.streams.number_pending), so numbers only ever go to committed changes, in batches.
    """

    __tablename__ = "sync_streams"

    stream: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=False)
    # The number of the list's latest change.
    last_seq: Mapped[int] = mapped_column(BigInteger)
    # The number of the latest pruned tombstone: a cursor before it may have missed a deletion.
    pruned_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Tombstone(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    """A deleted todo, remembered for TOMBSTONE_DAYS so that clients learn of the deletion.

    Until it is numbered, its `seq` is minus the todo's id.
    """

    __tablename__ = "tombstones"
    __table_args__ = (
        Index("ix_tombstones_deleted_at", "deleted_at"),
        # Its rows kept in the primary key's own tree on SQLite too, as InnoDB keeps them: a
        # deletion writes two trees, not three.
        {"sqlite_with_rowid": False},
    )

    stream: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    todo_id: Mapped[int] = mapped_column(_ID)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncState(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    """The one row that says which cursors this database still honours."""

    __tablename__ = "sync_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The AUTH mode the service last started in: lists are streams of the mode.
    mode: Mapped[str] = mapped_column(String(16))
    # Raised whenever cursors stop meaning what they meant (the mode changed, todos were
    # imported, seeded or adopted): every cursor of an older generation answers 410.
    generation: Mapped[int] = mapped_column(Integer)
    secret: Mapped[str] = mapped_column(String(SECRET_LENGTH))


# The rows every database has from the start, made with their tables (the migration that adds
# them makes them too): the state, and the shared list's counter. Workers that start together
# then only update rows that exist, which no engine turns into a deadlock.
@event.listens_for(SyncState.__table__, "after_create")
def _first_state(table, connection, **kw) -> None:
    connection.execute(
        table.insert().values(id=STATE_ID, mode="", generation=1, secret=secrets.token_hex(32))
    )


@event.listens_for(SyncStream.__table__, "after_create")
def _shared_counter(table, connection, **kw) -> None:
    connection.execute(table.insert().values(stream=0, last_seq=0, pruned_seq=0))
