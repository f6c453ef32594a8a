"""Store SQLite timestamps as the API writes them: YYYY-MM-DDTHH:MM:SS.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMPS = {
    "todos": ("deadline_at", "created_at", "updated_at"),
    "idempotency_keys": ("created_at",),
}


def _rewrite(time_format: str) -> None:
    # Only SQLite keeps datetimes as text; the servers have real datetime columns.
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in TIMESTAMPS.items():
        for column in columns:
            op.execute(
                f"UPDATE {table} SET {column} = strftime('{time_format}', {column})"
                f" WHERE {column} IS NOT NULL"
            )


def upgrade() -> None:
    _rewrite("%Y-%m-%dT%H:%M:%S")


def downgrade() -> None:
    _rewrite("%Y-%m-%d %H:%M:%S.000000")
