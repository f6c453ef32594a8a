"""Users and tokens in the database: passwords, secrets, and who a bearer token speaks for.

Passwords are kept only as argon2id hashes and tokens only as SHA-256 digests; neither
the password nor the token ever leaves this module except as the answer that creates it.
"""

import hashlib
import re
import secrets
import threading
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import BigInteger, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict

from todo import store, streams
from todo.driver import Statement
from todo.models import UTCDateTime, naive_utc, utcnow
from todo.models.idempotency import IdempotencyKey
from todo.models.todo import Todo
from todo.models.user import Token, User, live_token

TOKEN_PREFIX = "todo_"
# 32 random bytes (256 bits), URL-safe base64 without padding: 43 characters.
TOKEN_BYTES = 32
TOKEN_PATTERN = r"^todo_[A-Za-z0-9_-]{43}$"
_TOKEN = re.compile(TOKEN_PATTERN)
DEFAULT_TOKEN_NAME = "token"

# argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, 3 passes).
_hasher = PasswordHasher()
# A hash no password matches, checked when the username is unknown, so that an unknown user
# costs what a wrong password costs and the answer's timing tells the two apart no better.
_UNKNOWN_USER_HASH = _hasher.hash(secrets.token_urlsafe(32))
# Each hash takes 64 MiB and a core for tens of milliseconds: at most this many run at once
# in a worker, however many clients try to log in together; the others wait their turn.
HASHES_AT_ONCE = 2
_hashing = threading.BoundedSemaphore(HASHES_AT_ONCE)

_USER_COLUMNS = (User.id, User.username, User.created_at)
_TOKEN_COLUMNS = (Token.id, Token.name, Token.created_at, Token.expires_at)
_OWNER = bindparam("user_id", type_=BigInteger())

INSERT_USER = Statement(
    insert(User)
    .values(
        {name: bindparam(name) for name in ("username", "username_key", "password_hash")}
        | {"created_at": bindparam("now", type_=UTCDateTime())}
    )
    .return_defaults(User.id)
)
SELECT_USER = Statement(select(*_USER_COLUMNS).where(User.id == _OWNER))
SELECT_LOGIN = Statement(
    select(User.id, User.password_hash).where(User.username_key == bindparam("username_key"))
)
SELECT_USER_BY_NAME = Statement(
    select(*_USER_COLUMNS).where(User.username_key == bindparam("username_key"))
)
# The one lookup a bearer request costs: a unique index on the digest.
SELECT_TOKEN_OWNER = Statement(select(Token.user_id).where(live_token(bindparam("digest"))))
INSERT_TOKEN = Statement(
    insert(Token)
    .values(
        {name: bindparam(name) for name in ("user_id", "name", "digest")}
        | {
            "created_at": bindparam("now", type_=UTCDateTime()),
            "expires_at": bindparam("expires_at", type_=UTCDateTime()),
        }
    )
    .return_defaults(Token.id)
)
SELECT_TOKENS = Statement(select(*_TOKEN_COLUMNS).where(Token.user_id == _OWNER).order_by(Token.id))
SELECT_TOKEN = Statement(
    select(*_TOKEN_COLUMNS)
    .where(Token.user_id == _OWNER, Token.id == bindparam("token_id"))
    .with_for_update()
)
DELETE_TOKEN = Statement(
    delete(Token).where(Token.user_id == _OWNER, Token.id == bindparam("token_id"))
)
SELECT_USER_FOR_DELETE = Statement(
    select(*_USER_COLUMNS).where(User.id == _OWNER).with_for_update()
)
# Everything a user owns, children first, then the user.
DELETE_ACCOUNT = (
    Statement(delete(IdempotencyKey).where(IdempotencyKey.owner_id == _OWNER)),
    Statement(delete(Token).where(Token.user_id == _OWNER)),
    Statement(delete(Todo).where(Todo.owner_id == _OWNER)),
    *streams.FORGET_STREAM,
    Statement(delete(User).where(User.id == _OWNER)),
)
# The owner is not part of a todo as clients see it: adopting one keeps its updated_at (and
# its version, so its ETag). Said explicitly, as otherwise the column's Python-side onupdate
# would become a parameter that the driver layer, which runs no such defaults, sends as NULL.
ADOPT_TODOS = Statement(
    update(Todo).where(Todo.owner_id.is_(None)).values(owner_id=_OWNER, updated_at=Todo.updated_at)
)


def _user(row: tuple) -> dict[str, Any]:
    return dict(zip(("id", "username", "created_at"), row, strict=True))


def _token(row: tuple) -> dict[str, Any]:
    return dict(zip(("id", "name", "created_at", "expires_at"), row, strict=True))


def username_key(username: str) -> str:
    """Return the form of a username that comparisons use: usernames are ASCII."""
    return username.lower()


def hash_password(password: str) -> str:
    """Return a new salted argon2id hash of a password."""
    with _hashing:
        return _hasher.hash(password)


def _password_matches(password_hash: str, password: str) -> bool:
    with _hashing:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def digest(token: str) -> str:
    """Return what the database keeps of a token: its SHA-256, in hex.

    A token carries 256 random bits, so a fast hash is enough: no one can guess one from it.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    """Tell whether a value has a token's shape; anything else is refused without a lookup."""
    return _TOKEN.fullmatch(value) is not None


def create_user(username: str, password: str) -> dict[str, Any]:
    """Register a user; 409 when the username is taken, in any letter case."""
    password_hash = hash_password(password)
    now = utcnow()
    values = {
        "username": username,
        "username_key": username_key(username),
        "password_hash": password_hash,
        "now": now,
    }
    try:
        with store.connect() as connection:
            connection.begin()
            user_id = connection.insert(INSERT_USER, values)
            # The user's list's change counter (todo.streams), made before a sync numbers it.
            connection.execute(streams.create_stream(connection.dialect.name), {"stream": user_id})
            connection.commit()
    except IntegrityError:
        raise Conflict(f"The username {username!r} is taken.") from None
    return {"id": user_id, "username": username, "created_at": naive_utc(now)}


def find_user(username: str) -> dict[str, Any] | None:
    """Return the user with this username, in any letter case; None if there is none."""
    with store.connect() as connection:
        row = connection.first(SELECT_USER_BY_NAME, {"username_key": username_key(username)})
    return None if row is None else _user(row)


def login(username: str, password: str) -> int | None:
    """Return the id of the user these credentials name; None for a wrong password or user.

    An unknown username costs one hash, as a wrong password does.
    """
    with store.connect() as connection:
        row = connection.first(SELECT_LOGIN, {"username_key": username_key(username)})
    if row is None:
        _password_matches(_UNKNOWN_USER_HASH, password)
        return None
    user_id, password_hash = row
    return user_id if _password_matches(password_hash, password) else None


def token_owner(token: str) -> int | None:
    """Return the id of the user a token acts for; None if it is unknown, revoked or expired."""
    if not looks_like_token(token):
        return None
    with store.connect() as connection:
        row = connection.first(SELECT_TOKEN_OWNER, {"digest": digest(token)})
    return None if row is None else row[0]


def create_token(user_id: int, name: str | None, expires_in_days: int | None) -> dict[str, Any]:
    """Make a new token for a user; the answer holds the token, which is not kept anywhere."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    expires_at = None if expires_in_days is None else now + timedelta(days=expires_in_days)
    name = DEFAULT_TOKEN_NAME if name is None else name
    values = {
        "user_id": user_id,
        "name": name,
        "digest": digest(token),
        "now": now,
        "expires_at": expires_at,
    }
    with store.connect() as connection:
        connection.begin()
        token_id = connection.insert(INSERT_TOKEN, values)
        connection.commit()
    return {
        "id": token_id,
        "name": name,
        "token": token,
        "created_at": naive_utc(now),
        "expires_at": None if expires_at is None else naive_utc(expires_at),
    }


def get_user(user_id: int) -> dict[str, Any] | None:
    """Return a user by id."""
    with store.connect() as connection:
        row = connection.first(SELECT_USER, {"user_id": user_id})
    return None if row is None else _user(row)


def delete_user(user_id: int) -> dict[str, Any] | None:
    """Delete a user with its todos, tokens and idempotency keys, in one transaction."""
    with store.connect() as connection:
        connection.begin()
        row = connection.first(SELECT_USER_FOR_DELETE, {"user_id": user_id})
        if row is None:
            return None
        for statement in DELETE_ACCOUNT:
            connection.execute(statement, {"user_id": user_id})
        connection.commit()
    return _user(row)


def list_tokens(user_id: int) -> list[dict[str, Any]]:
    """Return a user's tokens, without their secrets, ordered by id."""
    with store.connect() as connection:
        rows = connection.all(SELECT_TOKENS, {"user_id": user_id})
    return [_token(row) for row in rows]


def revoke_token(user_id: int, token_id: int) -> dict[str, Any] | None:
    """Delete one of a user's tokens and return it; None when the user has no such token."""
    if not store.can_exist(token_id):
        return None
    values = {"user_id": user_id, "token_id": token_id}
    with store.connect() as connection:
        connection.begin()
        row = connection.first(SELECT_TOKEN, values)
        if row is None:
            return None
        connection.execute(DELETE_TOKEN, values)
        connection.commit()
    return _token(row)


def adopt_todos(user_id: int) -> int:
    """Give every todo without an owner to a user; return how many there were."""
    with store.connect() as connection:
        connection.begin()
        adopted = connection.execute(ADOPT_TODOS, {"user_id": user_id})
        # The todos join the user's list without a change number: clients sync it anew.
        connection.execute(streams.INVALIDATE_CURSORS)
        connection.commit()
    return adopted
