"""SQLite's WAL checkpoints, taken by a thread of each `todo serve` worker, not by a request.

In WAL mode SQLite appends each commit to the `-wal` file and copies its pages back into the
database (a checkpoint) from the commit that takes it past 1,000 pages: that request waits for
the copy and its fsyncs, about 4 ms here against 0.2 for a write alone, and under load those
requests were much of the writes' slowest percent (bench/README.md). Under `todo serve` each
worker leaves the copy to a thread of its own, which checkpoints what it can every `INTERVAL`
seconds without waiting for anyone (PASSIVE: a reader still on old pages keeps them, a
checkpoint in another worker makes this one skip). The service's connections keep SQLite's own
checkpoint, at `FALLBACK_PAGES`, so that the `-wal` file stays bounded if the thread falls
behind or stops. Every other program on the file (the CLI, the Python interface, `flask run`)
keeps SQLite's default.
"""

import os
import sqlite3
import threading
import time

from flask import Flask
from sqlalchemy import Engine, event

from todo import write_queue
from todo.database import sqlite_file
from todo.models import db

INTERVAL = 0.05
# Ten times SQLite's default (pages of the -wal file), as the service's connections' own
# checkpoint: only reached when the thread does not keep up.
FALLBACK_PAGES = 10_000


def take_in_background(app: Flask) -> None:
    """Checkpoint the app's SQLite file from a thread of this process, from now on."""
    with app.app_context():
        engine: Engine = db.engine
    database = sqlite_file(engine)
    if database is None:
        return
    event.listen(engine, "connect", _checkpoint_only_far_behind)
    # Connections made while the app started follow it too: they are made again.
    engine.dispose()
    threading.Thread(
        target=_checkpoint_forever, args=(database, app), name="wal checkpoints", daemon=True
    ).start()


def _checkpoint_only_far_behind(dbapi_connection, connection_record) -> None:
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES}")


def _checkpoint_forever(database: str, app: Flask) -> None:
    connection = None
    warned = False
    while True:
        time.sleep(INTERVAL)
        if not os.path.exists(database):
            if connection is not None:
                break  # the file went (a test's folder removed): nothing is left to copy
            continue  # not made yet (a volume mounted late): the app makes it
        try:
            if connection is None:
                # Its own, which never waits for a lock: a checkpoint that cannot go on now
                # is taken at the next turn.
                connection = sqlite3.connect(database, isolation_level=None, timeout=0)
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            warned = False
        except sqlite3.Error as error:
            if write_queue.is_busy(error):
                continue  # another worker's checkpoint, under way
            if not warned:
                app.logger.warning("A WAL checkpoint failed; SQLite's own one stands by: %s", error)
                warned = True
    if connection is not None:
        connection.close()
