"""Add incremental sync: each todo's latest change, the lists' change counters, tombstones,
and the state that signs cursors.

Existing todos count as changed before any cursor (stream 0, number 0): a client's first
sync, a snapshot, hands them out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import secrets

import sqlalchemy as sa
from alembic import op

import todo.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # New columns with a default need no copy of the table, on SQLite either.
    op.add_column(
        "todos", sa.Column("change_stream", _ID, server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "todos",
        sa.Column("change_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index("ix_todos_change_stream_change_seq", "todos", ["change_stream", "change_seq"])
    op.create_table(
        "sync_streams",
        sa.Column("stream", _ID, autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("pruned_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_sync_streams")),
    )
    op.create_table(
        "tombstones",
        sa.Column("stream", _ID, autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("todo_id", _ID, nullable=False),
        sa.Column("deleted_at", todo.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "seq", name=op.f("pk_tombstones")),
    )
    op.create_index("ix_tombstones_deleted_at", "tombstones", ["deleted_at"])
    # Every list has its counter before its first write: the shared list and each user's.
    op.execute("INSERT INTO sync_streams (stream, last_seq, pruned_seq) VALUES (0, 0, 0)")
    op.execute("INSERT INTO sync_streams (stream, last_seq, pruned_seq) SELECT id, 0, 0 FROM users")
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_state")),
    )
    # Its one row, there before any worker starts (a row that workers would insert together
    # deadlocks MariaDB); the first start records its AUTH mode (todo.streams.ensure_started).
    # A new database gets the same rows with its tables (todo.models.sync).
    op.get_bind().execute(
        sa.text("INSERT INTO sync_state (id, mode, generation, secret) VALUES (1, '', 1, :secret)"),
        {"secret": secrets.token_hex(32)},
    )


def downgrade() -> None:
    op.drop_table("sync_state")
    op.drop_table("tombstones")
    op.drop_table("sync_streams")
    op.drop_index("ix_todos_change_stream_change_seq", table_name="todos")
    with op.batch_alter_table("todos") as batch_op:
        batch_op.drop_column("change_seq")
        batch_op.drop_column("change_stream")
