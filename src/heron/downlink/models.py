"""The downlink queue."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, BigId, UtcDateTime


class DownlinkState(StrEnum):
    """A downlink's stored `state`: DECIDING until its dedup window closes, then NONE (none to
    send) or PENDING, SENT to a station, ACKNOWLEDGED by it, or FAILED."""

    DECIDING = "DECIDING"
    NONE = "NONE"
    PENDING = "PENDING"
    SENT = "SENT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    FAILED = "FAILED"


DECIDING, NONE, PENDING, SENT, ACKNOWLEDGED, FAILED = DownlinkState
IS_OPEN = text("state IN ('DECIDING', 'PENDING', 'SENT')")
# The open downlinks in a query, as the partial index ix_downlinks_open states it: SQLite uses a
# partial index only for a query that spells out its condition (`state = 'DECIDING'` alone
# scanned the whole table, every poll).
OPEN = text("downlinks.state IN ('DECIDING', 'PENDING', 'SENT')")


class Downlink(Base):
    """A downlink answering an uplink that asked for one (Sigfox BIDIR). DECIDING until the
    dedup window closes and the device type's mode has spoken; NONE when it chose not to answer;
    PENDING for the chosen station to collect; SENT once handed to it; ACKNOWLEDGED when the
    station reports the emission; FAILED (with the reason) otherwise. `transmit_at` is when the
    device listens (about 20 s after its uplink)."""

    __tablename__ = "downlinks"
    __table_args__ = (
        Index("ix_downlinks_device_id_created_at", "device_id", "created_at"),
        Index("ix_downlinks_open", "state", "station_id", sqlite_where=IS_OPEN, postgresql_where=IS_OPEN),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    device_type_id: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    mode: Mapped[str] = mapped_column(String(8))  # DIRECT, CALLBACK, NONE
    state: Mapped[str] = mapped_column(String(12))
    data: Mapped[str | None] = mapped_column(String(16))  # 8 bytes, lower-case hex
    station_id: Mapped[int | None] = mapped_column(ForeignKey("base_stations.id"))
    callback_id: Mapped[int | None] = mapped_column(Integer)
    decide_at: Mapped[datetime] = mapped_column(UtcDateTime)
    transmit_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(String(500))

    def fail(self, reason: str) -> None:
        self.state, self.reason = FAILED, reason[:500]
