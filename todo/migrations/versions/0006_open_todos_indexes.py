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
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, columns, where in _POSTGRESQL if postgresql else _ELSEWHERE:
        op.create_index(
            name,
            "todos",
            columns,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
            postgresql_include=["id"],
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, _, _ in _POSTGRESQL if postgresql else _ELSEWHERE:
        op.drop_index(name, table_name="todos")


# Open todos only (and owned ones only, in the users' index), by deadline.
_POSTGRESQL = (
    ("ix_todos_open_deadline_at", ["deadline_at"], "NOT completed"),
    (
        "ix_todos_owner_id_open_deadline_at",
        ["owner_id", "deadline_at"],
        "NOT completed AND owner_id IS NOT NULL",
    ),
)
# The same on SQLite, led by the state; MariaDB, which has no partial indexes, ignores WHERE.
_ELSEWHERE = (
    ("ix_todos_completed_deadline_at", ["completed", "deadline_at"], "completed = 0"),
    (
        "ix_todos_owner_id_completed_deadline_at",
        ["owner_id", "completed", "deadline_at"],
        "completed = 0 AND owner_id IS NOT NULL",
    ),
)
