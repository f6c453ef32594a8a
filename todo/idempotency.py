"""POST with an Idempotency-Key: the first answer is remembered and replayed to retries."""

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import timedelta

import orjson
from flask import current_app
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from todo import store
from todo.models import utcnow
from todo.models.idempotency import (
    DELETE_EXPIRED_KEY,
    DELETE_EXPIRED_KEYS,
    INSERT_KEY,
    KEY_MAX_LENGTH,
    SELECT_KEY,
)
from todo.schemas import InvalidInput, TodoCreate, todo_json

HEADER = "Idempotency-Key"
_KEY = re.compile(rf"[\x21-\x7e](?:[\x20-\x7e]{{0,{KEY_MAX_LENGTH - 2}}}[\x21-\x7e])?")
# Expired keys are purged at most this often per worker, outside the request's transaction.
PURGE_INTERVAL_SECONDS = 60
_last_purge = float("-inf")


@dataclass(frozen=True)
class Created:
    """The answer to a create: the todo as JSON, its id, and whether it is a replay."""

    body: bytes
    todo_id: int
    replayed: bool = False


def check_key(key: str) -> str:
    """Accept keys of 1 to 255 printable ASCII characters."""
    if not _KEY.fullmatch(key):
        message = f"must be 1 to {KEY_MAX_LENGTH} printable ASCII characters"
        raise InvalidInput(
            f"The {HEADER} header {message}.", [{"field": HEADER, "message": message}]
        )
    return key


def fingerprint(payload: TodoCreate) -> str:
    """Digest the request's meaning, so that retries need not match byte for byte."""
    canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def create_once(key: str, payload: TodoCreate) -> Created:
    """Create the todo unless this key already did; replay the first answer if so."""
    digest = fingerprint(payload)
    # The second attempt runs only after a concurrent request with the same key won the race.
    for _ in range(2):
        with store.connect() as connection:
            connection.begin()
            now = utcnow()
            # Read first and write only when needed: on MariaDB a DELETE of a key that is
            # not there locks the gap, and two such requests would deadlock on the insert.
            known = {"key": key, "cutoff": now - _ttl()}
            remembered = connection.first(SELECT_KEY, known)
            if remembered is not None:
                remembered_digest, todo_id, response, expired = remembered
                if expired:
                    connection.execute(DELETE_EXPIRED_KEY, known)
                elif remembered_digest != digest:
                    raise UnprocessableEntity(
                        f"The {HEADER} was already used with a different request body."
                    )
                else:
                    return Created(response.encode(), todo_id, replayed=True)
            todo = store.insert(connection, payload.model_dump())
            body = todo_json(todo)
            remember = {"key": key, "fingerprint": digest, "todo_id": todo.id, "now": now}
            try:
                connection.execute(INSERT_KEY, remember | {"response": body.decode()})
                connection.commit()
            except IntegrityError:
                continue
        purge_expired_keys_now_and_then()
        return Created(body, todo.id)
    raise UnprocessableEntity(f"The {HEADER} is in use by another request; retry it.")


def _ttl() -> timedelta:
    return timedelta(seconds=current_app.config["IDEMPOTENCY_KEY_TTL"])


def purge_expired_keys() -> int:
    """Delete expired keys in a transaction of their own; return how many went."""
    with store.connect() as connection:
        deleted = connection.execute(DELETE_EXPIRED_KEYS, {"cutoff": utcnow() - _ttl()})
        connection.commit()
    return deleted


def purge_expired_keys_now_and_then() -> None:
    """Purge expired keys unless this worker did so recently."""
    global _last_purge
    now = time.monotonic()
    if now - _last_purge >= PURGE_INTERVAL_SECONDS:
        _last_purge = now
        purge_expired_keys()
