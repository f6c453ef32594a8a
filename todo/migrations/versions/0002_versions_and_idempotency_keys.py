"""Add the version behind ETags, the deadline index and remembered idempotency keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

import todo.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("todos") as batch_op:
        # Existing rows start at version 1, like new ones.
        batch_op.add_column(
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.create_index("ix_todos_deadline_at", ["deadline_at"])

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("todo_id", sa.BigInteger(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", todo.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    if op.get_bind().dialect.name == "postgresql":
        # Ids inserted explicitly by older code left the sequence behind; move it past them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('todos', 'id'), GREATEST(MAX(id), COALESCE("
            "pg_sequence_last_value(pg_get_serial_sequence('todos', 'id')::regclass), 0)))"
            " FROM todos HAVING MAX(id) IS NOT NULL"
        )


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("todos") as batch_op:
        batch_op.drop_index("ix_todos_deadline_at")
        batch_op.drop_column("version")
