"""The base classes of the tests: a class per database, a fresh app on it, small helpers."""

import base64
import os
import sys
import tempfile
import unittest
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from todo import create_app
from todo.config import normalize_database_url
from todo.models import db

IN_CI = os.environ.get("CI") == "true"
# Database servers the suite also runs on, by the environment variable that names each.
SERVER_DATABASES = {"Postgres": "TODO_TEST_POSTGRES_URL", "MySQL": "TODO_TEST_MYSQL_URL"}
# Tables of the app, children first, so that they can be emptied in order.
# sync_state keeps its one row, which the migration made, as in a service that ran before.
TABLES = ("idempotency_keys", "todos", "tokens", "users", "tombstones", "sync_streams")


def server_url(name: str) -> str | None:
    """Return the URL of a database server the tests should use, if one is configured."""
    url = os.environ.get(SERVER_DATABASES[name])
    return normalize_database_url(url) if url else None


def reset_database(url: str) -> None:
    """Drop every table, so that the next app starts on an empty database."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            names = inspect(connection).get_table_names()
            if connection.dialect.name == "mysql":
                connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            for name in names:
                connection.execute(text(f"DROP TABLE IF EXISTS {name} CASCADE"))
    finally:
        engine.dispose()


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip a test for something this machine lacks; fail it in CI, where nothing may be missing."""
    if IN_CI:
        raise AssertionError(reason)
    raise unittest.SkipTest(reason)


def node_tools(*names: str) -> Path:
    """Return the node_modules/.bin folder of the Node tools named (linters, httpyac), as
    TODO_TEST_NODE_BIN gives it; skip without it (fail in CI, whose .ci/run installs them)."""
    folder = os.environ.get("TODO_TEST_NODE_BIN")
    if folder and all((Path(folder) / name).exists() for name in names):
        return Path(folder)
    skip_or_fail_in_ci(f"TODO_TEST_NODE_BIN must name a node_modules/.bin with {', '.join(names)}")


def empty_tables(app) -> None:
    """Delete every row and restart the ids, as in a fresh database."""
    with app.app_context():
        connection = db.session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        else:
            # A table that another one refers to cannot be truncated while MariaDB checks.
            connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            for table in TABLES:
                connection.exec_driver_sql(f"TRUNCATE TABLE {table}")
            connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
        db.session.commit()


class DatabaseTestCase(unittest.TestCase):
    """A test class on one database: SQLite, or the server that `database` names.

    across_databases makes a class's copies for the servers. A server's test database loses
    every table before each class, so that nothing an earlier class left behind leaks in; the
    class is skipped when its server is not configured or not reachable (it fails in CI).
    """

    database: str = "SQLite"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.database != "SQLite":
            url = cls.server_database_url()
            try:
                reset_database(url)
            except OperationalError as error:
                skip_or_fail_in_ci(f"{cls.database} is not reachable: {error}")

    @classmethod
    def server_database_url(cls) -> str:
        """Return the URL of this class's database server."""
        url = server_url(cls.database)
        if url is None:
            skip_or_fail_in_ci(f"{SERVER_DATABASES[cls.database]} is not set")
        return url

    def fresh_database_url(self) -> str:
        """Return the URL of a database without tables: a new SQLite file, or the server's reset."""
        if self.database == "SQLite":
            folder = tempfile.TemporaryDirectory()
            self.addCleanup(folder.cleanup)
            return f"sqlite:///{folder.name}/todo.sqlite"
        url = self.server_database_url()
        reset_database(url)
        return url


class AppTestCase(DatabaseTestCase):
    """Each test gets its own app on an empty database: in-memory SQLite unless overridden."""

    config: Mapping[str, Any] = {}

    @classmethod
    def database_url(cls) -> str:
        if cls.database == "SQLite":
            return "sqlite:///:memory:"
        return cls.server_database_url()

    def setUp(self) -> None:
        self.app = self.make_app()
        if self.database != "SQLite":
            empty_tables(self.app)
        self.client = self.app.test_client()

    def tearDown(self) -> None:
        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()

    def make_app(self, **overrides: Any):
        """Build an app on this test's database, with extra settings."""
        config = {"SQLALCHEMY_DATABASE_URI": self.database_url(), "TESTING": True}
        return create_app(config | dict(self.config) | overrides)

    def assertDictContainsSubset(self, expected: Mapping, actual: Mapping) -> None:  # noqa: N802
        """Assert that every key of `expected` is in `actual` with the same value."""
        self.assertEqual({key: actual.get(key, ...) for key in expected}, dict(expected))

    def assertProblem(self, response, status: int, *fields: str) -> dict:  # noqa: N802
        """Assert a problem details answer naming exactly these fields; return its body."""
        self.assertEqual(response.status_code, status, response.get_data(as_text=True))
        self.assertEqual(response.mimetype, "application/problem+json")
        body = response.get_json()
        self.assertDictContainsSubset({"type": "about:blank", "status": status}, body)
        self.assertTrue(body["title"])
        self.assertTrue(body["detail"])
        if fields:
            self.assertEqual(sorted({error["field"] for error in body["errors"]}), sorted(fields))
        return body

    def create(self, **fields: Any) -> dict:
        """Create a todo through the API and return it."""
        response = self.client.post("/api/v1/todos", json={"title": "A todo"} | fields)
        self.assertEqual(response.status_code, 201, response.get_data(as_text=True))
        return response.get_json()

    def count_todos(self) -> int:
        """Count the stored todos."""
        return len(self.client.get("/api/v1/todos").get_json())


DatabaseTestClass = TypeVar("DatabaseTestClass", bound=type[DatabaseTestCase])


def across_databases(cls: DatabaseTestClass) -> DatabaseTestClass:
    """Run a test class on every configured database server too, besides SQLite.

    The copies are added to the class's module, where unittest and pytest both find them.
    """
    module = sys.modules[cls.__module__]
    for name, variable in SERVER_DATABASES.items():
        if server_url(name) is None:
            if IN_CI:
                raise RuntimeError(f"{variable} must be set in CI")
            continue
        copy = type(f"{cls.__name__}On{name}", (cls,), {"database": name})
        copy.__module__ = cls.__module__
        setattr(module, copy.__name__, copy)
    return cls


# Accounts (AUTH token): settings, and the headers and steps that get a user a token.
TOKEN_MODE = {"AUTH": "token", "REGISTRATION": "open"}
REDIS_URL = os.environ.get("TODO_TEST_REDIS_URL", "redis://127.0.0.1:6379")
PASSWORD = "correct horse battery"


def basic(username: str, password: str) -> dict[str, str]:
    """Return the Authorization header of HTTP Basic credentials, written as UTF-8."""
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header that presents a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def sign_up(client, username: str, password: str = PASSWORD) -> str:
    """Register a user through the API and return a new token of theirs (needs TOKEN_MODE)."""
    response = client.post("/api/v1/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.get_data(as_text=True)
    response = client.post("/api/v1/tokens", headers=basic(username, password))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["token"]


def require_redis(url: str = REDIS_URL) -> None:
    """Skip a test without a reachable Redis; fail it in CI, where Redis must be there."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as error:
        skip_or_fail_in_ci(f"Redis is not reachable at {url}: {error}")
