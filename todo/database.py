"""How the app connects to each engine, and whether the database answers."""

from typing import Any

from flask import Flask
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo.driver import Connection
from todo.models import db

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
            # A connection that died while pooled (server restart) is replaced, not used.
            "pool_pre_ping": True,
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


def _begin_sqlite_transaction(connection) -> None:
    # SQLAlchemy's own transactions (the ORM session, migrations) begin here. The execution
    # option `sqlite_begin="BEGIN IMMEDIATE"` takes the write lock up front.
    connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def init_app(app: Flask) -> None:
    """Bind the database to the app with the engine options its engine needs."""
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _configure_sqlite_connection)
            event.listen(engine, "begin", _begin_sqlite_transaction)


def database_answers() -> bool:
    """Tell whether the database answers a trivial query."""
    try:
        with Connection(db.engine) as connection:
            connection.execute("SELECT 1")
    except UNAVAILABLE_ERRORS:
        return False
    return True
