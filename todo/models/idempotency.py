"""The IdempotencyKey model: the remembered answers to POSTs that carried an Idempotency-Key."""

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from todo.models import UTCDateTime, db, utcnow

KEY_MAX_LENGTH = 255
# The owner of keys sent while AUTH was none: no user has this id.
NO_OWNER = 0


class IdempotencyKey(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy's model class
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ix_idempotency_keys_created_at", "created_at"),
        {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"},
    )

    # Keys belong to the user who sent them: 0 for requests made while AUTH was none.
    owner_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
        server_default=text("0"),
    )
    key: Mapped[str] = mapped_column(String(KEY_MAX_LENGTH), primary_key=True)
    # SHA-256 of the canonical request body: a retry must send the same content.
    fingerprint: Mapped[str] = mapped_column(String(64))
    todo_id: Mapped[int] = mapped_column(BigInteger)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
