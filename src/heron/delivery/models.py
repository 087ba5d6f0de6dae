"""Tables of delivery: the callbacks of device types, and the outbox of every request Heron owes
a customer's server (one row per (message, callback), job callback or event)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime
from heron.messages.models import BigId


class DeliveryState(StrEnum):
    """A delivery's stored `state`: PENDING until sent (or retried after its backoff), then DONE,
    or FAILED for good."""

    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


PENDING, DONE, FAILED = DeliveryState
IS_PENDING = text("state = 'PENDING'")
NOT_DONE = text("state <> 'DONE'")
IS_DUPLICATE = text("duplicate_of IS NOT NULL")
IS_LEASED = text("leased_by IS NOT NULL")


class Callback(Base):
    """A device type's callback (api.md enums, stored by name). Secrets (header values, URL
    credentials, the signing secret) are stored encrypted; `url` holds the pattern with its
    credentials replaced by the `url_credentials` ciphertext's placeholder."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_type_id: Mapped[int] = mapped_column(ForeignKey("device_types.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(10))  # URL, BATCH_URL, EMAIL
    callback_type: Mapped[str] = mapped_column(String(8))  # DATA, SERVICE, ERROR
    callback_subtype: Mapped[str | None] = mapped_column(String(16))  # UPLINK, BIDIR, STATUS, ...
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)  # circuit open: probes only
    dead_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed attempts
    probe_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # when dead: next probe
    downlink_hook: Mapped[bool] = mapped_column(Boolean, default=False)
    send_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    payload_config: Mapped[str | None] = mapped_column(String(4000))  # overrides the device type's
    url: Mapped[str | None] = mapped_column(String(2000))  # pattern, credentials masked out
    url_credentials: Mapped[str | None] = mapped_column(Text)  # ciphertext of "user:password"
    http_method: Mapped[str | None] = mapped_column(String(6))
    headers: Mapped[str | None] = mapped_column(Text)  # ciphertext of a JSON object
    send_sni: Mapped[bool] = mapped_column(Boolean, default=True)
    body_template: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(100))
    line_pattern: Mapped[str | None] = mapped_column(String(2000))
    recipient: Mapped[str | None] = mapped_column(String(500))
    subject: Mapped[str | None] = mapped_column(String(500))
    message: Mapped[str | None] = mapped_column(Text)
    signing_secret: Mapped[str | None] = mapped_column(Text)  # ciphertext; Standard Webhooks signatures
    alerted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # last alert email about it
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class Delivery(Base):
    """One request owed, written in the transaction that made it owed (the message's, the job's
    end, the event's). `key` is the delivery id the receiver sees, stable across retries.
    Ordering is per (callback, device): a delivery waits while an older one of the same pair is
    pending. `variables` holds the values of deliveries that have no message (events, tests).
    A send-duplicate callback's copy for another station's reception of the message names the
    delivery it copies and that reception (both plain columns: the message's cascade removes
    them all)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # Partial: what the worker scans is only what is still owed.
        Index("ix_deliveries_due", "next_at", sqlite_where=IS_PENDING, postgresql_where=IS_PENDING),
        Index(
            "ix_deliveries_order",
            "callback_id",
            "device_id",
            "id",
            sqlite_where=IS_PENDING,
            postgresql_where=IS_PENDING,
        ),
        # A BATCH_URL batch takes a callback's due rows in outbox order (by id) up to a limit.
        Index("ix_deliveries_callback", "callback_id", "id", sqlite_where=IS_PENDING, postgresql_where=IS_PENDING),
        Index(
            "ix_deliveries_undelivered",
            "device_type_id",
            "created_at",
            sqlite_where=NOT_DONE,
            postgresql_where=NOT_DONE,
        ),
        # One copy per (delivery, reception): a claim made again (after a crash, a retry) adds none.
        Index(
            "ix_deliveries_duplicate",
            "duplicate_of",
            "reception_id",
            unique=True,
            sqlite_where=IS_DUPLICATE,
            postgresql_where=IS_DUPLICATE,
        ),
        # The rows in flight, by worker: a restarted worker finds its dead process's leases.
        Index("ix_deliveries_leased", "leased_by", sqlite_where=IS_LEASED, postgresql_where=IS_LEASED),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(32))
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"))
    device_type_id: Mapped[int | None] = mapped_column(Integer)
    device_id: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer)
    duplicate_of: Mapped[int | None] = mapped_column(BigId)  # sendDuplicate: the delivery this copies
    reception_id: Mapped[int | None] = mapped_column(BigId)  # ... and the reception it carries
    event: Mapped[str] = mapped_column(String(16))  # UPLINK, BIDIR, STATUS, DATA_ADVANCED, ERROR, ..., JOB
    variables: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(8), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime)  # due; while claimed, the lease's end
    leased_by: Mapped[str | None] = mapped_column(String(64))  # while claimed: the worker (host:pid:token)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    last_request: Mapped[str | None] = mapped_column(Text)  # JSON: url, method, body (secrets masked)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
