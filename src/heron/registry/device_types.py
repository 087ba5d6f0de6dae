"""Device types: settings shared by devices (contract, keep-alive, downlink mode, payload
decoding); a LoRaWAN device type is also a Senet "application" (appEui, default joinEui, default
device profile). Which contracts a device type may name is ruled in heron.registry.contracts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.downlink import templates as downlink_template
from heron.errors import Conflict, InvalidInput, NotFound
from heron.messages.grammar import parse_grammar
from heron.registry import contracts as contracts_service
from heron.registry import device_profiles
from heron.registry.eui import Eui64
from heron.registry.models import (
    Contract,
    ContractAllocation,
    Device,
    DeviceProfile,
    DeviceType,
    DeviceTypeContract,
)
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.groups import register_content_check
from heron.tenancy.models import Group
from heron.tenancy.owned import KEEP, check_name, in_groups, owning_group

register_content_check("device types", lambda gid: select(DeviceType.id).where(DeviceType.group_id == gid).limit(1))

NETWORKS = ("SIGFOX", "LORAWAN")
DIRECT, CALLBACK, NONE, MANAGED = 0, 1, 2, 3
PAYLOAD_TYPES = {2: "regular (raw)", 3: "custom grammar", 5: "ASCII"}
MIN_KEEP_ALIVE = 1800
MAX_KEEP_ALIVE = 2**31 - 1
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class DeviceTypeFields:
    """What a create or update may set. KEEP = not given; None = unset (optional fields only)."""

    name: Any = KEEP
    description: Any = KEEP
    contract_id: Any = KEEP  # int | None
    contract_ids: Any = KEEP  # list[int]
    keep_alive: Any = KEEP
    alert_email: Any = KEEP
    downlink_mode: Any = KEEP
    downlink_data_string: Any = KEEP
    payload_type: Any = KEEP
    payload_config: Any = KEEP
    automatic_renewal: Any = KEEP
    app_eui: Any = KEEP
    join_eui: Any = KEEP
    prof_id: Any = KEEP


@dataclass
class DeviceTypeView:
    device_type: DeviceType
    group: Group
    contract_ids: list[int] = field(default_factory=list)


_VALUED = (
    ("name", "name"),
    ("keep_alive", "keepAlive"),
    ("downlink_mode", "downlinkMode"),
    ("payload_type", "payloadType"),
    ("automatic_renewal", "automaticRenewal"),
)


def _given(value: Any) -> bool:
    return value is not KEEP


def _apply(
    session: Session, dt: DeviceType, group: Group, f: DeviceTypeFields
) -> tuple[dict[str, Any], list[int] | None]:
    """Set the given fields on `dt`, check the result as a whole; the new allowed-contract list
    (None: unchanged). Raises InvalidInput naming the field."""
    changes: dict[str, Any] = {}
    # Fields that always hold a value: None is refused here too, not only by the API's models.
    for name, wire_name in _VALUED:
        if getattr(f, name) is None:
            raise InvalidInput.field(wire_name, "cannot be null: omit the field to keep its value")
    if _given(f.name):
        dt.name = check_name(f.name)
        dt.name_ci = dt.name.lower()
        changes["name"] = dt.name
    if _given(f.description):
        dt.description = changes["description"] = f.description or ""
    if _given(f.keep_alive):
        if f.keep_alive != 0 and not MIN_KEEP_ALIVE <= f.keep_alive <= MAX_KEEP_ALIVE:
            raise InvalidInput.field("keepAlive", f"must be 0 (off) or at least {MIN_KEEP_ALIVE} seconds")
        dt.keep_alive = changes["keepAlive"] = f.keep_alive
    if _given(f.alert_email):
        email = None if f.alert_email is None else f.alert_email.strip()
        if email is not None and (len(email) > 250 or not _EMAIL.match(email)):
            raise InvalidInput.field("alertEmail", "not a valid email address")
        dt.alert_email = changes["alertEmail"] = email
    if _given(f.downlink_mode):
        if f.downlink_mode == MANAGED:
            raise InvalidInput.field(
                "downlinkMode", "Heron does not offer MANAGED downlinks (3): use 0 DIRECT, 1 CALLBACK or 2 NONE"
            )
        if f.downlink_mode not in (DIRECT, CALLBACK, NONE):
            raise InvalidInput.field("downlinkMode", "must be 0 DIRECT, 1 CALLBACK or 2 NONE")
        dt.downlink_mode = changes["downlinkMode"] = f.downlink_mode
    if _given(f.downlink_data_string):
        dt.downlink_data_string = changes["downlinkDataString"] = f.downlink_data_string
    if dt.downlink_data_string is not None:
        try:
            downlink_template.check(dt.downlink_data_string)
        except downlink_template.TemplateError as exc:
            raise InvalidInput.field("downlinkDataString", str(exc)) from None
    elif dt.downlink_mode == DIRECT:
        raise InvalidInput.field("downlinkDataString", "is required with downlinkMode 0 (DIRECT)")
    if _given(f.payload_type):
        if f.payload_type not in PAYLOAD_TYPES:
            kinds = ", ".join(f"{k} {v}" for k, v in PAYLOAD_TYPES.items())
            raise InvalidInput.field("payloadType", f"Heron offers {kinds}")
        dt.payload_type = changes["payloadType"] = f.payload_type
    if _given(f.payload_config):
        dt.payload_config = changes["payloadConfig"] = f.payload_config
    if dt.payload_type == 3:
        if not (dt.payload_config or "").strip():
            raise InvalidInput.field("payloadConfig", "is required with payloadType 3 (custom grammar)")
        parse_grammar(dt.payload_config or "", "payloadConfig")  # refused with the field and the reason
    if _given(f.automatic_renewal):
        dt.automatic_renewal = changes["automaticRenewal"] = f.automatic_renewal
    _apply_lorawan(session, dt, group, f, changes)
    allowed = _apply_contracts(session, dt, group, f, changes)
    return changes, allowed


def _apply_lorawan(
    session: Session, dt: DeviceType, group: Group, f: DeviceTypeFields, changes: dict[str, Any]
) -> None:
    if dt.network == "SIGFOX":
        for name, value in (("appEui", f.app_eui), ("joinEui", f.join_eui), ("profId", f.prof_id)):
            if _given(value) and value is not None:
                raise InvalidInput.field(name, "only LORAWAN device types have one")
        return
    if _given(f.app_eui):
        if f.app_eui is None:
            raise InvalidInput.field("appEui", "a LORAWAN device type needs one")
        eui = Eui64.parse(f.app_eui, "appEui")
        taken = session.scalar(select(DeviceType.id).where(DeviceType.app_eui == eui, DeviceType.id != dt.id))
        if eui != dt.app_eui and taken is not None:
            raise Conflict(f"appEui {eui} is already the application of another device type")
        dt.app_eui = changes["appEui"] = str(eui)
    if dt.app_eui is None:
        raise InvalidInput.field("appEui", "a LORAWAN device type needs one (16 hex digits)")
    if _given(f.join_eui):
        dt.join_eui = changes["joinEui"] = None if f.join_eui is None else str(Eui64.parse(f.join_eui, "joinEui"))
    if _given(f.prof_id):
        if f.prof_id is not None and device_profiles.usable_by(session, f.prof_id, group) is None:
            raise InvalidInput.field("profId", "no such device profile in this group or above")
        dt.device_profile_id = changes["profId"] = f.prof_id


def _contract(session: Session, dt: DeviceType, group: Group, contract_id: int, field: str) -> Contract:
    contract = session.get(Contract, contract_id)
    if contract is None or not contracts_service.usable(session, contract, dt, group):
        raise InvalidInput.field(field, "no such contract available to this group")
    return contract


def _apply_contracts(
    session: Session, dt: DeviceType, group: Group, f: DeviceTypeFields, changes: dict[str, Any]
) -> list[int] | None:
    allowed: list[int] | None = None
    if _given(f.contract_ids):
        allowed = []
        for i, cid in enumerate(f.contract_ids):
            _contract(session, dt, group, cid, f"contracts[{i}].id")
            if cid not in allowed:
                allowed.append(cid)
        changes["contracts"] = allowed
    if _given(f.contract_id):
        if f.contract_id is not None:
            _contract(session, dt, group, f.contract_id, "contractId")
        dt.contract_id = changes["contractId"] = f.contract_id
    elif allowed is not None and dt.contract_id not in allowed:
        # Sigfox's deviceTypeCreate requires `contracts`, `contractId` is optional: without one the
        # first listed contract is the default (a default still listed stays), else its devices
        # would register off contract and their frames be dropped.
        dt.contract_id = changes["contractId"] = allowed[0] if allowed else None
    if dt.contract_id is not None:
        if allowed is None and _given(f.contract_id):
            allowed = current_contracts(session, [dt.id])[dt.id] if dt.id is not None else []
        if allowed is not None and dt.contract_id not in allowed:
            allowed.insert(0, dt.contract_id)
    return allowed


def _store_contracts(session: Session, dt: DeviceType, allowed: list[int] | None) -> None:
    if allowed is None:
        return
    session.execute(sql_delete(DeviceTypeContract).where(DeviceTypeContract.device_type_id == dt.id))
    session.add_all(DeviceTypeContract(device_type_id=dt.id, contract_id=cid) for cid in allowed)


def current_contracts(session: Session, device_type_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in device_type_ids}
    if device_type_ids:
        rows = session.execute(
            select(DeviceTypeContract.device_type_id, DeviceTypeContract.contract_id)
            .where(DeviceTypeContract.device_type_id.in_(device_type_ids))
            .order_by(DeviceTypeContract.contract_id)
        )
        for dtid, cid in rows:
            out[dtid].append(cid)
    return out


def create(session: Session, actor: Actor, *, group_id: int, network: str, fields: DeviceTypeFields) -> DeviceTypeView:
    group = owning_group(session, actor, group_id, "device_type:write")
    if network not in NETWORKS:
        raise InvalidInput.field("network", "must be SIGFOX or LORAWAN")
    if not _given(fields.name):
        raise InvalidInput.field("name", "field required")
    dt = DeviceType(
        group_id=group.id,
        name="",
        name_ci="",
        description="",
        network=network,
        contract_id=None,
        keep_alive=0,
        alert_email=None,
        downlink_mode=NONE,
        downlink_data_string=None,
        payload_type=2,
        payload_config=None,
        automatic_renewal=True,
        created_at=utcnow(),
    )
    changes, allowed = _apply(session, dt, group, fields)
    session.add(dt)
    session.flush()
    _store_contracts(session, dt, allowed)
    audit.record(session, actor, "create", dt, "device_type", group.path, {"network": network} | changes)
    return DeviceTypeView(dt, group, allowed or [])


def _load(session: Session, device_type_id: int) -> DeviceTypeView:
    row = session.execute(
        select(DeviceType, Group).join(Group, Group.id == DeviceType.group_id).where(DeviceType.id == device_type_id)
    ).first()
    if row is None:
        raise NotFound("device type not found")
    return DeviceTypeView(row[0], row[1])


def get(session: Session, actor: Actor, device_type_id: int, action: str = "device_type:read") -> DeviceTypeView:
    view = _load(session, device_type_id)
    actor.require(action, view.group.path, "device type")
    view.contract_ids = current_contracts(session, [device_type_id])[device_type_id]
    return view


def update(session: Session, actor: Actor, device_type_id: int, fields: DeviceTypeFields) -> DeviceTypeView:
    view = get(session, actor, device_type_id, "device_type:write")
    changes, allowed = _apply(session, view.device_type, view.group, fields)
    _store_contracts(session, view.device_type, allowed)
    if allowed is not None:
        view.contract_ids = sorted(allowed)
    audit.record(session, actor, "update", view.device_type, "device_type", view.group.path, changes)
    return view


def delete(session: Session, actor: Actor, device_type_id: int) -> None:
    """Refused (409) while devices, deleted ones included until purged, still name the type."""
    view = get(session, actor, device_type_id, "device_type:write")
    dt = view.device_type
    if session.scalar(select(exists().where(Device.device_type_id == dt.id))):
        raise Conflict(f"device type {dt.name!r} (id {dt.id}) still has devices")
    audit.record(session, actor, "delete", dt, "device_type", view.group.path, {"name": dt.name})
    session.execute(sql_delete(ContractAllocation).where(ContractAllocation.device_type_id == dt.id))
    session.execute(sql_delete(DeviceTypeContract).where(DeviceTypeContract.device_type_id == dt.id))
    session.delete(dt)


def disengage(session: Session, actor: Actor, device_type_id: int) -> int:
    """`PUT /device-types/{id}/disengage`: the next frame of every device of the type is taken
    whatever its sequence number, as `POST /devices/{id}/disengage` does for one device: the
    store compares a frame with the device's last number, and there is none (uplink/store.py).
    One UPDATE; the count of devices that had a number is returned (and audited)."""
    view = get(session, actor, device_type_id, "device_type:write")
    result = session.execute(
        sql_update(Device)
        .where(Device.device_type_id == device_type_id, Device.sequence_number.is_not(None))
        .values(sequence_number=None)
        .execution_options(synchronize_session=False)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    audit.record(session, actor, "disengage", view.device_type, "device_type", view.group.path, {"devices": count})
    return count


def list_device_types(
    session: Session,
    actor: Actor,
    *,
    name: str | None = None,
    group_ids: list[int] | None = None,
    deep: bool = False,
    contract_id: int | None = None,
    payload_type: int | None = None,
    network: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[DeviceTypeView], bool]:
    conds: list[ColumnElement[bool]] = [actor.visible_filter(Group.path, "device_type:read")]
    if group_ids:
        conds.append(in_groups(session, actor, group_ids, deep, DeviceType.group_id))
    if name:
        conds.append(DeviceType.name_ci.contains(name.lower(), autoescape=True))
    if contract_id is not None:
        conds.append(
            DeviceType.id.in_(
                select(DeviceTypeContract.device_type_id).where(DeviceTypeContract.contract_id == contract_id)
            )
        )
    if payload_type is not None:
        conds.append(DeviceType.payload_type == payload_type)
    if network is not None:
        conds.append(DeviceType.network == network)
    rows = list(
        session.execute(
            select(DeviceType, Group)
            .join(Group, Group.id == DeviceType.group_id)
            .where(*conds)
            .order_by(DeviceType.id)
            .limit(limit + 1)
            .offset(offset)
        )
    )
    page = rows[:limit]
    allowed = current_contracts(session, [dt.id for dt, _ in page])
    return [DeviceTypeView(dt, g, allowed[dt.id]) for dt, g in page], len(rows) > limit


def references(session: Session, views: list[DeviceTypeView]) -> tuple[dict[int, Contract], dict[int, DeviceProfile]]:
    """The contracts and profiles a page of device types names, in two queries."""
    cids = {c for v in views for c in v.contract_ids} | {
        v.device_type.contract_id for v in views if v.device_type.contract_id is not None
    }
    pids = {v.device_type.device_profile_id for v in views if v.device_type.device_profile_id is not None}
    contracts = contracts_service.min_contracts(session, sorted(cids))
    profiles = (
        {p.id: p for p in session.scalars(select(DeviceProfile).where(DeviceProfile.id.in_(pids)))} if pids else {}
    )
    return contracts, profiles
