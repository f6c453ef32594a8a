"""Add users and their tokens, the owner of each todo, and the owner of each idempotency key.

Existing todos get no owner; existing idempotency keys belong to no user (0).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import todo.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("username_key", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", todo.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username_key", name=op.f("uq_users_username_key")),
        sqlite_autoincrement=True,
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "tokens",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", todo.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", todo.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_tokens_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_tokens_digest")),
        sqlite_autoincrement=True,
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])

    # A new nullable column needs no copy of the table, on SQLite either.
    op.add_column("todos", sa.Column("owner_id", _ID, nullable=True))
    op.create_index("ix_todos_owner_id_id", "todos", ["owner_id", "id"])

    # The key's owner joins its primary key. SQLite copies the table to change it.
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.add_column(sa.Column("owner_id", _ID, nullable=False, server_default=sa.text("0")))
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["owner_id", "key"])


def downgrade() -> None:
    # Keys of different owners may share a value; only those sent without an owner stay.
    op.execute("DELETE FROM idempotency_keys WHERE owner_id <> 0")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["key"])
        batch_op.drop_column("owner_id")
    op.drop_index("ix_todos_owner_id_id", table_name="todos")
    with op.batch_alter_table("todos") as batch_op:
        batch_op.drop_column("owner_id")
    # The table's index goes with it (MariaDB will not drop one its foreign key needs).
    op.drop_table("tokens")
    op.drop_table("users")
