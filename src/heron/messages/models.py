"""Tables of the message store: one row per radio frame, one per reception of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime
from heron.db.base import BigId as BigId  # re-exported: delivery.models imports it from here

ACK_REQUIRED = text("ack_required")


def _arrived_when_heard(context: Any) -> Any:
    """A message made without an arrival (a fixture, a tool) arrived when it was heard."""
    return context.get_current_parameters()["time"]


class Message(Base):
    """An uplink: one radio frame, however many stations heard it. `time` is when the network
    heard it (the frame time Sigfox shows): the earliest of its receptions' station times, each
    bounded by when that reception reached Heron, so a station's clock cannot place it in the
    future. `arrived_at` is when the first reception reached Heron: the dedup window, the
    horizon, the outbox and the downlink decider run on it. `lost` is the number of frames the
    sequence-number gap before this one says were never heard."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_device_id_time", "device_id", "time"),
        Index("ix_messages_device_type_id_time", "device_type_id", "time"),
        # Dedup's look-up of a device's messages within the horizon (by arrival, not frame time).
        Index("ix_messages_device_id_arrived_at", "device_id", "arrived_at"),
        # Partial: the downlink decider's scan (uplinks asking for an answer are few).
        Index("ix_messages_ack_time", "time", sqlite_where=ACK_REQUIRED, postgresql_where=ACK_REQUIRED),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    device_type_id: Mapped[int] = mapped_column(Integer)  # at reception (a transfer does not move history)
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    arrived_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_arrived_when_heard)
    seq_number: Mapped[int] = mapped_column(Integer)
    frame_type: Mapped[str] = mapped_column(String(10))  # DATA, KEEPALIVE, REPEATER
    data: Mapped[str] = mapped_column(String(24))  # hex, lower-case, 0-12 bytes
    ack_required: Mapped[bool] = mapped_column(Boolean, default=False)
    nb_frames: Mapped[int] = mapped_column(Integer, default=1)  # repetitions the device sent (1 or 3)
    receptions: Mapped[int] = mapped_column(Integer, default=1)
    best_rssi: Mapped[float | None] = mapped_column(Float)
    lqi: Mapped[int] = mapped_column(Integer, default=4)  # api.md lqi enum, from in-window receptions
    lost: Mapped[int] = mapped_column(Integer, default=0)
    decoded: Mapped[str | None] = mapped_column(Text)  # JSON object of payload fields
    service: Mapped[str | None] = mapped_column(Text)  # JSON: battery, temperature of service frames
    # computedLocation: the network's estimate (loc_source as the Sigfox document numbers it).
    loc_lat: Mapped[float | None] = mapped_column(Float)
    loc_lng: Mapped[float | None] = mapped_column(Float)
    loc_radius: Mapped[int | None] = mapped_column(Integer)  # metres
    loc_source: Mapped[int | None] = mapped_column(Integer)


class Reception(Base):
    """One station's reception of a message. `late` receptions arrived after the dedup window
    closed: they are in the message and in DATA_ADVANCED, not in the DATA callbacks."""

    __tablename__ = "receptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("base_stations.id"))
    # As the station reports it (when it reached Heron if the station does not say).
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    rssi: Mapped[float | None] = mapped_column(Float)
    snr: Mapped[float | None] = mapped_column(Float)
    freq: Mapped[float | None] = mapped_column(Float)  # Hz
    rep: Mapped[int] = mapped_column(Integer, default=1)  # repetitions of the frame this station heard
    late: Mapped[bool] = mapped_column(Boolean, default=False)
