"""The databases the benchmark runs on, through their plain DB-API drivers.

Two users: the harness (bench/run.py), which makes one seeded database per app and drops them
afterwards, and the ceiling (bench/ceiling.py), which runs its statements on a connection per
thread. Statements are written with `?` placeholders, SQLite's; `execute` turns them into
`%s` for psycopg and PyMySQL.
"""

import contextlib
import shutil
import sqlite3
import threading
from functools import cache
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql

KINDS = ("sqlite", "postgresql", "mariadb")
# The drivers SQLAlchemy (the service, the FastAPI peer) is told to use for each kind.
SQLALCHEMY_SCHEMES = {"postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}
# Databases the harness makes on a server are named with this prefix, and only those dropped.
PREFIX = "bench_"


def kind_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+")[0]
    kind = {"postgres": "postgresql", "mysql": "mariadb"}.get(scheme, scheme)
    if kind not in KINDS:
        raise ValueError(f"Not a database the benchmark knows: {url}")
    return kind


def connect(url: str):
    """Open an autocommit DB-API connection: every statement is its own transaction."""
    kind, parts = kind_of(url), urlsplit(url)
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        # The service's own settings (todo/database.py): WAL, commits safe from a crash.
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn
    if kind == "postgresql":
        return psycopg.connect(parts._replace(scheme="postgresql").geturl(), autocommit=True)
    return pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or ""),
        password=unquote(parts.password or ""), database=parts.path.lstrip("/") or None,
        autocommit=True, charset="utf8mb4",
    )  # fmt: skip


@cache
def _with_format_placeholders(sql: str) -> str:
    return sql.replace("?", "%s")


class Database:
    """One database's connections, one per thread and kept open, and how to run a statement."""

    def __init__(self, url: str):
        self.url = url
        self.kind = kind_of(url)
        self.driver: ModuleType = {"sqlite": sqlite3, "postgresql": psycopg, "mariadb": pymysql}[
            self.kind
        ]
        # MariaDB cannot read back what an UPDATE changed: the todo is read again after it.
        self.update_returning = self.kind != "mariadb"
        # What a database answers to values it will not store: the request's fault (400).
        self.input_errors = (self.driver.IntegrityError, self.driver.DataError)
        self._local = threading.local()

    def connection(self):
        """Return this thread's connection, opening it on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.url)
        return conn

    def execute(self, sql: str, params=()):
        """Run a statement written with `?` placeholders on this thread's connection."""
        conn = self.connection()
        if self.kind == "sqlite":
            # sqlite3 caches prepared statements by their text.
            return conn.execute(sql, params)
        sql = _with_format_placeholders(sql)
        if self.kind == "postgresql":
            return conn.execute(sql, params, prepare=True)
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return cursor


class Server:
    """The harness's side of one kind of database: seeded copies, one per app, dropped after."""

    kind = "sqlite"

    def url(self, name: str) -> str:
        """Return the SQLAlchemy URL of the database `name`, as the service is given it."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def create(self, name: str) -> str:
        """Make an empty database `name`, replacing any left over; return its URL."""
        raise NotImplementedError

    def copy(self, source: str, name: str) -> str:
        """Make the database `name` a copy of `source`; return its URL."""
        raise NotImplementedError

    def drop_all(self) -> None:
        """Drop every database made here."""

    def settle(self, name: str) -> None:
        """Bring a database just loaded to where the server's own upkeep soon brings it."""

    def insert(self, name: str, sql: str, rows) -> None:
        """Run one statement, written with `?` placeholders, for each row."""
        if self.kind != "sqlite":
            sql = _with_format_placeholders(sql)
        with contextlib.closing(connect(self.url(name))) as conn:
            conn.cursor().executemany(sql, rows)


class SQLite(Server):
    """Files in a directory of the harness's own, which it removes."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.sqlite"

    def url(self, name: str) -> str:
        return f"sqlite:///{self.path(name)}"

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def create(self, name: str) -> str:
        self.path(name).unlink(missing_ok=True)
        return self.url(name)

    def copy(self, source: str, name: str) -> str:
        shutil.copyfile(self.path(source), self.path(name))
        return self.url(name)


class DatabaseServer(Server):
    """PostgreSQL or MariaDB, reached as an administrator at `admin_url`."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.made: list[str] = []

    def url(self, name: str) -> str:
        parts = urlsplit(self.admin_url)._replace(scheme=SQLALCHEMY_SCHEMES[self.kind])
        return parts._replace(path=f"/{PREFIX}{name}").geturl()

    def admin(self, *statements: str) -> list:
        """Run statements on the administrator's connection; return the last one's rows."""
        with contextlib.closing(connect(self.admin_url)) as conn:
            for statement in statements:
                cursor = conn.cursor()
                cursor.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []

    def create(self, name: str) -> str:
        self._drop(name)
        self.admin(f"CREATE DATABASE {PREFIX}{name}")
        self.made.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        for name in reversed(self.made):
            self._drop(name)
        self.made.clear()

    def _drop(self, name: str) -> None:
        raise NotImplementedError


class PostgreSQL(DatabaseServer):
    kind = "postgresql"

    def version(self) -> str:
        return f"PostgreSQL {self.admin('SHOW server_version')[0][0]}"

    def copy(self, source: str, name: str) -> str:
        self._drop(name)
        self.admin(f"CREATE DATABASE {PREFIX}{name} TEMPLATE {PREFIX}{source}")
        self.made.append(name)
        return self.url(name)

    def settle(self, name: str) -> None:
        # Autovacuum's work, done now rather than within the next minutes: planner statistics
        # (without them PostgreSQL plans a filter as a scan of the table) and the visibility
        # map (without it, an index-only scan reads the table too).
        with contextlib.closing(connect(self.url(name))) as conn:
            conn.execute("VACUUM (ANALYZE) todos")

    def _drop(self, name: str) -> None:
        # FORCE: a server stopped a moment ago may still hold connections.
        self.admin(f"DROP DATABASE IF EXISTS {PREFIX}{name} WITH (FORCE)")


class MariaDB(DatabaseServer):
    kind = "mariadb"

    def version(self) -> str:
        return f"MariaDB {self.admin('SELECT VERSION()')[0][0].split('-')[0]}"

    def copy(self, source: str, name: str) -> str:
        # No template databases here: each table is copied with its indexes, then its rows.
        self.create(name)
        source, target = PREFIX + source, PREFIX + name
        tables = [row[0] for row in self.admin(f"SHOW TABLES FROM {source}")]
        self.admin(*(
            statement for table in tables for statement in (
                f"CREATE TABLE {target}.{table} LIKE {source}.{table}",
                f"INSERT INTO {target}.{table} SELECT * FROM {source}.{table}",
            )
        ))  # fmt: skip
        return self.url(name)

    def _drop(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {PREFIX}{name}")


def server_for(kind: str, directory: Path, postgres_url: str, mysql_url: str) -> Server:
    if kind == "postgresql":
        return PostgreSQL(postgres_url)
    if kind == "mariadb":
        return MariaDB(mysql_url)
    return SQLite(directory)
