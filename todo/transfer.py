"""Todos in bulk: demo data, and a backup as JSON Lines that an import restores exactly.

Each line of an export is the API's JSON of one todo (todo.schemas.todo_json), in id order.
An import validates each line as the API validates a create, plus the id and timestamps it
keeps, and inserts them all in one transaction: a bad line leaves the database as it was.
Todos made here have no owner, as those made while AUTH is none (`todos adopt` gives them).
"""

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import IO, Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from todo import lists, store, streams
from todo.errors import InvalidInput
from todo.models import db, naive_utc, utcnow
from todo.models.todo import ADVANCE_POSTGRES_ID_SEQUENCE, Todo
from todo.schemas import TodoCreate, TodoImport, parse_body, todo_json

# Rows per statement: bulk inserts, existence checks and export pages.
BATCH = 1000
# Run with a batch of rows: the driver's executemany (psycopg pipelines it, PyMySQL writes
# one INSERT of many rows). Measured faster here than RETURNING's batches of many rows or
# a VALUES list of a thousand, whose long SQL psycopg converts anew each time.
_INSERT = sa.insert(Todo.__table__)
_EXPORT_PAGE = lists.select_todos(
    lists.Shape(scope="shared", completed=None, window=False, after=True)
)


class ImportRefused(Exception):
    """A file that cannot be imported; nothing of it was."""


def export_todos(out: IO[bytes]) -> int:
    """Write every todo, in id order, as JSON Lines; return how many."""
    count = 0
    with store.connect() as connection:
        # One moment's todos, however the API writes meanwhile.
        connection.begin_snapshot()
        after = 0
        while rows := connection.all(_EXPORT_PAGE, {"after": after, "limit": BATCH}):
            out.write(b"".join(todo_json(row) + b"\n" for row in rows))
            count += len(rows)
            after = rows[-1][0]
        # Ends the snapshot; nothing was written.
        connection.commit()
    return count


def _line_error(number: int, error: InvalidInput) -> ImportRefused:
    problems = "; ".join(f"{problem['field']} {problem['message']}" for problem in error.errors)
    return ImportRefused(f"Line {number}: {problems}")


def _read(lines: Iterable[bytes]) -> Iterator[tuple[int, TodoImport]]:
    """Yield each line's number and todo; refuse the first line that is not a valid todo."""
    seen: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ImportRefused(f"Line {number}: not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise ImportRefused(f"Line {number}: not a JSON object")
        try:
            todo = TodoImport.model_validate(document)
        except ValidationError:
            try:
                # Only for its messages: the API's, field by field.
                parse_body(TodoImport, line)
            except InvalidInput as error:
                raise _line_error(number, error) from None
            raise
        if todo.id in seen:
            raise ImportRefused(f"Line {number}: id {todo.id} is already on line {seen[todo.id]}")
        seen[todo.id] = number
        yield number, todo


def _stored(todo: TodoImport) -> dict[str, Any]:
    return todo.model_dump() | {"version": 1, "owner_id": None}


def _batches(todos: Iterator[tuple[int, TodoImport]]) -> Iterator[list[tuple[int, TodoImport]]]:
    while batch := [item for _, item in zip(range(BATCH), todos, strict=False)]:
        yield batch


def _refuse_existing(connection: sa.Connection, batch: list[tuple[int, TodoImport]]) -> None:
    lines = {todo.id: number for number, todo in batch}
    # A range of two values rather than a list of a thousand: far cheaper to send, and
    # what it finds besides the batch's ids is at most the todos already stored.
    stored = sa.select(Todo.id).where(Todo.id.between(min(lines), max(lines)))
    taken = [todo_id for todo_id in connection.scalars(stored) if todo_id in lines]
    if taken:
        number, todo_id = min((lines[todo_id], todo_id) for todo_id in taken)
        raise ImportRefused(f"Line {number}: id {todo_id} is already in the database")


def import_todos(lines: Iterable[bytes]) -> int:
    """Insert the todos of JSON Lines, ids and timestamps kept, in one transaction.

    Refuses the whole file at its first bad line, or at an id the database already has.
    """
    count = last_id = 0
    # On SQLite the write lock is taken up front, so no write can slip in between the
    # check of the ids and their insert.
    with db.engine.connect().execution_options(sqlite_begin="BEGIN IMMEDIATE") as connection:
        with connection.begin():
            for batch in _batches(_read(lines)):
                _refuse_existing(connection, batch)
                try:
                    connection.execute(_INSERT, [_stored(todo) for _, todo in batch])
                except IntegrityError:
                    raise ImportRefused(
                        "An id of the file was taken by a todo made while importing"
                    ) from None
                count += len(batch)
                last_id = max(last_id, *(todo.id for _, todo in batch))
            # The todos join the list without change numbers: clients sync it anew.
            connection.execute(streams.NEW_GENERATION)
            if last_id and connection.dialect.name == "postgresql":
                # The sequence does not notice explicit ids; SQLite and MariaDB move past them.
                connection.execute(ADVANCE_POSTGRES_ID_SEQUENCE, {"id": last_id})
        if count and connection.dialect.name == "postgresql":
            # Until autovacuum gets to them, PostgreSQL would plan filtered lists of the new
            # todos without statistics: as reads of the whole table (todo.lists).
            connection.execute(sa.text("ANALYZE todos"))
            connection.commit()
    return count


_DOING = (
    "Buy",
    "Call",
    "Email",
    "Fix",
    "Plan",
    "Read",
    "Review",
    "Write",
    "Book",
    "Clean",
    "Pay",
    "Prepare",
)
_THINGS = (
    "the quarterly report",
    "the dentist",
    "groceries for the week",
    "the leaking tap",
    "the team offsite",
    "chapter 3 of the textbook",
    "the pull request on login",
    "a thank-you note to Sam",
    "train tickets to Brisbane",
    "the garage",
    "the electricity bill",
    "slides for Monday's lecture",
)
_DETAILS = (
    "Ask for the second quote before deciding.",
    "Bring the receipts from last month.",
    "Check the notes from the last meeting first.",
    "No later than Friday, ideally Thursday morning.",
    "Only the parts marked in red.",
    None,
)
# How far from now a deadline may be, in hours: a month back to two months ahead.
_DEADLINE_HOURS = range(-30 * 24, 60 * 24)


def _demo(chance: random.Random, now: datetime) -> dict[str, Any]:
    """Return a plausible new todo as a client would send it."""
    todo: dict[str, Any] = {
        "title": f"{chance.choice(_DOING)} {chance.choice(_THINGS)}",
        "completed": chance.random() < 0.3,
    }
    if chance.random() < 0.4:
        todo["description"] = chance.choice(_DETAILS)
    if chance.random() < 0.7:
        deadline = now + timedelta(hours=chance.choice(_DEADLINE_HOURS))
        todo["deadline_at"] = deadline.replace(minute=0, second=0).strftime("%Y-%m-%dT%H:%M:%S")
    return todo


def seed_todos(count: int, chance: random.Random | None = None) -> int:
    """Make `count` demo todos, validated and stored as the API creates them, in bulk."""
    chance = chance or random.Random()
    with db.engine.begin() as connection:
        for start in range(0, count, BATCH):
            now = naive_utc(utcnow())
            rows = []
            for _ in range(min(BATCH, count - start)):
                fields = TodoCreate.model_validate(_demo(chance, now)).model_dump()
                # The values store.insert gives a new todo.
                rows.append(
                    fields
                    | {
                        "deadline_at": naive_utc(fields["deadline_at"]),
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                        "owner_id": None,
                    }
                )
            connection.execute(_INSERT, rows)
        # The todos join the list without change numbers: clients sync it anew (todo.streams).
        connection.execute(streams.NEW_GENERATION)
    return count
