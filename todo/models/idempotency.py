"""Remembered answers to POST requests that carried an Idempotency-Key."""

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Index, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

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


def select_key(key: str):
    """Select the remembered answer for a key."""
    return select(IdempotencyKey).where(IdempotencyKey.key == key)


def delete_expired_keys(ttl_seconds: int, now: datetime | None = None):
    """Delete the keys older than their time to live."""
    cutoff = (now or utcnow()) - timedelta(seconds=ttl_seconds)
    return delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)
