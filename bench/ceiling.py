"""The benchmark's ceiling: the service's hot routes on a plain DB-API driver and json.dumps.

An upper bound for what the service could reach on the same data and server
settings, so validation is minimal. It runs on the database named by DATABASE_URL, as
the service does: SQLite through sqlite3, PostgreSQL through psycopg with prepared
statements, MariaDB through PyMySQL; a connection per thread, kept open, in autocommit
(bench/databases.py). The routes are the same on every database. Serve it with
`gunicorn bench.ceiling:app`.
"""

import json
import os
import re
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import parse_qs

from bench.databases import Database

COLUMNS = "id, title, description, completed, deadline_at, created_at, updated_at"
WRITABLE = ("title", "description", "completed", "deadline_at")
# The service's text form of a naive UTC datetime in SQLite: the API's own format, which
# orders as text and is sent as it is stored.
DB_TIME = "%Y-%m-%dT%H:%M:%S"
TODO_PATH = re.compile(r"/api/v1/todos/(\d{1,18})")

DATABASE = Database(os.environ["DATABASE_URL"])


class HTTPError(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


def db_now(days=0):
    return (datetime.now(UTC).replace(tzinfo=None) + timedelta(days=days)).strftime(DB_TIME)


def to_dict(row):
    return {
        "id": row[0],
        "title": row[1],
        "description": row[2],
        "completed": bool(row[3]),
        "deadline_at": row[4],
        "created_at": row[5],
        "updated_at": row[6],
    }


def parse_deadline(value):
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(DB_TIME)


def read_fields(environ, required):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = json.loads(environ["wsgi.input"].read(length))
    if not isinstance(data, dict) or not set(data) <= set(WRITABLE):
        raise HTTPError(400)
    if required and not isinstance(data.get("title"), str):
        raise HTTPError(400)
    if "deadline_at" in data:
        data["deadline_at"] = parse_deadline(data["deadline_at"])
    if "completed" in data and not isinstance(data["completed"], bool):
        raise HTTPError(400)
    return data


def list_todos(environ):
    query = {key: values[-1] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    # The drivers prepare statements by their text; the text comes from a fixed set of
    # clauses, so each shape is prepared once per connection.
    clauses, params = [], []
    if "completed" in query:
        clauses.append("completed = ?")
        params.append({"true": True, "false": False}[query["completed"].lower()])
    if "window" in query:
        clauses.append("deadline_at IS NOT NULL AND deadline_at <= ?")
        params.append(db_now(days=int(query["window"])))
    if "after" in query:
        clauses.append("id > ?")
        params.append(int(query["after"]))
    sql = f"SELECT {COLUMNS} FROM todos"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id"
    if "limit" in query:
        sql += " LIMIT ?"
        params.append(int(query["limit"]))
    rows = DATABASE.execute(sql, params).fetchall()
    return "200 OK", [to_dict(row) for row in rows], []


def get_todo(todo_id):
    row = DATABASE.execute(f"SELECT {COLUMNS} FROM todos WHERE id = ?", (todo_id,)).fetchone()
    if row is None:
        raise HTTPError(404)
    return "200 OK", to_dict(row), []


def create_todo(environ):
    data = read_fields(environ, required=True)
    now = db_now()
    values = [data["title"], data.get("description"), data.get("completed", False)]
    cursor = DATABASE.execute(
        "INSERT INTO todos (title, description, completed, deadline_at,"
        f" created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, 1) RETURNING {COLUMNS}",
        [*values, data.get("deadline_at"), now, now],
    )
    row = cursor.fetchone()
    return "201 Created", to_dict(row), [("Location", f"/api/v1/todos/{row[0]}")]


def update_todo(environ, todo_id):
    data = read_fields(environ, required=False)
    names = [name for name in WRITABLE if name in data]
    assignments = "".join(f"{name} = ?, " for name in names)
    sql = f"UPDATE todos SET {assignments}updated_at = ?, version = version + 1 WHERE id = ?"
    params = [data[name] for name in names] + [db_now(), todo_id]
    if DATABASE.update_returning:
        row = DATABASE.execute(f"{sql} RETURNING {COLUMNS}", params).fetchone()
    elif DATABASE.execute(sql, params).rowcount:
        row = DATABASE.execute(f"SELECT {COLUMNS} FROM todos WHERE id = ?", (todo_id,)).fetchone()
    else:
        row = None
    if row is None:
        raise HTTPError(404)
    return "200 OK", to_dict(row), []


def health():
    DATABASE.execute("SELECT 1").fetchone()
    return "200 OK", {"status": "ok"}, []


def problem(code):
    status = HTTPStatus(code)
    return f"{code} {status.phrase}", {"type": "about:blank", "status": code}, []


def route(environ):
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    match = TODO_PATH.fullmatch(path)
    if match and method == "GET":
        return get_todo(int(match[1]))
    if match and method == "PUT":
        return update_todo(environ, int(match[1]))
    if path == "/api/v1/todos" and method == "GET":
        return list_todos(environ)
    if path == "/api/v1/todos" and method == "POST":
        return create_todo(environ)
    if path == "/api/v1/health" and method == "GET":
        return health()
    raise HTTPError(405 if match or path == "/api/v1/todos" else 404)


def answer(handler, *arguments):
    """Run one of the handlers above; return its status, headers, content type and body."""
    try:
        status, payload, headers = handler(*arguments)
        content_type = "application/json"
    except HTTPError as error:
        status, payload, headers = problem(error.status)
        content_type = "application/problem+json"
    except (ValueError, KeyError, TypeError, *DATABASE.input_errors):
        status, payload, headers = problem(400)
        content_type = "application/problem+json"
    # Compact, as the service writes it, so that both send the same bytes. SQLite's
    # timestamps are already the API's text; the servers' drivers give datetimes.
    body = json.dumps(payload, separators=(",", ":"), default=datetime.isoformat).encode()
    return status, headers, content_type, body


def app(environ, start_response):
    """Answer one request (WSGI)."""
    status, headers, content_type, body = answer(route, environ)
    headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]
