"""Tables of events: what Heron noticed about a device or a base station (a communication loss,
an overusage, a token that ended, a station gone silent), and the small state that makes each
of them happen once, whatever restarts or how many processes watch."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, BigId, UtcDateTime


class Event(Base):
    """One event of a device (`device_id`) or of a base station (`station_id`). Access follows
    the subject: its group decides who reads it, so a transfer or a moved group needs no
    rewrite. `day` (the contract day, in the contract's timezone) is set for OVERUSAGE only:
    the unique (device, kind, day) key is what makes it one event per device and day, even
    when two processes count the same day."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "day"),
        Index("ix_events_device_id_time", "device_id", "time"),
        Index("ix_events_station_id_time", "station_id", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    station_id: Mapped[int | None] = mapped_column(ForeignKey("base_stations.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    day: Mapped[date | None] = mapped_column(Date)
    details: Mapped[str | None] = mapped_column(Text)  # JSON object


class UplinkCount(Base):
    """Uplinks of a device per contract day (the overusage counter), added to once per ingest
    batch, and its acknowledged downlinks; both are the device's consumption. Kept 400 days
    (`events.service.COUNT_DAYS`: a year's consumption and the month before), then pruned."""

    __tablename__ = "uplink_counts"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    uplinks: Mapped[int] = mapped_column(Integer, default=0)
    downlinks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class DeviceLoss(Base):
    """A device whose communication is lost (COMMUNICATION_LOST written, no message since). Its
    next message closes it with COMMUNICATION_RESTORED."""

    __tablename__ = "device_losses"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class StationOutage(Base):
    """A base station marked OFFLINE (STATION_OFFLINE written); once the ingest has set it
    ONLINE again, the next upkeep pass closes it with STATION_ONLINE."""

    __tablename__ = "station_outages"

    station_id: Mapped[int] = mapped_column(ForeignKey("base_stations.id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


__all__ = ["DeviceLoss", "Event", "StationOutage", "UplinkCount"]
