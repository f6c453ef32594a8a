"""SQLite's WAL checkpoints: off the requests under `todo serve`, SQLite's own elsewhere."""

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from tests.base import DatabaseTestCase
from tests.server import Client
from tests.test_server import TODOS, ServerTestCase
from todo import checkpoints, create_app
from todo.models import db

# SQLite's default: a commit that takes the -wal file past this many pages copies it back.
SQLITE_DEFAULT_PAGES = 1000


def autocheckpoint(app) -> int:
    """The pages at which the app's connections checkpoint on their own."""
    with app.app_context():
        pages = db.session.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
        db.session.remove()
        return pages


def todos_in_the_database_file(path: Path) -> int | None:
    """Count the todos in the database file itself, leaving out what is only in its -wal
    file; None while a checkpoint is copying pages into it."""
    uri = f"file:{path}?immutable=1"
    try:
        with sqlite3.connect(uri, uri=True) as connection:
            return connection.execute("SELECT count(*) FROM todos").fetchone()[0]
    except sqlite3.DatabaseError:
        return None


class TestCheckpointSettings(DatabaseTestCase):
    def setUp(self) -> None:
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.fresh_database_url()})

    def tearDown(self) -> None:
        with self.app.app_context():
            db.engine.dispose()

    def test_the_python_interface_and_the_cli_keep_sqlites_own_checkpoints(self):
        self.assertEqual(autocheckpoint(self.app), SQLITE_DEFAULT_PAGES)

    def test_a_worker_checkpoints_from_a_thread_and_sqlite_only_far_behind_it(self):
        checkpoints.take_in_background(self.app)
        self.assertEqual(autocheckpoint(self.app), checkpoints.FALLBACK_PAGES)
        self.assertIn("wal checkpoints", [thread.name for thread in threading.enumerate()])

    def test_a_database_in_memory_is_left_alone(self):
        app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})
        threads = threading.active_count()
        checkpoints.take_in_background(app)
        self.assertEqual(threading.active_count(), threads)


class TestCheckpointsUnderTheServer(ServerTestCase):
    def test_every_acknowledged_write_reaches_the_database_file_within_moments(self):
        # Without the workers' thread, the writes since SQLite's last checkpoint would stay in
        # the -wal file alone until 1,000 more pages of writes.
        server = self.start_server(workers=2)
        path = Path(self.url.removeprefix("sqlite:///"))
        created = 0
        with Client(server.port) as client:
            for number in range(300):
                response = client.request("POST", TODOS, {"title": f"todo {number}"})
                self.assertEqual(response.status, 201)
                created += 1
        deadline = time.monotonic() + 10
        while todos_in_the_database_file(path) != created and time.monotonic() < deadline:
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        self.assertEqual(todos_in_the_database_file(path), created)
