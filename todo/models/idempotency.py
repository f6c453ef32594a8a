"""Remembered answers to POST requests that carried an Idempotency-Key."""

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, bindparam, delete, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from todo.driver import Statement
from todo.models import UTCDateTime, db, utcnow

KEY_MAX_LENGTH = 255


class IdempotencyKey(db.Model):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ix_idempotency_keys_created_at", "created_at"),
        {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"},
    )

    key: Mapped[str] = mapped_column(String(KEY_MAX_LENGTH), primary_key=True)
    # SHA-256 of the canonical request body: a retry must send the same content.
    fingerprint: Mapped[str] = mapped_column(String(64))
    todo_id: Mapped[int] = mapped_column(BigInteger)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The remembered answer for `key`, and whether it is older than `cutoff`.
SELECT_KEY = Statement(
    select(
        IdempotencyKey.fingerprint,
        IdempotencyKey.todo_id,
        IdempotencyKey.response,
        IdempotencyKey.created_at < bindparam("cutoff", type_=UTCDateTime()),
    ).where(IdempotencyKey.key == bindparam("key"))
)
INSERT_KEY = Statement(
    insert(IdempotencyKey).values(
        {name: bindparam(name) for name in ("key", "fingerprint", "todo_id", "response")}
        | {"created_at": bindparam("now", type_=UTCDateTime())}
    )
)
# Keys older than `cutoff`: all of them, or the one named `key`.
DELETE_EXPIRED_KEYS = Statement(
    delete(IdempotencyKey).where(IdempotencyKey.created_at < bindparam("cutoff"))
)
DELETE_EXPIRED_KEY = Statement(
    DELETE_EXPIRED_KEYS.statement.where(IdempotencyKey.key == bindparam("key"))
)
