"""Index the open todos by deadline, for everyone's list and each user's: a filtered list with
few matches among many todos reads only those (todo.lists).

SQLite and PostgreSQL index only the open todos; MariaDB, which has no partial indexes, all
of them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, columns in _POSTGRESQL:
            op.create_index(
                name,
                "todos",
                columns,
                postgresql_where=sa.text("NOT completed"),
                postgresql_include=["id"],
            )
        return
    for name, columns in _ELSEWHERE:
        op.create_index(name, "todos", columns, sqlite_where=sa.text("completed = 0"))


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, _ in _POSTGRESQL if postgresql else _ELSEWHERE:
        op.drop_index(name, table_name="todos")


_POSTGRESQL = (
    ("ix_todos_open_deadline_at", ["deadline_at"]),
    ("ix_todos_owner_id_open_deadline_at", ["owner_id", "deadline_at"]),
)
# SQLite's hold open todos only; MariaDB's, which has no partial indexes, every todo.
_ELSEWHERE = (
    ("ix_todos_completed_deadline_at", ["completed", "deadline_at"]),
    ("ix_todos_owner_id_completed_deadline_at", ["owner_id", "completed", "deadline_at"]),
)
