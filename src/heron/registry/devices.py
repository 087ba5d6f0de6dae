"""Devices: Sigfox devices (id, PAC, optional NAK) and LoRaWAN devices (DevEUI, AppKey, joinEui,
profile), in their device type's group.

Tokens (docs/ARCHITECTURE.md, "Registry rules"): a Sigfox device registered (or restored, or
made activable) with `activable` true takes a token on its device type's default contract; a
LoRaWAN device takes one on activation (the Senet step), so the native API registers it
REGISTERED without a token. Taking a token is a conditional UPDATE of the contract's counter
(`tokens_in_use < max_tokens`, or unlimited) and one of the allocation it draws on, in the
device's own transaction; a row count of 0 is a 409 naming the contract, and the transaction
rolls back whole. Deleting a device releases its token with the matching decrements. So
`tokensInUse` equals the number of devices whose `contract_id` is set, whatever runs at once.

Root keys are keyring ciphertexts bound to their purpose (`devices.pac`, ...), registered for
`heron keys rotate`; lists never return them, the single-device GET returns the PAC (and the
LoRaWAN joinEui / profId) to callers holding `device:write`, and the AppKey never."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Conflict, InvalidInput, NotFound
from heron.keys import Keyring, register_encrypted_column
from heron.registry import device_profiles
from heron.registry._common import KEEP, check_name
from heron.registry.eui import Eui64
from heron.registry.identifiers import SigfoxId, parse_app_key, parse_nak, parse_pac
from heron.registry.models import Contract, ContractAllocation, Device, DeviceType
from heron.tenancy import audit
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, in_any_subtree
from heron.tenancy.groups import register_content_check
from heron.tenancy.models import Group

SIGFOX, LORAWAN = "SIGFOX", "LORAWAN"
REGISTERED, ACTIVE, DEACTIVATED, DELETED = "REGISTERED", "ACTIVE", "DEACTIVATED", "DELETED"
LIFECYCLES = (REGISTERED, ACTIVE, DEACTIVATED, DELETED)
TOKEN_NONE, TOKEN_OK, TOKEN_OFF = "NONE", "OK", "OFF_CONTRACT"
SORTS = {"id", "-id", "name", "-name", "lastCom", "-lastCom"}
ENCRYPTED = {
    "pac": "devices.pac",
    "nak": "devices.nak",
    "app_key": "devices.app_key",
    "join_eui": "devices.join_eui",
    "prof_id": "devices.prof_id",
}
for _column, _purpose in ENCRYPTED.items():
    register_encrypted_column("devices", "id", _column, _purpose)

register_content_check("devices", lambda gid: select(Device.id).where(Device.group_id == gid).limit(1))

_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")
_CERT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass
class DeviceFields:
    """What a create or update may set. KEEP = not given; None = unset (optional fields only)."""

    name: Any = KEEP
    activable: Any = KEEP
    automatic_renewal: Any = KEEP
    lat: Any = KEEP
    lng: Any = KEEP
    product_certificate: Any = KEEP
    prototype: Any = KEEP
    tags: Any = KEEP


@dataclass
class DeviceView:
    device: Device
    device_type: DeviceType
    group: Group
    contract: Contract | None


# -- identifiers ----------------------------------------------------------------------------------
def sort_key(identifier: str) -> str:
    return identifier.rjust(16, "0")


_PATH_ID = re.compile(r"[0-9A-Fa-f]{1,8}|[0-9A-Fa-f]{16}")


def parse_ref(ref: str, field: str = "id", where: str = "path") -> tuple[str, str]:
    """(network, identifier) from a path id, taken exactly (no spaces, no `0x`): 16 hex digits
    are a DevEUI, 1 to 8 a Sigfox id (leading zeros allowed)."""
    if not _PATH_ID.fullmatch(ref):
        raise InvalidInput.field(field, "must be a Sigfox id (1 to 8 hex digits) or a DevEUI (16 hex digits)", where)
    if len(ref) == 16:
        return LORAWAN, ref.upper()
    return SIGFOX, str(SigfoxId.parse(ref, field, where))


def _hex_bound(value: str, field: str) -> str:
    text = value.strip()
    if not _HEX.fullmatch(text):
        raise InvalidInput.field(field, "must be 1 to 16 hex digits", "query")
    return sort_key(text.upper().lstrip("0") or "0")


def _g(value: Any) -> bool:
    return value is not KEEP


def _apply(d: Device, f: DeviceFields) -> dict[str, Any]:
    """Set the given fields; raises InvalidInput naming the field. Secrets never enter `changes`."""
    changes: dict[str, Any] = {}
    if _g(f.name):
        if f.name is None:
            raise InvalidInput.field("name", "is required")
        d.name = changes["name"] = check_name(f.name)
    for attr, key in (
        ("activable", "activable"),
        ("automatic_renewal", "automaticRenewal"),
        ("prototype", "prototype"),
    ):
        value = getattr(f, attr)
        if _g(value):
            if not isinstance(value, bool):
                raise InvalidInput.field(key, "must be true or false")
            setattr(d, attr, value)
            changes[key] = value
    for attr, key, bound in (("lat", "lat", 90.0), ("lng", "lng", 180.0)):
        value = getattr(f, attr)
        if _g(value):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) or not -bound <= value <= bound:
                    raise InvalidInput.field(key, f"must be a number from {-bound:g} to {bound:g}")
                value = float(value)
            setattr(d, attr, value)
            changes[key] = value
    if _g(f.product_certificate):
        key = f.product_certificate
        if key is not None and not _CERT.fullmatch(key):
            raise InvalidInput.field("productCertificate.key", "must be 1 to 64 letters, digits or . _ : -")
        d.product_certificate = changes["productCertificate"] = key
    if _g(f.tags):
        if d.network != LORAWAN and f.tags is not None:
            raise InvalidInput.field("tags", "only LORAWAN devices have tags")
        if f.tags is not None and len(f.tags) > 4000:
            raise InvalidInput.field("tags", "must be at most 4000 characters")
        d.tags = changes["tags"] = f.tags
    return changes


# -- tokens ---------------------------------------------------------------------------------------
def _add_months(when: datetime, months: int) -> datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    days = [
        31,
        29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ]
    return when.replace(year=year, month=month, day=min(when.day, days[month - 1]))


def _allocation_for(session: Session, contract_id: int, dt: DeviceType, group: Group) -> ContractAllocation | None:
    """The allocation a device draws on: its device type's own, else the one of its nearest
    group (the device type's group or an ancestor); none when the owner's group holds it."""
    ancestors = [int(x) for x in group.path.strip("/").split("/")]
    rows = list(
        session.scalars(
            select(ContractAllocation).where(
                ContractAllocation.contract_id == contract_id,
                or_(ContractAllocation.device_type_id == dt.id, ContractAllocation.group_id.in_(ancestors)),
            )
        )
    )
    own = [a for a in rows if a.device_type_id == dt.id]
    if own:
        return own[0]
    by_group = sorted((a for a in rows if a.group_id is not None), key=lambda a: ancestors.index(a.group_id or 0))
    return by_group[-1] if by_group else None


def _take_token(session: Session, view: DeviceView) -> None:
    d, dt = view.device, view.device_type
    if dt.contract_id is None or d.contract_id is not None:
        return
    contract = session.get(Contract, dt.contract_id)
    assert contract is not None
    taken = session.execute(
        update(Contract)
        .where(
            Contract.id == contract.id,
            or_(Contract.max_tokens == 0, Contract.tokens_in_use < Contract.max_tokens),
        )
        .values(tokens_in_use=Contract.tokens_in_use + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"contract {contract.name!r} (id {contract.id}) has no token left")
    alloc = _allocation_for(session, contract.id, dt, view.group)
    if alloc is not None:
        drawn = session.execute(
            update(ContractAllocation)
            .where(ContractAllocation.id == alloc.id, ContractAllocation.tokens_in_use < ContractAllocation.max_tokens)
            .values(tokens_in_use=ContractAllocation.tokens_in_use + 1)
            .execution_options(synchronize_session=False)
        )
        if drawn.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(
                f"contract {contract.name!r} (id {contract.id}) has no token left in the quota of "
                f"{alloc.max_tokens} allocated to this device type's group or device type"
            )
        d.token_alloc = f"dt:{dt.id}" if alloc.device_type_id is not None else f"g:{alloc.group_id}"
    now = utcnow()
    d.contract_id = contract.id
    d.token_state = TOKEN_OK
    d.token_end_at = _add_months(now, contract.token_duration) if contract.token_duration else None
    d.lifecycle = ACTIVE
    d.activated_at = d.activated_at or now
    session.expire(contract, ["tokens_in_use"])
    view.contract = contract


def _release_token(session: Session, d: Device) -> None:
    if d.contract_id is None:
        return
    session.execute(
        update(Contract)
        .where(Contract.id == d.contract_id)
        .values(tokens_in_use=Contract.tokens_in_use - 1)
        .execution_options(synchronize_session=False)
    )
    if d.token_alloc:
        kind, _, raw = d.token_alloc.partition(":")
        target = ContractAllocation.device_type_id if kind == "dt" else ContractAllocation.group_id
        session.execute(
            update(ContractAllocation)
            .where(
                ContractAllocation.contract_id == d.contract_id,
                target == int(raw),
                ContractAllocation.tokens_in_use > 0,
            )
            .values(tokens_in_use=ContractAllocation.tokens_in_use - 1)
            .execution_options(synchronize_session=False)
        )
    d.contract_id = None
    d.token_alloc = None
    d.token_state = TOKEN_OFF


# -- create ---------------------------------------------------------------------------------------
def _device_type(session: Session, actor: Actor, device_type_id: int, network: str) -> tuple[DeviceType, Group]:
    row = session.execute(
        select(DeviceType, Group).join(Group, Group.id == DeviceType.group_id).where(DeviceType.id == device_type_id)
    ).first()
    if row is None or not actor.can("device:read", row[1].path):
        raise InvalidInput.field("deviceTypeId", "no such device type")
    dt, group = row[0], row[1]
    actor.require("device:write", group.path, "device type")
    if dt.network != network:
        raise InvalidInput.field("deviceTypeId", f"is a {dt.network} device type, not {network}")
    return dt, group


def _insert(session: Session, actor: Actor, view: DeviceView, changes: dict[str, Any]) -> DeviceView:
    d = view.device
    if session.scalar(select(exists().where(Device.network == d.network, Device.identifier == d.identifier))):
        raise Conflict(f"device {d.identifier} already exists")
    try:
        with session.begin_nested():
            session.add(d)
            session.flush()
    except IntegrityError:
        raise Conflict(f"device {d.identifier} already exists") from None
    details = {"id": d.identifier, "network": d.network, "deviceTypeId": view.device_type.id} | changes
    audit.record(session, actor, "create", d, "device", view.group.path, details)
    return view


def _new(network: str, identifier: str, dt: DeviceType, group: Group) -> Device:
    return Device(
        network=network,
        identifier=identifier,
        sort_key=sort_key(identifier),
        name="",
        device_type_id=dt.id,
        group_id=group.id,
        contract_id=None,
        token_state=TOKEN_NONE,
        prototype=False,
        activable=True,
        automatic_renewal=dt.automatic_renewal,
        lifecycle=REGISTERED,
        com_state=5,
        created_at=utcnow(),
    )


def create_sigfox(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    *,
    identifier: str,
    pac: str,
    device_type_id: int,
    fields: DeviceFields,
    nak: str | None = None,
) -> DeviceView:
    sid = SigfoxId.parse(identifier, "id")
    pac = parse_pac(pac)
    nak = parse_nak(nak) if nak is not None else None
    if not _g(fields.name):
        raise InvalidInput.field("name", "field required")
    dt, group = _device_type(session, actor, device_type_id, SIGFOX)
    d = _new(SIGFOX, str(sid), dt, group)
    changes = _apply(d, fields)
    d.pac = keyring.encrypt(pac.encode(), ENCRYPTED["pac"])
    d.nak = keyring.encrypt(nak.encode(), ENCRYPTED["nak"]) if nak is not None else None
    view = _insert(session, actor, DeviceView(d, dt, group, None), changes)
    if d.activable:
        _take_token(session, view)
    return view


def create_lorawan(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    *,
    dev_eui: str,
    app_key: str,
    device_type_id: int,
    fields: DeviceFields,
    join_eui: str | None = None,
    prof_id: int | None = None,
) -> DeviceView:
    eui = Eui64.parse(dev_eui, "devEui")
    app_key = parse_app_key(app_key)
    join = str(Eui64.parse(join_eui, "joinEui")) if join_eui is not None else None
    if not _g(fields.name):
        raise InvalidInput.field("name", "field required")
    dt, group = _device_type(session, actor, device_type_id, LORAWAN)
    if prof_id is not None and device_profiles.usable_by(session, prof_id, group) is None:
        raise InvalidInput.field("profId", "no such device profile in this group or above")
    d = _new(LORAWAN, str(eui), dt, group)
    changes = _apply(d, fields)
    d.app_key = keyring.encrypt(app_key.encode(), ENCRYPTED["app_key"])
    d.join_eui = keyring.encrypt(join.encode(), ENCRYPTED["join_eui"]) if join is not None else None
    d.prof_id = keyring.encrypt(str(prof_id).encode(), ENCRYPTED["prof_id"]) if prof_id is not None else None
    return _insert(session, actor, DeviceView(d, dt, group, None), changes)


# -- read, change, delete -------------------------------------------------------------------------
def _load(session: Session, ref: str) -> DeviceView:
    network, identifier = parse_ref(ref)
    row = session.execute(
        select(Device, DeviceType, Group, Contract)
        .join(DeviceType, DeviceType.id == Device.device_type_id)
        .join(Group, Group.id == Device.group_id)
        .outerjoin(Contract, Contract.id == Device.contract_id)
        .where(Device.network == network, Device.identifier == identifier)
    ).first()
    if row is None:
        raise NotFound("device not found")
    return DeviceView(row[0], row[1], row[2], row[3])


def get(session: Session, actor: Actor, ref: str, action: str = "device:read") -> DeviceView:
    view = _load(session, ref)
    actor.require(action, view.group.path, "device")
    return view


def secrets_of(keyring: Keyring, d: Device) -> dict[str, str | None]:
    """The PAC, joinEui and profId in clear (for the single GET with write rights); never the
    NAK or AppKey."""
    out: dict[str, str | None] = {}
    for attr in ("pac", "join_eui", "prof_id"):
        value = getattr(d, attr)
        out[attr] = keyring.decrypt(value, ENCRYPTED[attr]).decode() if value is not None else None
    return out


def update_device(session: Session, actor: Actor, ref: str, fields: DeviceFields) -> DeviceView:
    view = get(session, actor, ref, "device:write")
    d = view.device
    if d.lifecycle == DELETED:
        raise Conflict(f"device {d.identifier} is deleted: restore it first")
    changes = _apply(d, fields)
    if changes.get("activable") is True and d.network == SIGFOX:
        _take_token(session, view)
    audit.record(session, actor, "update", d, "device", view.group.path, {"id": d.identifier} | changes)
    return view


def delete(session: Session, actor: Actor, ref: str) -> None:
    view = get(session, actor, ref, "device:write")
    d = view.device
    if d.lifecycle == DELETED:
        raise NotFound("device not found")
    _release_token(session, d)
    d.lifecycle = DELETED
    d.deleted_at = utcnow()
    audit.record(session, actor, "delete", d, "device", view.group.path, {"id": d.identifier})


def restore(session: Session, actor: Actor, ref: str) -> DeviceView:
    view = get(session, actor, ref, "device:write")
    d = view.device
    if d.lifecycle != DELETED:
        raise Conflict(f"device {d.identifier} is not deleted")
    d.lifecycle = REGISTERED
    d.deleted_at = None
    if d.network == SIGFOX and d.activable:
        _take_token(session, view)
    audit.record(session, actor, "restore", d, "device", view.group.path, {"id": d.identifier})
    return view


# -- list -----------------------------------------------------------------------------------------
def list_devices(
    session: Session,
    actor: Actor,
    *,
    id_prefix: str | None = None,
    group_ids: list[int] | None = None,
    deep: bool = False,
    device_type_id: int | None = None,
    lifecycle: str | None = None,
    sort: str = "id",
    min_id: str | None = None,
    max_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[DeviceView], bool]:
    if sort not in SORTS:
        raise InvalidInput.field("sort", "must be one of " + ", ".join(sorted(SORTS)), "query")
    if lifecycle is not None and lifecycle not in LIFECYCLES:
        raise InvalidInput.field("lifecycle", "must be one of " + ", ".join(LIFECYCLES), "query")
    visible = select(Group.id).where(actor.visible_filter(Group.path, "device:read"))
    conds: list[ColumnElement[bool]] = [Device.group_id.in_(visible)]
    if group_ids:
        parents = [groups_service.get(session, actor, gid) for gid in group_ids]
        if deep:
            conds.append(
                Device.group_id.in_(select(Group.id).where(in_any_subtree(Group.path, [p.path for p in parents])))
            )
        else:
            conds.append(Device.group_id.in_([p.id for p in parents]))
    if device_type_id is not None:
        conds.append(Device.device_type_id == device_type_id)
    conds.append(Device.lifecycle == lifecycle if lifecycle is not None else Device.lifecycle != DELETED)
    if id_prefix:
        text = id_prefix.strip()
        if not _HEX.fullmatch(text):
            raise InvalidInput.field("id", "must be 1 to 16 hex digits", "query")
        conds.append(Device.identifier.startswith(text.upper().lstrip("0") or "0", autoescape=True))
    if min_id is not None:
        conds.append(Device.sort_key >= _hex_bound(min_id, "minId"))
    if max_id is not None:
        conds.append(Device.sort_key <= _hex_bound(max_id, "maxId"))
    key: Any = {"id": Device.sort_key, "name": Device.name, "lastCom": Device.last_seen_at}[sort.lstrip("-")]
    columns = (key, Device.sort_key, Device.network)
    order: list[Any] = [c.desc() if sort.startswith("-") else c.asc() for c in columns]
    rows = list(
        session.execute(
            select(Device, DeviceType, Group, Contract)
            .join(DeviceType, DeviceType.id == Device.device_type_id)
            .join(Group, Group.id == Device.group_id)
            .outerjoin(Contract, Contract.id == Device.contract_id)
            .where(*conds)
            .order_by(*order)
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return [DeviceView(d, dt, g, c) for d, dt, g, c in rows[:limit]], len(rows) > limit
