"""Write fewer index trees per write: the users' index of todos leaves out the todos of no one
(SQLite and PostgreSQL), and SQLite keeps tombstones in their primary key's tree.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OWNED = sa.text("owner_id IS NOT NULL")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "mysql":
        # MariaDB has no partial indexes, and InnoDB already keeps rows in their key's tree.
        return
    op.drop_index("ix_todos_owner_id_id", table_name="todos")
    op.create_index(
        "ix_todos_owner_id_id",
        "todos",
        ["owner_id", "id"],
        sqlite_where=_OWNED,
        postgresql_where=_OWNED,
    )
    if dialect == "sqlite":
        _recreate_tombstones(with_rowid=False)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "mysql":
        return
    if dialect == "sqlite":
        _recreate_tombstones(with_rowid=True)
    op.drop_index("ix_todos_owner_id_id", table_name="todos")
    op.create_index("ix_todos_owner_id_id", "todos", ["owner_id", "id"])


def _recreate_tombstones(with_rowid: bool) -> None:
    # SQLite sets WITHOUT ROWID only as it creates a table: copied into a new one.
    with op.batch_alter_table(
        "tombstones", recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
    ):
        pass
