"""Tables of the registry domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime


class Contract(Base):
    """A Sigfox "order": tokens, daily frame limits and a validity window, owned by a group.

    `tokens_in_use` is a stored counter, never computed at query time. The device step keeps it
    exact by taking a token with one conditional UPDATE in the device's own transaction
    (`SET tokens_in_use = tokens_in_use + 1 WHERE id = :id AND (max_tokens = 0 OR
    tokens_in_use < max_tokens)`, a row count of 0 meaning "no token left"), and releasing it with
    the matching decrement; the same is done on the allocation row the device draws from."""

    __tablename__ = "contracts"
    __table_args__ = (CheckConstraint("tokens_in_use >= 0", name="tokens_in_use_not_negative"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    name_ci: Mapped[str] = mapped_column(String(100), index=True)
    external_id: Mapped[str | None] = mapped_column(String(64))  # the Sigfox `contractId` (BSS id)
    bidir: Mapped[bool] = mapped_column(Boolean, default=False)
    max_tokens: Mapped[int] = mapped_column(Integer, default=0)  # 0 = unlimited (Sigfox document)
    max_uplink_frames: Mapped[int] = mapped_column(Integer)  # per day, in the contract's timezone
    max_downlink_frames: Mapped[int] = mapped_column(Integer)
    token_duration: Mapped[int] = mapped_column(Integer, default=12)  # months; 0 = unlimited
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    geolocation: Mapped[bool] = mapped_column(Boolean, default=False)
    tokens_in_use: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class ContractAllocation(Base):
    """A share of a contract given, with a token quota, to a subgroup of its owner or to a device
    type in the owner's subtree. Exactly one of `group_id` / `device_type_id` is set."""

    __tablename__ = "contract_allocations"
    __table_args__ = (
        UniqueConstraint("contract_id", "group_id"),
        UniqueConstraint("contract_id", "device_type_id"),
        CheckConstraint("(group_id IS NULL) <> (device_type_id IS NULL)", name="one_target"),
        CheckConstraint("tokens_in_use >= 0", name="tokens_in_use_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id", ondelete="CASCADE"))  # unique pairs index it
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"), index=True)
    device_type_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id"), index=True)
    max_tokens: Mapped[int] = mapped_column(Integer)
    tokens_in_use: Mapped[int] = mapped_column(Integer, default=0)


class DeviceProfile(Base):
    """LoRaWAN radio settings of a device (the Senet `profId`)."""

    __tablename__ = "device_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    region: Mapped[str] = mapped_column(String(8))
    mac_version: Mapped[str] = mapped_column(String(8))
    reg_params_revision: Mapped[str] = mapped_column(String(16))
    device_class: Mapped[str] = mapped_column(String(1))
    rx1_delay: Mapped[int] = mapped_column(Integer)
    rx2_data_rate: Mapped[int] = mapped_column(Integer)
    rx2_frequency: Mapped[int] = mapped_column(Integer)  # Hz
    adr_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    sub_band: Mapped[int | None] = mapped_column(Integer)  # US915 only, 1-8
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class DeviceType(Base):
    """Settings shared by devices; for LoRaWAN also the Senet "application" (`app_eui`)."""

    __tablename__ = "device_types"
    # (group_id, name_ci) serves the group filter, the content check and name lookups in a group.
    __table_args__ = (Index("ix_device_types_group_id_name_ci", "group_id", "name_ci"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    name: Mapped[str] = mapped_column(String(100))
    name_ci: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(300), default="")
    network: Mapped[str] = mapped_column(String(8))  # SIGFOX | LORAWAN
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id"), index=True)
    keep_alive: Mapped[int] = mapped_column(Integer, default=0)  # seconds; 0 = off
    alert_email: Mapped[str | None] = mapped_column(String(250))
    downlink_mode: Mapped[int] = mapped_column(Integer)
    downlink_data_string: Mapped[str | None] = mapped_column(String(200))
    payload_type: Mapped[int] = mapped_column(Integer, index=True)
    payload_config: Mapped[str | None] = mapped_column(String(4000))
    automatic_renewal: Mapped[bool] = mapped_column(Boolean, default=True)
    app_eui: Mapped[str | None] = mapped_column(String(16), unique=True)
    join_eui: Mapped[str | None] = mapped_column(String(16))
    device_profile_id: Mapped[int | None] = mapped_column(ForeignKey("device_profiles.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class DeviceTypeContract(Base):
    """The contracts a device type's devices may hold tokens on (the default one included)."""

    __tablename__ = "device_type_contracts"

    device_type_id: Mapped[int] = mapped_column(ForeignKey("device_types.id", ondelete="CASCADE"), primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), primary_key=True, index=True)


__all__ = ["Contract", "ContractAllocation", "DeviceProfile", "DeviceType", "DeviceTypeContract"]
