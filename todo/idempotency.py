"""POST with an Idempotency-Key: the first answer is remembered and replayed to retries."""

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import timedelta

import orjson
from flask import current_app
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from todo import store, streams
from todo.driver import Statement
from todo.errors import InvalidInput
from todo.models import UTCDateTime, utcnow
from todo.models.idempotency import KEY_MAX_LENGTH, NO_OWNER, IdempotencyKey
from todo.schemas import TodoCreate, todo_json

HEADER = "Idempotency-Key"
# Printable ASCII, neither starting nor ending with a space (which HTTP would strip); at most
# KEY_MAX_LENGTH characters. The OpenAPI document states both.
KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
_KEY = re.compile(KEY_PATTERN)
# Expired keys are purged at most this often per worker, outside the request's transaction.
PURGE_INTERVAL_SECONDS = 60
_last_purge = float("-inf")


# The remembered answer for `key`, and whether it is older than `cutoff`.
SELECT_KEY = Statement(
    select(
        IdempotencyKey.fingerprint,
        IdempotencyKey.todo_id,
        IdempotencyKey.response,
        IdempotencyKey.created_at < bindparam("cutoff", type_=UTCDateTime()),
    ).where(IdempotencyKey.owner_id == bindparam("owner"), IdempotencyKey.key == bindparam("key"))
)
INSERT_KEY = Statement(
    insert(IdempotencyKey).values(
        {name: bindparam(name) for name in ("key", "fingerprint", "todo_id", "response")}
        | {"owner_id": bindparam("owner"), "created_at": bindparam("now", type_=UTCDateTime())}
    )
)
# Keys older than `cutoff`: all of them, or the one named `key` of `owner`.
_EXPIRED = IdempotencyKey.created_at < bindparam("cutoff")
DELETE_EXPIRED_KEYS = Statement(delete(IdempotencyKey).where(_EXPIRED))
DELETE_EXPIRED_KEY = Statement(
    delete(IdempotencyKey).where(
        _EXPIRED,
        IdempotencyKey.owner_id == bindparam("owner"),
        IdempotencyKey.key == bindparam("key"),
    )
)


@dataclass(frozen=True)
class Created:
    """The answer to a create: the todo as JSON, its id, and whether it is a replay."""

    body: bytes
    todo_id: int
    replayed: bool = False


def check_key(key: str) -> str:
    """Accept keys of 1 to 255 printable ASCII characters."""
    if len(key) > KEY_MAX_LENGTH or not _KEY.fullmatch(key):
        message = f"must be 1 to {KEY_MAX_LENGTH} printable ASCII characters"
        raise InvalidInput(
            f"The {HEADER} header {message}.", [{"field": HEADER, "message": message}]
        )
    return key


def fingerprint(payload: TodoCreate) -> str:
    """Digest the request's meaning, so that retries need not match byte for byte."""
    canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def create_once(key: str, payload: TodoCreate, owner: store.Owner) -> Created:
    """Create the owner's todo unless their key already did; replay the first answer if so.

    Keys belong to their owner: two users sending one key create two todos.
    """
    digest = fingerprint(payload)
    user = store.owner_id(owner)
    streams.ensure_started()
    # The second attempt runs only after a concurrent request with the same key won the race.
    for _ in range(2):
        with store.connect() as connection:
            connection.begin()
            now = utcnow()
            # Read first and write only when needed: on MariaDB a DELETE of a key that is
            # not there locks the gap, and two such requests would deadlock on the insert.
            known = {
                "key": key,
                "owner": NO_OWNER if user is None else user,
                "cutoff": now - _ttl(),
            }
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
            todo = store.insert(connection, payload.model_dump(), user)
            body = todo_json(todo)
            remember = known | {"fingerprint": digest, "todo_id": todo.id, "now": now}
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
        connection.begin()
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
