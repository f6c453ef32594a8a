"""Create the todos table of the classic tutorial.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

import todo.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "todos",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("title", sa.String(length=80), nullable=False),
        sa.Column("description", sa.String(length=120), nullable=True),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("deadline_at", todo.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", todo.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", todo.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_todos")),
        sqlite_autoincrement=True,
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def downgrade() -> None:
    op.drop_table("todos")
