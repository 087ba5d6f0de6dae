"""Tables of the registry domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
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
    # Messages of its devices are kept this long, then purged (registry.maintenance).
    message_retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
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


HOLDS_TOKEN = text("contract_id IS NOT NULL")
IS_DELETED = text("lifecycle = 'DELETED'")


class Device(Base):
    """A Sigfox or LoRaWAN device. The surrogate `id` is internal; the API names a device by its
    normalized `identifier` (Sigfox id upper-case without leading zeros, or the 16-hex DevEUI),
    unique per `network`. `sort_key` is the identifier left-padded to 16 hex digits, so ordering
    and `minId`/`maxId` compare numerically.

    `group_id` is the device type's group, copied at registration (a device type never changes
    group; a transfer rewrites it). Group ids are stable when groups move, so no path is stored:
    "group with subgroups" is `group_id IN (subtree ids)`, served by (group_id, ...) indexes.

    Root keys (`pac`, `nak`, `app_key`) and the LoRaWAN `join_eui` / `prof_id` are keyring
    ciphertexts (heron.registry.devices registers them for `heron keys rotate`).
    Derived values lists filter on (`com_state`, `token_state`, `last_seen_at`) are stored and
    kept current by their writers."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("network", "identifier"),
        Index("ix_devices_group_id_sort_key", "group_id", "sort_key"),
        Index("ix_devices_group_id_lifecycle_sort_key", "group_id", "lifecycle", "sort_key"),
        Index("ix_devices_device_type_id_sort_key", "device_type_id", "sort_key"),
        Index("ix_devices_sort_key", "sort_key"),
        # Device queries (registry/device_queries.py): per-group filter indexes that also hold
        # `lifecycle`, so counts and small result sets stay index-only, and one index per sort
        # order for large result sets read in order.
        Index("ix_devices_group_id_com_state_lifecycle_sort_key", "group_id", "com_state", "lifecycle", "sort_key"),
        Index("ix_devices_group_id_token_state_lifecycle_sort_key", "group_id", "token_state", "lifecycle", "sort_key"),
        Index("ix_devices_name_sort_key", "name", "sort_key"),
        Index("ix_devices_last_seen_at_sort_key", "last_seen_at", "sort_key"),
        # Due tokens and the purge (registry/maintenance.py): partial, so that registering a
        # device without a token, or any device not deleted, costs these indexes nothing.
        Index("ix_devices_token_end_at", "token_end_at", sqlite_where=HOLDS_TOKEN, postgresql_where=HOLDS_TOKEN),
        Index("ix_devices_deleted_at", "deleted_at", sqlite_where=IS_DELETED, postgresql_where=IS_DELETED),
        CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name="lat_range"),
        CheckConstraint("lng IS NULL OR (lng >= -180 AND lng <= 180)", name="lng_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network: Mapped[str] = mapped_column(String(8))  # SIGFOX | LORAWAN
    identifier: Mapped[str] = mapped_column(String(16))
    sort_key: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    device_type_id: Mapped[int] = mapped_column(ForeignKey("device_types.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id"), index=True)
    token_alloc: Mapped[str | None] = mapped_column(String(24))  # "dt:<id>" | "g:<id>": the allocation drawn on
    token_state: Mapped[str] = mapped_column(String(12), default="NONE")  # NONE | OK | OFF_CONTRACT
    token_end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    token_renewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # last automatic renewal
    messages_purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last retention purge
    # The contract a Senet `register` named, taken on activation unless `activate` names another
    # (no foreign key: it is checked again at activation, and contracts may go in between).
    requested_contract_id: Mapped[int | None] = mapped_column(Integer)
    lat: Mapped[float | None] = mapped_column(Float)
    lng: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[str | None] = mapped_column(Text)
    dev_type: Mapped[str | None] = mapped_column(String(100))
    product_certificate: Mapped[str | None] = mapped_column(String(64))
    modem_certificate: Mapped[str | None] = mapped_column(String(64))
    prototype: Mapped[bool] = mapped_column(Boolean, default=False)
    activable: Mapped[bool] = mapped_column(Boolean, default=True)
    automatic_renewal: Mapped[bool] = mapped_column(Boolean, default=True)
    unsubscription_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the token ends then
    suspended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lifecycle: Mapped[str] = mapped_column(String(12))  # REGISTERED | ACTIVE | DEACTIVATED | DELETED
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    com_state: Mapped[int] = mapped_column(Integer, default=5)  # Sigfox comState; 5 NOT_SEEN
    sequence_number: Mapped[int | None] = mapped_column(Integer)
    pac: Mapped[str | None] = mapped_column(String(200))
    nak: Mapped[str | None] = mapped_column(String(200))
    app_key: Mapped[str | None] = mapped_column(String(200))
    join_eui: Mapped[str | None] = mapped_column(String(200))
    prof_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class RegistrationToken(Base):
    """A six-digit code issued to a person for one group: single use, valid for a few minutes.
    Only a hash of the code is kept (salted with the group, since six digits alone are guessable
    offline in microseconds; the short lifetime and single use are what protect it)."""

    __tablename__ = "registration_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)
    issued_to: Mapped[str] = mapped_column(String(250))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    used_by: Mapped[str | None] = mapped_column(String(64))


__all__ = [
    "Contract",
    "ContractAllocation",
    "Device",
    "DeviceProfile",
    "DeviceType",
    "DeviceTypeContract",
    "RegistrationToken",
]
