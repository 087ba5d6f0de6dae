"""Tables of the Sigfox adapter alone: a device type's Sigfox cloud bridge."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime


class SigfoxBridge(Base):
    """A device type's Sigfox cloud bridge: the secret in the URL its Sigfox backend callbacks
    call (stored hashed), and the virtual base station its receptions are filed under."""

    __tablename__ = "sigfox_bridges"

    device_type_id: Mapped[int] = mapped_column(ForeignKey("device_types.id", ondelete="CASCADE"), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    station_id: Mapped[int] = mapped_column(ForeignKey("base_stations.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
