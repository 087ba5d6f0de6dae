"""Tables of the receivers every radio network has: the stations (Sigfox base stations; LoRaWAN
gateways next), their traffic, and what they heard that Heron did not deliver."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime


class BaseStation(Base):
    """A receiver of Sigfox-style frames, owned by an operator group. Stations are trusted like a
    gateway fleet: what an authenticated station reports (device, sequence number, RSSI, time)
    is taken as heard. Its ingest secret is stored as a SHA-256 hash (the secret is 32 random
    bytes, so a fast hash is enough) and can be rotated."""

    __tablename__ = "base_stations"
    __table_args__ = (
        CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name="lat_range"),
        CheckConstraint("lng IS NULL OR (lng >= -180 AND lng <= 180)", name="lng_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str] = mapped_column(String(8), unique=True)  # hex, upper-case, no leading zeros
    name: Mapped[str] = mapped_column(String(100))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    # The only device type it delivers (a Sigfox cloud bridge's virtual station); None: every
    # device in its group's subtree.
    device_type_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id", ondelete="SET NULL"))
    lat: Mapped[float | None] = mapped_column(Float)
    lng: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[int | None] = mapped_column(Integer)  # metres
    antenna_height: Mapped[float | None] = mapped_column(Float)  # metres above ground
    antenna_gain: Mapped[float | None] = mapped_column(Float)  # dBi
    radio_zone: Mapped[str] = mapped_column(String(4), default="RC1")  # RC1-RC7: sets the LQI thresholds
    enabled: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str] = mapped_column(String(8), default="NEW")  # NEW (never heard), ONLINE, OFFLINE
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    secret_hash: Mapped[str] = mapped_column(String(64))
    secret_rotated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class StationTraffic(Base):
    """Frames a station reported, per hour: all of them, and those of devices Heron does not
    deliver for (unknown, deleted, or without a valid token). The source of frames/day."""

    __tablename__ = "station_traffic"

    station_id: Mapped[int] = mapped_column(ForeignKey("base_stations.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    undelivered: Mapped[int] = mapped_column(Integer, default=0)


class UndeliveredFrames(Base):
    """Frames heard from a device Heron does not deliver for, counted per station, device id
    and hour (never one event or row per frame)."""

    __tablename__ = "undelivered_frames"

    station_id: Mapped[int] = mapped_column(ForeignKey("base_stations.id", ondelete="CASCADE"), primary_key=True)
    device: Mapped[str] = mapped_column(String(16), primary_key=True)  # the id as heard
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # UNKNOWN, NO_TOKEN (the latest reason)
    frames: Mapped[int] = mapped_column(Integer, default=0)
