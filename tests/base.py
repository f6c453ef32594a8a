"""The base class of the tests: a fresh app on a fresh database, and small helpers."""

import os
import sys
import unittest
from collections.abc import Mapping
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from todo import create_app
from todo.config import normalize_database_url
from todo.models import db

IN_CI = os.environ.get("CI") == "true"
# Database servers the suite also runs on, by the environment variable that names each.
SERVER_DATABASES = {"Postgres": "TODO_TEST_POSTGRES_URL", "MySQL": "TODO_TEST_MYSQL_URL"}
# Tables of the app, children first, so that they can be emptied in order.
TABLES = ("idempotency_keys", "todos")


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


def reset_server_database(database: str) -> None:
    """Empty a server's test database before a test class; a skip locally if unreachable.

    In CI every server is there, so an unreachable one fails the class instead.
    """
    try:
        reset_database(server_url(database))
    except OperationalError as error:
        if IN_CI:
            raise
        raise unittest.SkipTest(f"{database} is not reachable: {error}") from None


def empty_tables(app) -> None:
    """Delete every row and restart the ids, as in a fresh database."""
    with app.app_context():
        connection = db.session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        else:
            for table in TABLES:
                connection.exec_driver_sql(f"TRUNCATE TABLE {table}")
        db.session.commit()


class AppTestCase(unittest.TestCase):
    """Each test gets its own app on an empty database: in-memory SQLite unless overridden."""

    database: str = "SQLite"
    config: Mapping[str, Any] = {}

    @classmethod
    def database_url(cls) -> str:
        if cls.database == "SQLite":
            return "sqlite:///:memory:"
        url = server_url(cls.database)
        assert url is not None
        return url

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.database != "SQLite":
            reset_server_database(cls.database)

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


def across_databases(cls: type[AppTestCase]) -> type[AppTestCase]:
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
