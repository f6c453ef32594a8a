"""The errors the app raises, and the one place an exception becomes a response (RFC 9457)."""

import sqlite3
from http import HTTPStatus
from typing import Any

import orjson
from flask import Flask, Response, current_app
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import InternalError as DatabaseInternalError
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    PreconditionFailed,
    RequestEntityTooLarge,
)
from werkzeug.http import quote_etag

from todo.database import UNAVAILABLE_ERRORS

PROBLEM_JSON = "application/problem+json"
# How each engine says it can store no more: SQLite's file or AUTOINCREMENT ids are full
# (SQLITE_FULL); PostgreSQL's id sequence reached its maximum (SQLSTATE 2200H); MariaDB's
# AUTO_INCREMENT left the id column's range (handler error 167; 1467 on MySQL).
_POSTGRES_SEQUENCE_LIMIT = "2200H"
_MYSQL_AUTO_INCREMENT_ERRORS = (167, 1467)


class InvalidInput(Exception):
    """A request whose body, query or headers break the contract; answered with 400."""

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class StalePrecondition(PreconditionFailed):
    """A 412 that names the todo's current ETag, so the client can read it again and retry."""

    def __init__(self, description: str, etag: str):
        super().__init__(description)
        self.etag = etag

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("ETag", quote_etag(self.etag))]


def problem(status: int, detail: str, headers: Any = None, **extra: Any) -> Response:
    """Build a problem details response."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(orjson.dumps(body), status, headers=headers, mimetype=PROBLEM_JSON)


def _http_error(error: HTTPException) -> Response:
    # Keep the headers the error carries (Allow on 405, Retry-After on 503), not its HTML.
    headers = [(name, value) for name, value in error.get_headers() if name != "Content-Type"]
    return problem(error.code or 500, error.description or "", headers)


def _too_large(error: RequestEntityTooLarge) -> Response:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return problem(413, f"The request body is larger than the limit of {limit} bytes.")


def _invalid_input(error: InvalidInput) -> Response:
    extra = {"errors": error.errors} if error.errors else {}
    return problem(400, error.detail, **extra)


def _database_full(error: Exception) -> bool:
    """Tell whether a database error says that it can store no more todos."""
    if not isinstance(error, DBAPIError):
        return False
    cause = error.orig
    # PyMySQL's errors carry MariaDB's error number first.
    number = cause.args[0] if cause is not None and cause.args else None
    return (
        getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(cause, "sqlstate", None) == _POSTGRES_SEQUENCE_LIMIT
        or number in _MYSQL_AUTO_INCREMENT_ERRORS
    )


def _no_room(error: Exception) -> Response:
    # Waiting does not help (ids are never reused), so there is no Retry-After.
    current_app.logger.error("The database can store no more todos: %s", error)
    return problem(507, "No more todos can be stored: the database is full.")


def _database_error(error: DBAPIError) -> Response:
    if _database_full(error):
        return _no_room(error)
    # Anything else is unexpected: Flask logs it and answers 500.
    raise error


def _database_unavailable(error: Exception) -> Response:
    if _database_full(error):
        return _no_room(error)
    current_app.logger.warning("Database unavailable: %s", error)
    return problem(503, "The database is unavailable; try again shortly.", {"Retry-After": "1"})


def _internal_error(error: InternalServerError) -> Response:
    # Flask has already logged the original exception; the client learns nothing internal.
    return problem(500, "The server could not complete the request.")


def init_app(app: Flask) -> None:
    """Answer every error the app can raise with problem details."""
    app.register_error_handler(InvalidInput, _invalid_input)
    for error_class in UNAVAILABLE_ERRORS:
        app.register_error_handler(error_class, _database_unavailable)
    app.register_error_handler(DataError, _database_error)
    app.register_error_handler(DatabaseInternalError, _database_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(InternalServerError, _internal_error)
    app.register_error_handler(HTTPException, _http_error)
