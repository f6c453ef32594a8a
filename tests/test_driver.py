"""The driver: Core statements compiled once per dialect, run on the driver's own connections.

The tests use a small table of their own, so that they depend on no statement of the app.
"""

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import unittest
from datetime import datetime
from pathlib import Path
from unittest import mock

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tests.base import DatabaseTestCase, across_databases
from tests.proxy import TcpRelay, closed_port
from todo import create_app, spares
from todo.driver import Connection, Statement
from todo.models import db

METADATA = MetaData()
PROBES = Table(
    "driver_probe",
    METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
    Column("done", Boolean, nullable=False),
    Column("due", DateTime),
)
INSERT = Statement(
    insert(PROBES)
    .values(name=bindparam("name"), done=bindparam("done"), due=bindparam("due"))
    .return_defaults(PROBES.c.id)
)
SELECT_ONE = Statement(select(PROBES).where(PROBES.c.id == bindparam("probe_id")))
SELECT_ALL = Statement(select(PROBES).order_by(PROBES.c.id))
SELECT_DUE = Statement(select(PROBES.c.name).where(PROBES.c.due == bindparam("due")))
# `done=True` is a constant of the statement: no value is bound for it.
FINISH_UP_TO = Statement(
    update(PROBES).where(PROBES.c.id <= bindparam("last_id")).values(done=True)
)
# Values in another order than the SQL's, and a constant (1000).
SEARCH = Statement(
    select(PROBES.c.id).where(
        PROBES.c.id > bindparam("after"), PROBES.c.name != bindparam("name"), PROBES.c.id < 1000
    )
)
# Each server's id of the session a connection talks to, and how another session ends it.
SESSION_IDS = {
    "postgresql": Statement(select(func.pg_backend_pid())),
    "mysql": Statement(select(func.connection_id())),
}
END_SESSION = {
    "postgresql": "SELECT pg_terminate_backend({session})",
    "mysql": "KILL CONNECTION {session}",
}
SESSION_GONE = {
    "postgresql": "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {session}",
    "mysql": "SELECT count(*) = 0 FROM information_schema.processlist WHERE id = {session}",
}
SESSION_END_TIMEOUT = 10.0


class TestStatement(unittest.TestCase):
    """Compiling needs a dialect, not a database: once, with each driver the app supports."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # Engines that never connect: their dialects carry the drivers' parameter styles.
        cls.dialects = {
            url.split(":")[0]: create_engine(url).dialect
            for url in ("sqlite://", "postgresql+psycopg://u@h/d", "mysql+pymysql://u@h/d")
        }

    def test_a_statement_is_compiled_once_per_dialect_into_its_own_sql(self):
        placeholders = {"sqlite": "?", "postgresql+psycopg": "%(last_id)s"}
        placeholders["mysql+pymysql"] = placeholders["postgresql+psycopg"]
        for name, dialect in self.dialects.items():
            with self.subTest(dialect=name):
                compiled = FINISH_UP_TO.compiled(dialect)
                self.assertIs(FINISH_UP_TO.compiled(dialect), compiled)
                self.assertEqual(compiled.sql, str(FINISH_UP_TO.statement.compile(dialect=dialect)))
                self.assertIn(f"<= {placeholders[name]}", compiled.sql)

    def test_a_column_default_computed_in_python_must_be_given_instead(self):
        # The driver does not run `onupdate=`/`default=` functions, as Core does when it
        # executes: a statement that leaves one to them is refused before anything runs.
        stamped = Table(
            "driver_stamped", MetaData(), Column("id", Integer, primary_key=True),
            Column("name", String(40)), Column("changed_at", DateTime, onupdate=datetime.now),
        )  # fmt: skip
        rename = Statement(update(stamped).values(name=bindparam("name")))
        for name, dialect in self.dialects.items():
            with self.subTest(dialect=name), self.assertRaisesRegex(ValueError, "changed_at"):
                rename.compiled(dialect)
        given = Statement(update(stamped).values(name=bindparam("name"), changed_at=None))
        self.assertIn("changed_at", given.compiled(self.dialects["sqlite"]).sql)

    def test_values_are_bound_in_the_drivers_style_with_the_constants(self):
        values = {"name": "x", "after": 5}
        sqlite = SEARCH.compiled(self.dialects["sqlite"])
        self.assertEqual(sqlite.parameters(values), [5, "x", 1000])
        for name in ("postgresql+psycopg", "mysql+pymysql"):
            with self.subTest(dialect=name):
                bound = SEARCH.compiled(self.dialects[name]).parameters(values)
                self.assertIsInstance(bound, dict)
                (constant,) = bound.keys() - values.keys()
                self.assertEqual(bound, values | {constant: 1000})


class ProbeTableTestCase(DatabaseTestCase):
    """Tests of the app's own engine, on a fresh database with the probe table."""

    def setUp(self) -> None:
        self.engine = self.make_engine(self.fresh_database_url())
        METADATA.create_all(self.engine)
        self.addCleanup(METADATA.drop_all, self.engine)

    def make_engine(self, url: str, keeps_spares: bool = True) -> Engine:
        """Return the engine an app on `url` gets, keeping spare connections as a worker of
        `todo serve` does, unless not `keeps_spares`; it is disposed of when the test ends."""
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "SCHEMA_AUTO_UPGRADE": False}
        )
        with app.app_context():
            engine = db.engine
        if keeps_spares:
            spares.keep_for(engine)
        self.addCleanup(engine.dispose)
        return engine

    def add(self, connection: Connection, name: str, **fields) -> int:
        """Insert a probe through the driver; return its id."""
        return connection.insert(INSERT, {"name": name, "done": False, "due": None} | fields)

    def names(self) -> list[str]:
        """Return the stored names in id order, as a new connection sees them."""
        with Connection(self.engine) as connection:
            return [row[1] for row in connection.all(SELECT_ALL)]

    def assertSameKindAsTheDrivers(self, error: DBAPIError) -> None:  # noqa: N802
        """Assert a SQLAlchemy exception wrapping a driver error of the matching DB-API class."""
        self.assertIsInstance(error.orig, self.engine.dialect.loaded_dbapi.Error)
        self.assertIn(type(error).__name__, {kind.__name__ for kind in type(error.orig).__mro__})


@across_databases
class TestConnection(ProbeTableTestCase):
    """A connection of the app's own engine."""

    def test_insert_returns_each_new_key(self):
        with Connection(self.engine) as connection:
            connection.begin()
            first = self.add(connection, "first")
            second = self.add(connection, "second")
            connection.commit()
        self.assertGreater(second, first)
        with Connection(self.engine) as connection:
            self.assertEqual(
                connection.first(SELECT_ONE, {"probe_id": second})[:2], (second, "second")
            )

    def test_first_and_all_return_the_drivers_tuples(self):
        with Connection(self.engine) as connection:
            ids = [self.add(connection, name) for name in ("a", "b", "c")]
            rows = connection.all(SELECT_ALL)
            self.assertEqual([row[:2] for row in rows], list(zip(ids, "abc", strict=True)))
            self.assertTrue(all(isinstance(row, tuple) for row in rows))
            self.assertEqual(connection.first(SELECT_ALL), rows[0])
            self.assertIsNone(connection.first(SELECT_ONE, {"probe_id": ids[-1] + 1}))
            self.assertSequenceEqual(connection.all(SELECT_ONE, {"probe_id": 0}), [])

    def test_execute_returns_how_many_rows_changed(self):
        with Connection(self.engine) as connection:
            ids = [self.add(connection, name) for name in ("a", "b", "c")]
            self.assertEqual(connection.execute(FINISH_UP_TO, {"last_id": ids[1]}), 2)
            self.assertEqual(connection.execute(FINISH_UP_TO, {"last_id": 0}), 0)
            done = [bool(row[2]) for row in connection.all(SELECT_ALL)]
            self.assertEqual(done, [True, True, False])
            self.assertEqual(connection.execute("DELETE FROM driver_probe"), 3)

    def test_values_are_converted_as_core_converts_them(self):
        # SQLite keeps datetimes and booleans as text and numbers that Core writes and reads.
        due = datetime(2023, 2, 27, 10, 30, 5)
        with self.engine.begin() as core:
            core.execute(insert(PROBES), {"name": "by core", "done": True, "due": due})
        with Connection(self.engine) as connection:
            self.assertEqual(connection.first(SELECT_DUE, {"due": due}), ("by core",))
            connection.begin()
            self.add(connection, "by the driver", done=True, due=due.replace(year=2024))
            connection.commit()
        with self.engine.connect() as core:
            stored = core.execute(
                select(PROBES.c.done, PROBES.c.due).where(PROBES.c.name == "by the driver")
            )
            self.assertEqual(stored.one(), (True, due.replace(year=2024)))

    def test_committed_work_is_seen_by_the_next_connection(self):
        with Connection(self.engine) as connection:
            connection.begin()
            self.add(connection, "a")
            self.add(connection, "b")
            connection.commit()
        self.assertEqual(self.names(), ["a", "b"])

    def test_uncommitted_work_is_rolled_back_when_the_connection_goes_back_to_the_pool(self):
        with Connection(self.engine) as connection:
            connection.begin()
            kept = self.add(connection, "kept")
            connection.commit()
        with Connection(self.engine) as connection:
            connection.begin()
            self.add(connection, "dropped")
            connection.execute(FINISH_UP_TO, {"last_id": kept})
        with self.assertRaises(ZeroDivisionError):
            with Connection(self.engine) as connection:
                connection.begin()
                self.add(connection, "lost to an error")
                1 / 0  # noqa: B018
        self.assertEqual(self.names(), ["kept"])
        with Connection(self.engine) as connection:
            self.assertFalse(connection.first(SELECT_ONE, {"probe_id": kept})[2])

    def test_a_connection_used_before_sees_what_committed_since(self):
        # The driver keeps the connections it used for the next ones, out of any
        # transaction: MariaDB would otherwise still show a read's snapshot.
        with Connection(self.engine) as connection:
            self.assertSequenceEqual(connection.all(SELECT_ALL), [])
        with self.engine.begin() as core:
            core.execute(insert(PROBES), {"name": "committed since", "done": False})
        self.assertEqual(self.names(), ["committed since"])

    def test_connections_the_driver_gives_back_to_the_pool_run_transactions_again(self):
        # More connections at once than the driver keeps: the last goes back to the pool,
        # where the ORM and Core expect transactions (psycopg's reads ran in autocommit).
        with contextlib.ExitStack() as stack:
            for _ in range(self.engine.pool.size() + 1):
                connection = stack.enter_context(Connection(self.engine))
                self.assertSequenceEqual(connection.all(SELECT_ALL), [])
        with self.engine.connect() as core:
            core.execute(insert(PROBES), {"name": "rolled back", "done": False})
            core.rollback()
        self.assertEqual(self.names(), [])

    def test_the_next_request_reuses_a_connection_unless_it_waited_too_long(self):
        with Connection(self.engine) as connection:
            connection.all(SELECT_ALL)
        checked_out = []
        event.listen(self.engine, "checkout", lambda dbapi, *_: checked_out.append(dbapi))
        for waited_too_long in (False, True):
            with self.subTest(waited_too_long=waited_too_long):
                seconds = 0 if waited_too_long else spares.SPARE_SECONDS
                with mock.patch.object(spares, "SPARE_SECONDS", seconds):
                    for _ in range(3):
                        with Connection(self.engine) as connection:
                            connection.all(SELECT_ALL)
                # Kept, it never went back to the pool; too old, it went back to the pool's
                # own checks, and came out again.
                self.assertEqual(len(checked_out), 3 if waited_too_long else 0)
                checked_out.clear()

    def test_outside_todo_serve_every_connection_goes_back_to_the_pool(self):
        # The Python interface may make apps and drop them: a connection kept out of the pool
        # would keep its engine alive, and its connections open, for good.
        engine = self.make_engine(self.fresh_database_url(), keeps_spares=False)
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(Connection(engine)).execute("SELECT 1")
        self.assertEqual(engine.pool.checkedout(), 0)

    def test_disposing_of_the_engine_closes_every_connection_the_driver_kept(self):
        self.engine.dispose()
        opened, closed = [], []
        event.listen(self.engine, "connect", lambda dbapi, *_: opened.append(dbapi))
        for name in ("close", "close_detached"):
            event.listen(self.engine, name, lambda dbapi, *_: closed.append(dbapi))
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(Connection(self.engine)).all(SELECT_ALL)
        self.engine.dispose()
        self.assertEqual(len(opened), 3)
        self.assertCountEqual(closed, opened)

    def test_a_statement_outside_begin_commits_only_where_lone_statements_autocommit(self):
        # SQLite and psycopg run lone statements in autocommit (reads then cost no BEGIN and
        # no ROLLBACK); every write of the app calls begin first.
        with Connection(self.engine) as connection:
            self.add(connection, "alone")
        autocommits = self.engine.dialect.name in ("sqlite", "postgresql")
        self.assertEqual(self.names(), ["alone"] if autocommits else [])

    def test_constraint_violations_raise_integrity_error(self):
        with Connection(self.engine) as connection:
            connection.begin()
            self.add(connection, "taken")
            connection.commit()
        for name in ("taken", None):
            with self.subTest(name=name):
                with Connection(self.engine) as connection:
                    connection.begin()
                    with self.assertRaises(IntegrityError) as caught:
                        self.add(connection, name)
                self.assertSameKindAsTheDrivers(caught.exception)
                self.assertFalse(caught.exception.connection_invalidated)
        self.assertEqual(self.names(), ["taken"])

    def test_other_driver_errors_become_sqlalchemy_errors_and_keep_the_connection(self):
        invalidated = []
        event.listen(self.engine, "invalidate", lambda *args: invalidated.append(args))
        with Connection(self.engine) as connection:
            with self.assertRaises(DBAPIError) as caught:
                connection.execute("SELECT * FROM no_such_table")
        self.assertSameKindAsTheDrivers(caught.exception)
        self.assertFalse(caught.exception.connection_invalidated)
        self.assertEqual(invalidated, [])
        self.assertEqual(self.names(), [])

    def test_a_connection_broken_mid_checkout_is_invalidated_and_replaced(self):
        checked_out, invalidated = [], []
        event.listen(self.engine, "checkout", lambda dbapi, *_: checked_out.append(dbapi))
        event.listen(self.engine, "invalidate", lambda dbapi, *_: invalidated.append(dbapi))
        with Connection(self.engine) as connection:
            broken = checked_out[-1]
            connection.all(SELECT_ALL)
            self.break_connection(connection, broken)
            # A statement after others may follow writes that are lost: the error is told.
            with self.assertRaises(DBAPIError) as caught:
                connection.all(SELECT_ALL)
            self.assertTrue(caught.exception.connection_invalidated)
            self.assertEqual(invalidated, [broken])
        with Connection(self.engine) as connection:
            self.assertSequenceEqual(connection.all(SELECT_ALL), [])
        self.assertIsNot(checked_out[-1], broken)

    def test_a_connection_that_broke_while_pooled_is_replaced_on_its_first_statement(self):
        # As after a server restart: the first statement fails without having done anything,
        # so it runs again on a new connection, and the caller never sees the error.
        checked_out, invalidated = [], []
        event.listen(self.engine, "checkout", lambda dbapi, *_: checked_out.append(dbapi))
        event.listen(self.engine, "invalidate", lambda dbapi, *_: invalidated.append(dbapi))
        with Connection(self.engine) as connection:
            broken = checked_out[-1]
            self.break_connection(connection, broken)
        for begins in (False, True):
            with self.subTest(begins=begins), Connection(self.engine) as connection:
                if begins:
                    connection.begin()
                self.add(connection, f"begins {begins}")
                connection.commit()
            # The broken one was taken again from the pool only by the first of these.
        self.assertEqual(invalidated, [broken])
        self.assertEqual(self.names(), ["begins False", "begins True"])

    def break_connection(self, connection: Connection, dbapi_connection) -> None:
        """Break a connection as a server restart would; SQLite has no server, so close it."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            dbapi_connection.close()
            return
        session = int(connection.first(SESSION_IDS[dialect])[0])
        deadline = time.monotonic() + SESSION_END_TIMEOUT
        with self.engine.connect() as other:
            other.execute(text(END_SESSION[dialect].format(session=session)))
            while not other.execute(text(SESSION_GONE[dialect].format(session=session))).scalar():
                # Each check in a transaction of its own, which sees the server's present.
                other.rollback()
                self.assertLess(time.monotonic(), deadline, "the session did not end")
                time.sleep(0.05)

    def test_a_database_that_cannot_be_reached_raises_operational_error(self):
        if self.database == "SQLite":
            file = Path(make_url(self.fresh_database_url()).database)
            url = f"sqlite:///{file.parent / 'missing' / file.name}"
        else:
            server = make_url(self.server_database_url())
            closed = server.set(host="127.0.0.1", port=closed_port())
            url = closed.render_as_string(hide_password=False)
        with self.assertRaises(OperationalError) as caught:
            with Connection(self.make_engine(url)):
                pass
        self.assertSameKindAsTheDrivers(caught.exception)


class TestLoneWritesOnPostgres(ProbeTableTestCase):
    """On PostgreSQL a lone write on an open connection commits on its own, in one round trip:
    after a disconnect it may have committed, so it is an error, not a rerun."""

    database = "Postgres"

    def test_a_lone_write_whose_answer_was_lost_is_not_run_again(self):
        server = make_url(self.server_database_url())
        relay = TcpRelay(server.host or "127.0.0.1", server.port or 5432)
        relay.start()
        self.addCleanup(relay.stop)
        through = server.set(host="127.0.0.1", port=relay.port)
        engine = self.make_engine(through.render_as_string(hide_password=False))
        with Connection(engine) as connection:
            connection.all(SELECT_ALL)
        relay.mute()
        outcome: list[DBAPIError | str] = []

        def write() -> None:
            try:
                with Connection(engine) as connection:
                    connection.begin(lone=True)
                    self.add(connection, "once")
                    connection.commit()
                outcome.append("acknowledged")
            except DBAPIError as error:
                outcome.append(error)

        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + SESSION_END_TIMEOUT
        while self.names() != ["once"]:
            self.assertLess(time.monotonic(), deadline, "the write did not reach the server")
            time.sleep(0.02)
        relay.cut()
        writer.join(SESSION_END_TIMEOUT)
        self.assertEqual(len(outcome), 1)
        # The disconnect itself, not what running it again would meet (the name is unique).
        self.assertIsInstance(outcome[0], DBAPIError)
        self.assertTrue(outcome[0].connection_invalidated, outcome[0])
        self.assertEqual(self.names(), ["once"])


@across_databases
class TestSparesOfAWorker(DatabaseTestCase):
    """A worker of `todo serve`, built by its own factory in a process of its own."""

    def test_a_worker_keeps_up_to_its_pools_size_of_connections_and_nothing_else_does(self):
        code = (
            "import json, todo\n"
            "from todo import serve, spares\n"
            "from todo.models import db\n"
            "kept = {}\n"
            "for name, make in (('worker', serve.worker_app), ('python', todo.create_app)):\n"
            "    with make().app_context():\n"
            "        kept[name] = spares.of(db.engine).most\n"
            "        kept['pool'] = db.engine.pool.size()\n"
            "print(json.dumps(kept))\n"
        )
        env = {**os.environ, "DATABASE_URL": self.fresh_database_url()}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        kept = json.loads(done.stdout.splitlines()[-1])
        self.assertEqual(kept, {"worker": kept["pool"], "python": 0, "pool": kept["pool"]})
        self.assertGreater(kept["pool"], 0)
