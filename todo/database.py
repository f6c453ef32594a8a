"""The database: how the app connects to each engine, whether it answers, and its schema.

The schema is brought to the latest migration at start, once, however many workers start.
"""

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app, request
from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import ServiceUnavailable

from todo import driver, write_queue
from todo.models import db

MIGRATIONS = Path(__file__).parent / "migrations"
# The schema of the classic tutorial, which databases made before migrations existed have.
TUTORIAL_REVISION = "0001"
# Any fixed number: PostgreSQL advisory locks are named by integers.
_POSTGRES_LOCK_KEY = 0x70D0
# How long a worker waits before it tries again to bring the schema up to date, while the
# database does not answer.
SCHEMA_RETRY_SECONDS = 1.0
_SCHEMA_STATE = "todo.schema"
# How long a starting worker pauses before it tries again a SQLite file another one has locked.
SQLITE_LOCKED_PAUSE = 0.05
# Errors that mean "the database cannot be reached or is too busy", not "the request is wrong".
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)


def engine_options(config: dict[str, Any]) -> dict[str, Any]:
    """Return the engine options for the configured database; the user's own ones win."""
    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    backend = url.get_backend_name()
    connect_timeout = config["DATABASE_CONNECT_TIMEOUT"]
    if backend == "sqlite":
        options: dict[str, Any] = {"connect_args": {"timeout": config["SQLITE_BUSY_TIMEOUT"]}}
    else:
        options = {
            # No ping before each checkout, a round trip per request: a connection that died
            # while pooled (a server restart) fails its first statement, which the driver
            # then runs again on a new connection (todo.driver.Connection). The ORM's own
            # sessions, which do not go through the driver, would see that one error.
            "pool_size": config["DATABASE_POOL_SIZE"],
            "max_overflow": config["DATABASE_POOL_SIZE"],
            "pool_timeout": connect_timeout * 5,
            "connect_args": {"connect_timeout": connect_timeout},
        }
    if backend == "mysql":
        options["connect_args"]["charset"] = "utf8mb4"
        # PyMySQL's connect timeout does not cover the server's greeting; without a read
        # timeout a server that accepts but never answers would hang a worker for good.
        options["connect_args"]["read_timeout"] = config["DATABASE_READ_TIMEOUT"]
        # MariaDB drops idle connections after wait_timeout (8 hours by default).
        options["pool_recycle"] = 3600
    user_options = config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    return options | user_options


def sqlite_file(engine: Engine) -> str | None:
    """Return the path of the engine's SQLite database file; None for an in-memory one or
    another engine's database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a URI, which may name a database in memory
    return database


def _configure_sqlite_connection(dbapi_connection, connection_record) -> None:
    # Autocommit: a lone statement is its own transaction, which holds SQLite's one write
    # lock for the shortest time, and transactions start only where they are asked for
    # (see _begin_sqlite_transaction and driver.Connection.begin), instead of wherever
    # Python's sqlite3 module guesses.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets readers and one writer work at once across worker processes; NORMAL
    # synchronous keeps every commit safe from a process crash (not from power loss).
    if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _configure_postgresql_connection(dbapi_connection, connection_record) -> None:
    # psycopg prepares a statement run five times on a connection. PostgreSQL then plans it
    # anew for each call while it expects a plan for any value to cost more, which it does
    # for every `LIMIT $n` (it takes a tenth of the rows) and every range: a page of 100 or a
    # sync answer was planned on each call, in about as long as it took to run. The service's
    # statements are written so that one plan suits every value (where a value decides how
    # to read, as for filtered lists, the choice is made before the statement: todo.lists),
    # so each is planned once per connection.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    dbapi_connection.commit()


def _begin_sqlite_transaction(connection) -> None:
    # SQLAlchemy's own transactions (the ORM session, migrations) begin here. The execution
    # option `sqlite_begin="BEGIN IMMEDIATE"` takes the write lock up front.
    connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def init_app(app: Flask) -> None:
    """Bind the database to the app with the engine options its engine needs."""
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    db.init_app(app)
    # Flask-SQLAlchemy ends every app context by removing its session, opened or not, which
    # raises and catches a KeyError when none was: the API's requests open none.
    app.teardown_appcontext_funcs.remove(db._teardown_session)
    app.teardown_appcontext(_remove_open_session)
    with app.app_context():
        engine: Engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _configure_sqlite_connection)
            event.listen(engine, "begin", _begin_sqlite_transaction)
            if (path := sqlite_file(engine)) is not None:
                write_queue.attach(engine, path)
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _configure_postgresql_connection)


def _remove_open_session(error: BaseException | None) -> None:
    if db.session.registry.has():
        db.session.remove()


def database_answers() -> bool:
    """Tell whether the database answers a trivial query."""
    try:
        with driver.Connection(db.engine) as connection:
            connection.execute("SELECT 1")
    except UNAVAILABLE_ERRORS:
        return False
    return True


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic configuration for the packaged migrations."""
    config = Config(MIGRATIONS / "alembic.ini")
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """Return the newest migration's revision."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


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


class _SchemaState:
    """Whether an app's schema is known to be up to date, and when to try again if not."""

    def __init__(self, ready: bool):
        self.ready = ready
        self.next_attempt = 0.0
        self.lock = threading.Lock()


def prepare_schema(app: Flask, blueprints: Iterable[str]) -> None:
    """Bring the schema up to date now, or, while the database does not answer, later.

    A worker often starts before its database: it must start all the same, answer 503 in
    the meantime, and create or upgrade the schema on a request once the database answers.
    Only then does every request of the `blueprints` check it first (`require_schema`).
    """
    state = _SchemaState(ready=not app.config["SCHEMA_AUTO_UPGRADE"])
    app.extensions[_SCHEMA_STATE] = state
    if not state.ready:
        _upgrade_at_start(app, state)
    if state.ready:
        # Ready now, ready for good: a check on every request would cost each one for
        # nothing (bench/README.md, issue 13).
        return
    for blueprint in blueprints:
        # First of the blueprint's hooks: a database that is away is a 503, never a 401.
        app.before_request_funcs.setdefault(blueprint, []).insert(0, require_schema)


def _upgrade_at_start(app: Flask, state: _SchemaState) -> None:
    # Workers that start together on a new SQLite file can find it locked while the first
    # one switches it to WAL, without waiting for the busy timeout: that is another worker at
    # work, not an absent database, so this one waits for it as long as a write would.
    patience = time.monotonic() + app.config["SQLITE_BUSY_TIMEOUT"]
    with app.app_context():
        while True:
            try:
                upgrade_schema()
                break
            except UNAVAILABLE_ERRORS as error:
                if _sqlite_locked(error) and time.monotonic() < patience:
                    time.sleep(SQLITE_LOCKED_PAUSE)
                    continue
                app.logger.warning("The database is unavailable; the schema waits: %s", error)
                return
    state.ready = True


def _sqlite_locked(error: Exception) -> bool:
    # Another worker migrating the same file holds SQLite's lock.
    return write_queue.is_busy(getattr(error, "orig", error))


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The database is unavailable; try again shortly.", retry_after=1)


def ensure_schema() -> None:
    """Return once the schema is up to date; raise a 503 error while the database is away."""
    state: _SchemaState = current_app.extensions[_SCHEMA_STATE]
    if state.ready:
        return
    # One thread of a worker tries at a time, at most once per SCHEMA_RETRY_SECONDS; the
    # others answer 503 at once instead of queueing behind a connection attempt.
    if not state.lock.acquire(blocking=False):
        raise _unavailable()
    try:
        if state.ready:
            return
        if time.monotonic() < state.next_attempt:
            raise _unavailable()
        state.next_attempt = time.monotonic() + SCHEMA_RETRY_SECONDS
        upgrade_schema()
        state.ready = True
    finally:
        state.lock.release()


def require_schema() -> None:
    """Before an API request: answer 503 until the schema is ready.

    The health check says so in its own format, so it goes on.
    """
    if request.endpoint != "api.health":
        ensure_schema()


def ready() -> bool:
    """Tell whether the schema is up to date and the database answers."""
    try:
        ensure_schema()
    except (ServiceUnavailable, *UNAVAILABLE_ERRORS):
        return False
    return database_answers()
