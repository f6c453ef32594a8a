"""The User and Token models: accounts, and the bearer tokens that act for them."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    ForeignKey,
    FunctionElement,
    Index,
    Integer,
    String,
    and_,
    or_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column

from todo.models import UTCDateTime, db, utcnow

USERNAME_MAX_LENGTH = 64
TOKEN_NAME_MAX_LENGTH = 80
# Long enough for any argon2id or scrypt hash string with its parameters and salt.
PASSWORD_HASH_MAX_LENGTH = 255
# The hex SHA-256 of a token: the only trace of it the database keeps.
TOKEN_DIGEST_LENGTH = 64
# Both tables hand out ids that are never reused (SQLite's AUTOINCREMENT; sequences elsewhere),
# so a deleted user's id never comes to mean someone else.
_TABLE_OPTIONS = {"sqlite_autoincrement": True, "mysql_charset": "utf8mb4"}
_ID = BigInteger().with_variant(Integer, "sqlite")


class User(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    __tablename__ = "users"
    __table_args__ = (_TABLE_OPTIONS | {"mysql_collate": "utf8mb4_bin"},)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    # As first registered; shown to the user.
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH))
    # The username in lower case (usernames are ASCII): unique, so that `Alice` and `alice`
    # are one user on every engine, whatever its collation.
    username_key: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


class Token(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class is dynamic
    __tablename__ = "tokens"
    __table_args__ = (
        Index("ix_tokens_user_id", "user_id"),
        _TABLE_OPTIONS | {"mysql_collate": "utf8mb4_bin"},
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(_ID, ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_MAX_LENGTH))
    digest: Mapped[str] = mapped_column(String(TOKEN_DIGEST_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # None: the token does not expire.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<Token {self.id} {self.name!r} of user {self.user_id}>"


class utc_now(FunctionElement[datetime]):  # noqa: N801  # named as SQL functions are
    """The database's current time in UTC, as the timestamp columns store it.

    The token check runs in every bearer request's statement: reading the clock there, not
    binding Python's, saves that request a conversion of its own.
    """

    type = DateTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now(element, compiler, **kw) -> str:
    # Any other engine (and the SQL shown in messages): its clock, taken as UTC.
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "sqlite")
def _sqlite_utc_now(element, compiler, **kw) -> str:
    return "strftime('%Y-%m-%dT%H:%M:%S', 'now')"


@compiles(utc_now, "postgresql")
def _postgresql_utc_now(element, compiler, **kw) -> str:
    return "(now() AT TIME ZONE 'UTC')"


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _mysql_utc_now(element, compiler, **kw) -> str:
    return "UTC_TIMESTAMP()"


def live_token(digest: Any) -> ColumnElement[bool]:
    """The condition that a token row is the one with this digest and has not expired."""
    expiry = Token.expires_at
    return and_(Token.digest == digest, or_(expiry.is_(None), expiry > utc_now()))
