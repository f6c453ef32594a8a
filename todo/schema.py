"""Bringing the database schema to the latest migration, once, however many workers start."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from todo.models import db

MIGRATIONS = Path(__file__).parent / "migrations"
# The schema of the classic tutorial, which databases made before migrations existed have.
TUTORIAL_REVISION = "0001"
# Any fixed number: PostgreSQL advisory locks are named by integers.
_POSTGRES_LOCK_KEY = 0x70D0


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic configuration for the packaged migrations."""
    config = Config(MIGRATIONS / "alembic.ini")
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """Return the newest migration's revision."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """Return the revision the database is at, or None when it has none."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _exclusively(connection: Connection) -> Iterator[None]:
    """Hold a lock that serializes schema changes across processes on one database."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The write lock, taken up front: the whole bootstrap is one transaction.
        connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        connection.begin()
        yield
    elif dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
        yield
    else:
        # MariaDB commits DDL implicitly, so the lock must outlive transactions.
        connection.execute(text("SELECT GET_LOCK('todo_schema', 60)"))
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK('todo_schema')"))


def upgrade_schema() -> None:
    """Create the schema in an empty database, or migrate an existing one to the latest."""
    engine = db.engine
    with engine.connect() as connection:
        if current_revision(connection) == head_revision():
            return
    with engine.connect() as connection:
        with _exclusively(connection):
            # Another process may have done the work while this one waited for the lock.
            revision = current_revision(connection)
            if revision == head_revision():
                pass
            elif revision is None and not inspect(connection).has_table("todos"):
                db.metadata.create_all(connection)
                command.stamp(alembic_config(connection), "head")
            else:
                if revision is None:
                    command.stamp(alembic_config(connection), TUTORIAL_REVISION)
                command.upgrade(alembic_config(connection), "head")
            connection.commit()
