"""How the app connects: SQLite set up for several workers, the servers' engine options."""

import tempfile
import unittest

from sqlalchemy import text

from tests.base import DatabaseTestCase
from todo import create_app, driver
from todo.config import DEFAULTS
from todo.database import engine_options
from todo.models import db


class TestSQLiteConnections(unittest.TestCase):
    def test_file_database_uses_wal_a_busy_timeout_and_foreign_keys(self):
        with tempfile.TemporaryDirectory() as folder:
            app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/db.sqlite"})
            with app.app_context():
                pragmas = {
                    name: db.session.execute(text(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
                }
                db.engine.dispose()
        # synchronous=1 is NORMAL: with WAL, every commit survives a crash of the process.
        self.assertEqual(
            pragmas,
            {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 30000, "foreign_keys": 1},
        )


class TestPostgresConnections(DatabaseTestCase):
    database = "Postgres"

    def test_each_statement_is_planned_once_per_connection(self):
        # Planned anew for each call, a page of 100 took about a fifth longer (bench/README.md).
        app = create_app({"SQLALCHEMY_DATABASE_URI": self.server_database_url()})
        with app.app_context():
            with driver.Connection(db.engine) as connection:
                mode = connection.first(driver.Statement(text("SHOW plan_cache_mode")))
            db.engine.dispose()
        self.assertEqual(mode, ("force_generic_plan",))


class TestEngineOptions(unittest.TestCase):
    def options(self, url: str, **settings) -> dict:
        return engine_options(DEFAULTS | {"SQLALCHEMY_DATABASE_URI": url} | settings)

    def test_servers_get_a_pool_sized_for_the_threads_and_prompt_timeouts_and_no_ping(self):
        # No round trip before each request: the driver replaces a dead connection itself
        # (tests/test_driver.py, tests/test_outage.py).
        for url in ("postgresql+psycopg://u@h/d", "mysql+pymysql://u@h/d"):
            with self.subTest(url=url):
                options = self.options(url, DATABASE_POOL_SIZE=6)
                self.assertNotIn("pool_pre_ping", options)
                self.assertEqual((options["pool_size"], options["max_overflow"]), (6, 6))
                self.assertEqual(options["connect_args"]["connect_timeout"], 2)

    def test_mysql_talks_utf8mb4_and_never_waits_forever(self):
        options = self.options("mysql+pymysql://u@h/d")
        self.assertEqual(options["connect_args"]["charset"], "utf8mb4")
        self.assertEqual(options["connect_args"]["read_timeout"], 30)

    def test_own_engine_options_win(self):
        options = self.options(
            "postgresql+psycopg://u@h/d", SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1}
        )
        self.assertEqual(options["pool_size"], 1)
