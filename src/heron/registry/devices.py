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

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Conflict, InvalidInput, NotFound
from heron.keys import Keyring, register_encrypted_column
from heron.registry import bulk, device_profiles
from heron.registry.bulk import (
    ACTIVE,
    DEACTIVATED,
    DELETED,
    LORAWAN,
    REGISTERED,
    SETTING_FIELDS,
    SIGFOX,
    TOKEN_NONE,
    TOKEN_OFF,
    Holder,
    check_settings,
    release_tokens,
    reserve_tokens,
    sort_key,
)
from heron.registry.eui import Eui64
from heron.registry.identifiers import SigfoxId, is_hex, parse_app_key, parse_nak, parse_pac
from heron.registry.models import Contract, Device, DeviceType
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.groups import register_content_check
from heron.tenancy.models import Group
from heron.tenancy.owned import KEEP, from_ms

LIFECYCLES = (REGISTERED, ACTIVE, DEACTIVATED, DELETED)
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
def parse_ref(ref: str, field: str = "id", where: str = "path") -> tuple[str, str]:
    """(network, identifier) from a path id, taken exactly (no spaces, no `0x`): 16 hex digits
    are a DevEUI, 1 to 8 a Sigfox id (leading zeros allowed)."""
    if not (is_hex(ref, range(1, 9)) or is_hex(ref, 16)):
        raise InvalidInput.field(field, "must be a Sigfox id (1 to 8 hex digits) or a DevEUI (16 hex digits)", where)
    if len(ref) == 16:
        return LORAWAN, ref.upper()
    return SIGFOX, str(SigfoxId.parse(ref, field, where))


def _g(value: Any) -> bool:
    return value is not KEEP


def _apply(d: Device, f: DeviceFields) -> dict[str, Any]:
    """Set the given fields; raises InvalidInput naming the field. Secrets never enter `changes`."""
    given = {name: getattr(f, name) for name in DeviceFields.__dataclass_fields__ if _g(getattr(f, name))}
    values = check_settings(d.network, given)
    for attr, value in values.items():
        setattr(d, attr, value)
    return {bulk_field(attr): value for attr, value in values.items()}


def bulk_field(attr: str) -> str:
    return SETTING_FIELDS[attr].partition(".")[0]


# -- tokens ---------------------------------------------------------------------------------------
def _take_token(session: Session, view: DeviceView) -> None:
    """One device's token (the bulk paths reserve N at once with the same function)."""
    d, dt = view.device, view.device_type
    if dt.contract_id is None or d.contract_id is not None:
        return
    session.flush()
    now = utcnow()
    reservation = reserve_tokens(session, dt.contract_id, dt.id, view.group.path, 1, now)
    if reservation.refusal:
        raise Conflict(reservation.refusal)
    for attr, value in reservation.columns(now).items():
        if attr != "activated_at" or d.activated_at is None:
            setattr(d, attr, value)
    view.contract = session.get(Contract, dt.contract_id)
    if view.contract is not None:
        session.expire(view.contract, ["tokens_in_use"])


def _release_token(session: Session, d: Device) -> None:
    if d.contract_id is None:
        return
    session.flush()
    release_tokens(session, [Holder(d.id, d.contract_id, d.token_alloc)])
    d.contract_id = None
    d.token_alloc = None
    d.token_state = TOKEN_OFF


# -- create ---------------------------------------------------------------------------------------
def writable_device_type(
    session: Session, actor: Actor, device_type_id: int, network: str | None = None
) -> tuple[DeviceType, Group]:
    """The device type new or moved devices join: unknown or invisible is a 400 naming
    `deviceTypeId` (a reference in a body is input), then `device:write` on its group."""
    row = session.execute(
        select(DeviceType, Group).join(Group, Group.id == DeviceType.group_id).where(DeviceType.id == device_type_id)
    ).first()
    if row is None or not actor.can("device:read", row[1].path):
        raise InvalidInput.field("deviceTypeId", "no such device type")
    dt, group = row[0], row[1]
    actor.require("device:write", group.path, "device type")
    if network is not None and dt.network != network:
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
    dt, group = writable_device_type(session, actor, device_type_id, SIGFOX)
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
    dt, group = writable_device_type(session, actor, device_type_id, LORAWAN)
    if prof_id is not None and device_profiles.usable_by(session, prof_id, group) is None:
        raise InvalidInput.field("profId", "no such device profile in this group or above")
    d = _new(LORAWAN, str(eui), dt, group)
    changes = _apply(d, fields)
    d.app_key = keyring.encrypt(app_key.encode(), ENCRYPTED["app_key"])
    d.join_eui = keyring.encrypt(join.encode(), ENCRYPTED["join_eui"]) if join is not None else None
    d.prof_id = keyring.encrypt(str(prof_id).encode(), ENCRYPTED["prof_id"]) if prof_id is not None else None
    return _insert(session, actor, DeviceView(d, dt, group, None), changes)


# -- read, change, delete -------------------------------------------------------------------------
def _load(session: Session, ref: str, for_update: bool = False, deleted: bool = False) -> DeviceView:
    """The device `ref` names. A deleted device is gone from the device resources (404 like an
    unknown one) unless `deleted`: only the restore reaches it."""
    network, identifier = parse_ref(ref)
    query = (
        select(Device, DeviceType, Group, Contract)
        .join(DeviceType, DeviceType.id == Device.device_type_id)
        .join(Group, Group.id == Device.group_id)
        .outerjoin(Contract, Contract.id == Device.contract_id)
        .where(Device.network == network, Device.identifier == identifier)
    )
    if not deleted:
        query = query.where(Device.lifecycle != DELETED)
    if for_update:  # a writer: the device row stays locked to commit (its token with it)
        query = query.with_for_update(of=Device)
    row = session.execute(query).first()
    if row is None:
        raise NotFound("device not found")
    return DeviceView(row[0], row[1], row[2], row[3])


def get(session: Session, actor: Actor, ref: str, action: str = "device:read", *, deleted: bool = False) -> DeviceView:
    """The one lookup of every `/devices/{id}...` route: the device and the caller's right on
    its group. Deleted devices answer 404 (`deleted=True`: the restore's own lookup)."""
    view = _load(session, ref, for_update=action != "device:read", deleted=deleted)
    actor.require(action, view.group.path, "device")
    return view


def get_traffic(session: Session, actor: Actor, ref: str) -> DeviceView:
    """A device whose traffic (messages, events, downlinks) the caller may read: `device:read`
    and `message:read` on its group."""
    view = get(session, actor, ref)
    actor.require("message:read", view.group.path, "device")
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
    changes = _apply(d, fields)
    if changes.get("activable") is True and d.network == SIGFOX:
        _take_token(session, view)
    audit.record(session, actor, "update", d, "device", view.group.path, {"id": d.identifier} | changes)
    return view


def delete(session: Session, actor: Actor, ref: str) -> None:
    view = get(session, actor, ref, "device:write")
    d = view.device
    _release_token(session, d)
    d.lifecycle = DELETED
    d.deleted_at = utcnow()
    audit.record(session, actor, "delete", d, "device", view.group.path, {"id": d.identifier})


def restore(session: Session, actor: Actor, ref: str) -> DeviceView:
    view = get(session, actor, ref, "device:write", deleted=True)
    d = view.device
    if d.lifecycle != DELETED:
        raise Conflict(f"device {d.identifier} is not deleted")
    d.lifecycle = REGISTERED
    d.deleted_at = None
    if d.network == SIGFOX and d.activable:
        _take_token(session, view)
    audit.record(session, actor, "restore", d, "device", view.group.path, {"id": d.identifier})
    return view


# -- token and sequence-number actions ------------------------------------------------------------
def unsubscribe(session: Session, actor: Actor, ref: str, unsubscription_ms: int | None) -> DeviceView:
    """`PUT /devices/{id}/unsubscribe`: the token ends at that time and is not renewed; a time
    already past ends it now (`bulk.unsubscribe`, shared with the bulk job). A device holding
    no token has nothing to unsubscribe: 409. The device is named first (a bad id is the 400),
    then the time, which the document requires."""
    view = get(session, actor, ref, "device:write")
    if unsubscription_ms is None:
        raise InvalidInput.field("unsubscriptionTime", "field required")
    when = from_ms(unsubscription_ms, "unsubscriptionTime")
    d = view.device
    if d.contract_id is None:
        raise Conflict(f"device {d.identifier} holds no token to unsubscribe")
    session.flush()
    bulk.unsubscribe(session, [(Holder(d.id, d.contract_id, d.token_alloc), when)], utcnow())
    session.expire(d)  # written by Core above
    audit.record(session, actor, "unsubscribe", d, "device", view.group.path, {"id": d.identifier, "at": when})
    return view


def disengage(session: Session, actor: Actor, ref: str) -> None:
    """`POST /devices/{id}/disengage`: the next frame is taken whatever its sequence number
    (no lost frames counted, no repeat refused): the store compares with the device's last
    number, and there is none (uplink/store.py)."""
    view = get(session, actor, ref, "device:write")
    view.device.sequence_number = None
    audit.record(session, actor, "disengage", view.device, "device", view.group.path, {"id": view.device.identifier})


# -- certificates ---------------------------------------------------------------------------------
CERTIFICATES = {"product": "product_certificate", "modem": "modem_certificate"}


def certificate(session: Session, actor: Actor, ref: str, kind: str) -> str:
    """The key of the device's product or modem certificate; 404 naming what is missing."""
    d = get(session, actor, ref).device
    key: str | None = getattr(d, CERTIFICATES[kind])
    if key is None:
        raise NotFound(f"device {d.identifier} has no {kind} certificate")
    return key


def certificate_with_pac(session: Session, actor: Actor, keyring: Keyring, ref: str, pac: str | None) -> str:
    """The product certificate of the device with this id and PAC (the caller proves the PAC;
    a wrong one answers like an unknown device). Checked in order: the id, the PAC (which the
    document requires), then the device."""
    parse_ref(ref)
    if pac is None:
        raise InvalidInput.field("pac", "field required", "query")
    given = parse_pac(pac, "pac", "query")
    d = get(session, actor, ref).device
    if d.pac is None or keyring.decrypt(d.pac, ENCRYPTED["pac"]).decode() != given:
        raise NotFound("device not found")
    if d.product_certificate is None:
        raise NotFound(f"device {d.identifier} has no product certificate")
    return d.product_certificate
