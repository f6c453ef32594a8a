"""SQLite: the service's writers wait for each other in a queue, never behind outside writers."""

import fcntl
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

from tests.base import AppTestCase
from todo import spares, store, streams, write_queue
from todo.driver import Connection
from todo.models import db

TODOS = "/api/v1/todos"
FIELDS = {"title": "held", "description": None, "completed": False, "deadline_at": None}
# Long enough for anything here to finish, short enough that a hang fails instead of waiting.
PATIENCE = 30


class TestWriteQueue(AppTestCase):
    def database_url(self) -> str:  # type: ignore[override]
        url = self.fresh_database_url()
        self.path = Path(url.removeprefix("sqlite:///"))
        return url

    def use(self, **settings: Any) -> None:
        """Serve this test from an app with these settings, on a database of its own."""
        with self.app.app_context():
            db.engine.dispose()
        self.app = self.make_app(**settings)
        self.client = self.app.test_client()

    def post_in_thread(self, title: str) -> tuple[threading.Thread, dict[str, Any]]:
        """POST a todo from a thread of its own, as another request would; the answer comes
        in the dict."""
        answer: dict[str, Any] = {}

        def post() -> None:
            response = self.app.test_client().post(TODOS, json={"title": title})
            answer["status"] = response.status_code

        thread = threading.Thread(target=post)
        thread.start()
        self.addCleanup(thread.join, PATIENCE)
        return thread, answer

    def queue_is_free(self) -> bool:
        """Whether no writer holds the queue: a lock of the queue's file can be taken at once."""
        fd = os.open(f"{self.path}-writers", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def outside_writer(self) -> sqlite3.Connection:
        """A connection of someone else's program that holds SQLite's write lock."""
        outsider = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(outsider.close)
        outsider.execute("BEGIN IMMEDIATE")
        return outsider

    def test_a_write_waits_for_the_one_before_it_instead_of_failing(self):
        # Without a busy timeout, a write that met another one's lock answered 503 at once.
        self.use(SQLITE_BUSY_TIMEOUT=0)
        self.create(title="first")
        self.assertTrue(Path(f"{self.path}-writers").exists())
        with self.app.app_context(), Connection(db.engine) as first:
            streams.ensure_started()
            first.begin()
            store.insert(first, FIELDS, None)
            self.assertFalse(self.queue_is_free())
            waiting, answer = self.post_in_thread("second")
            # It waits as long as the first write holds the queue, however long that is.
            waiting.join(0.5)
            self.assertTrue(waiting.is_alive(), answer)
            first.commit()
        waiting.join(PATIENCE)
        self.assertEqual(answer, {"status": 201})
        titles = [todo["title"] for todo in self.client.get(TODOS).get_json()]
        self.assertEqual(titles, ["first", "held", "second"])
        self.assertTrue(self.queue_is_free())

    def test_a_writer_outside_the_queue_is_waited_for_in_sqlite_within_the_busy_timeout(self):
        self.use(SQLITE_BUSY_TIMEOUT=0)
        self.create(title="before")
        outsider = self.outside_writer()
        response = self.client.post(TODOS, json={"title": "refused"})
        self.assertProblem(response, 503)
        self.assertEqual(response.headers["Retry-After"], "1")
        self.assertTrue(self.queue_is_free())
        outsider.execute("COMMIT")
        self.create(title="after")
        titles = [todo["title"] for todo in self.client.get(TODOS).get_json()]
        self.assertEqual(titles, ["before", "after"])

    def test_writes_waiting_for_an_outside_writer_do_not_queue_behind_each_other(self):
        # Each waits out its own busy timeout at the same time as the others: held in the
        # queue while they waited, the last would answer after all their timeouts in turn.
        self.use(SQLITE_BUSY_TIMEOUT=1)
        self.create(title="before")
        self.outside_writer()
        started = time.monotonic()
        writers = [self.post_in_thread(f"refused {number}") for number in range(5)]
        for thread, _ in writers:
            thread.join(PATIENCE)
        self.assertLess(time.monotonic() - started, 4)
        self.assertEqual([answer for _, answer in writers], [{"status": 503}] * 5)

    def test_a_worker_that_dies_holding_the_queue_lets_the_next_writer_in(self):
        self.create(title="before")
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_QUEUE, f"{self.path}-writers"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.addCleanup(holder.wait, PATIENCE)
        self.addCleanup(holder.kill)
        assert holder.stdout is not None
        self.addCleanup(holder.stdout.close)
        self.assertEqual(holder.stdout.readline(), "held\n")
        self.assertFalse(self.queue_is_free())
        holder.kill()
        holder.wait(PATIENCE)
        self.create(title="after")

    def test_the_pool_hands_out_connections_that_wait_for_the_lock_as_configured(self):
        # A connection that joined the queue is refused at once by SQLite until it goes back
        # to the pool: the ORM, the CLI and the next request find it waiting as configured.
        self.use(SQLITE_BUSY_TIMEOUT=7)
        self.create(title="written")
        with self.app.app_context():
            spares.of(db.engine).give_all_back()
            pooled = [db.engine.raw_connection() for _ in range(db.engine.pool.checkedin())]
            try:
                timeouts = [
                    connection.driver_connection.execute("PRAGMA busy_timeout").fetchone()[0]
                    for connection in pooled
                ]
            finally:
                for connection in pooled:
                    connection.close()
        self.assertTrue(timeouts)
        self.assertEqual(timeouts, [7000] * len(timeouts))


class TestWriteQueueOfAWorker(TestWriteQueue):
    """The same with connections kept between requests, as a worker of `todo serve` keeps them
    (todo.spares): one that joined the queue stays refused at once by SQLite meanwhile."""

    def make_app(self, **overrides: Any):
        app = super().make_app(**overrides)
        with app.app_context():
            spares.keep_for(db.engine)
        return app

    def test_a_kept_connection_waits_for_an_outside_writer_as_configured(self):
        self.create(title="before")
        outsider = self.outside_writer()
        waiting, answer = self.post_in_thread("after")
        # Refused at once, it would answer 503 now; it waits out of the queue instead.
        waiting.join(0.5)
        self.assertTrue(waiting.is_alive(), answer)
        self.assertTrue(self.queue_is_free())
        outsider.execute("COMMIT")
        waiting.join(PATIENCE)
        self.assertEqual(answer, {"status": 201})
        self.create(title="later")
        titles = [todo["title"] for todo in self.client.get(TODOS).get_json()]
        self.assertEqual(titles, ["before", "after", "later"])

    def test_a_kept_connection_reads_while_an_outside_writer_holds_the_lock(self):
        self.create(title="before")
        outsider = self.outside_writer()
        outsider.execute("DELETE FROM todos")
        response = self.client.get(TODOS)
        self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
        self.assertEqual([todo["title"] for todo in response.get_json()], ["before"])


# A process that takes the queue, as a worker in the middle of a write does, and never lets go.
HOLD_THE_QUEUE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(3600)
"""


class TestBusy(unittest.TestCase):
    def test_every_kind_of_sqlite_busy_is_busy_and_nothing_else(self):
        # SQLite reports its extended codes (SQLITE_BUSY_RECOVERY while another worker
        # recovers the WAL, SQLITE_BUSY_SNAPSHOT here): each is a busy database all the same.
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "busy.sqlite")
            reader = sqlite3.connect(path, isolation_level=None, timeout=0)
            writer = sqlite3.connect(path, isolation_level=None, timeout=0)
            try:
                reader.execute("PRAGMA journal_mode=WAL")
                reader.execute("CREATE TABLE t (x)")
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM t").fetchall()
                writer.execute("INSERT INTO t VALUES (1)")
                with self.assertRaises(sqlite3.OperationalError) as snapshot:
                    reader.execute("INSERT INTO t VALUES (2)")
                self.assertNotEqual(snapshot.exception.sqlite_errorcode, sqlite3.SQLITE_BUSY)
                self.assertTrue(write_queue.is_busy(snapshot.exception))
                reader.execute("ROLLBACK")
                with self.assertRaises(sqlite3.OperationalError) as missing:
                    reader.execute("SELECT * FROM no_such_table")
                self.assertFalse(write_queue.is_busy(missing.exception))
            finally:
                reader.close()
                writer.close()
