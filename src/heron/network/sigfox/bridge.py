"""The Sigfox cloud bridge: a customer of the Sigfox/UnaBiz cloud points its device type's
callbacks at `POST /bridge/sigfox/{deviceTypeId}/{secret}` and Heron takes what the Sigfox
backend sends as if its own stations had heard it, for the devices of that device type only (the
uplink writer counts any other id as an unknown one: heron.uplink.store). Receptions are filed under one virtual base
station per bridge (in the device type's group); the Sigfox station id rides along in the
message's reception (`rssi`/`snr` of the reporting station). Body shapes (Sigfox variables, as
JSON; `time` in epoch seconds; numbers may arrive as strings):

- DATA UPLINK: `device`, `time`, `seqNumber`, `data`, optional `station`, `rssi`, `snr`.
- DATA BIDIR: the same with `ack` (true): the answer carries the downlink Heron decides
  (`{"<device>": {"downlinkData": "<16 hex>"}}`, or 204 for none), within `BIDIR_WAIT`.
- SERVICE STATUS: `device`, `time`, `seqNumber`, `temp` (degrees C), `batt` (V).
- SERVICE DATA_ADVANCED (`duplicates` present): accepted; the message already holds what Heron
  keeps of it.
- SERVICE ACKNOWLEDGE (`downlinkAck` present): the emission report of the downlink handed over
  in the last BIDIR answer (fires Heron's own SERVICE ACKNOWLEDGE callbacks)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.db.fastpath import FastQuery
from heron.downlink.models import PENDING, SENT, Downlink
from heron.errors import Conflict, InvalidInput, NotFound
from heron.messages.models import Message
from heron.network.sigfox import downlinks
from heron.network.sigfox.models import SigfoxBridge
from heron.registry import device_types
from heron.registry.bulk import SIGFOX
from heron.registry.identifiers import SigfoxId, is_hex
from heron.registry.models import Device
from heron.stations.models import BaseStation
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.uplink.store import HeardFrame

BIDIR_WAIT = timedelta(seconds=8)  # Sigfox waits for a BIDIR answer a little longer than this
UPLINK, BIDIR, STATUS, ADVANCED, ACKNOWLEDGE = "UPLINK", "BIDIR", "STATUS", "DATA_ADVANCED", "ACKNOWLEDGE"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class BridgeView:
    device_type_id: int
    station_identifier: str
    created_at: datetime


def enable(session: Session, actor: Actor, device_type_id: int) -> tuple[BridgeView, str]:
    """The bridge's secret, new (the previous one stops working). Creates the bridge and its
    virtual station the first time."""
    view = device_types.get(session, actor, device_type_id, "device_type:write")
    if view.device_type.network != SIGFOX:
        raise InvalidInput.field("deviceTypeId", "the Sigfox cloud bridge is for SIGFOX device types", "path")
    secret, now = secrets.token_urlsafe(32), utcnow()
    bridge = session.get(SigfoxBridge, device_type_id)
    if bridge is None:
        identifier = f"F{device_type_id:07X}"[-8:]
        if session.scalar(select(BaseStation.id).where(BaseStation.identifier == identifier)) is not None:
            raise Conflict(f"base station id {identifier} (the bridge's virtual station) is taken")
        station = BaseStation(
            identifier=identifier,
            name=f"Sigfox cloud bridge ({view.device_type.name})"[:100],
            group_id=view.group.id,
            device_type_id=device_type_id,
            radio_zone="RC1",
            enabled=True,
            state="NEW",
            secret_hash=_hash(secrets.token_urlsafe(32)),  # never used: the bridge has its own secret
            secret_rotated_at=now,
            created_at=now,
            created_by=actor.ref,
        )
        session.add(station)
        session.flush()
        bridge = SigfoxBridge(
            device_type_id=device_type_id, station_id=station.id, created_at=now, created_by=actor.ref
        )
        session.add(bridge)
    bridge.secret_hash = _hash(secret)
    audit.record(session, actor, "enable_bridge", view.device_type, "device_type", view.group.path, {})
    return get(session, actor, device_type_id), secret


def get(session: Session, actor: Actor, device_type_id: int) -> BridgeView:
    device_types.get(session, actor, device_type_id)
    row = session.execute(
        select(SigfoxBridge, BaseStation.identifier)
        .join(BaseStation, BaseStation.id == SigfoxBridge.station_id)
        .where(SigfoxBridge.device_type_id == device_type_id)
    ).first()
    if row is None:
        raise NotFound("this device type has no Sigfox cloud bridge")
    return BridgeView(device_type_id, row[1], row[0].created_at)


def disable(session: Session, actor: Actor, device_type_id: int) -> None:
    view = device_types.get(session, actor, device_type_id, "device_type:write")
    get(session, actor, device_type_id)
    bridge = session.get(SigfoxBridge, device_type_id)
    session.delete(bridge)
    audit.record(session, actor, "disable_bridge", view.device_type, "device_type", view.group.path, {})


_BY_TYPE = FastQuery("SELECT secret_hash, station_id FROM sigfox_bridges WHERE device_type_id = :dt")


def authenticate(db: Database, device_type_id: int, secret: str) -> int | None:
    """The bridge's virtual station id when the URL's secret is right."""
    row = _BY_TYPE.first(db, {"dt": device_type_id})
    if row is None or not hmac.compare_digest(_hash(secret), row[0]):
        return None
    return int(row[1])


# -- what the Sigfox backend sends ---------------------------------------------------------------
def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None or value == "" or value == "null":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput.field(name, f"must be a number, got {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise InvalidInput.field(name, f"must be between {low:g} and {high:g}")
    return number


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or value is None:
        raise InvalidInput.field(name, "field required" if value is None else "must be an integer")
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidInput.field(name, f"must be an integer, got {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise InvalidInput.field(name, f"must be between {low} and {high}")
    return number


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def kind_of(body: dict[str, Any]) -> str:
    if "duplicates" in body:
        return ADVANCED
    if "downlinkAck" in body or "infoCode" in body:
        return ACKNOWLEDGE
    if "data" not in body and ("temp" in body or "batt" in body):
        return STATUS
    return BIDIR if "ack" in body and _bool(body["ack"]) else UPLINK


def frame_of(body: dict[str, Any], station_id: int, now: datetime) -> HeardFrame:
    """The reception an UPLINK, BIDIR or STATUS body stands for (400 naming the field if bad)."""
    device = str(SigfoxId.parse(body.get("device"), "device"))
    seq = _int(body, "seqNumber", 0, 4095)
    seconds = _number(body, "time", 0, 253_402_300_799)
    kind = kind_of(body)
    data = "" if kind == STATUS else str(body.get("data") or "")
    if not is_hex(data, range(0, 25, 2)):
        raise InvalidInput.field("data", "must be 0 to 12 bytes as an even number of hex digits")
    return HeardFrame(
        station_id=station_id,
        device=device,
        seq_number=seq,
        frame_type="KEEPALIVE" if kind == STATUS else "DATA",
        data=data.lower(),
        ack_required=kind == BIDIR,
        time=datetime.fromtimestamp(seconds, UTC) if seconds is not None else now,
        rssi=_number(body, "rssi", -200, 50),
        snr=_number(body, "snr", -50, 100),
        battery=_number(body, "batt", 0, 100) if kind == STATUS else None,
        temperature=_number(body, "temp", -100, 200) if kind == STATUS else None,
    )


def decided_downlink(session: Session, station_id: int, device: str, seq: int, now: datetime) -> Downlink | None:
    """The decided downlink for the message (device, seq) the bridge just stored: handed over
    (SENT) when there is one to send; None while still deciding. Only of the bridge's device
    type: another type's device is none of its business (its frames were not stored either)."""
    row = session.execute(
        select(Downlink)
        .join(Message, Message.id == Downlink.message_id)
        .join(Device, Device.id == Downlink.device_id)
        .join(SigfoxBridge, SigfoxBridge.device_type_id == Device.device_type_id)
        .where(SigfoxBridge.station_id == station_id)
        .where(Device.network == SIGFOX, Device.identifier == device, Message.seq_number == seq)
        .order_by(Downlink.id.desc())
        .limit(1)
    ).scalar()
    if row is None or row.state == "DECIDING":
        return None
    if row.state == PENDING and row.station_id == station_id:
        row.state, row.sent_at = SENT, now
    return row


def acknowledge(session: Session, station_id: int, body: dict[str, Any], now: datetime) -> bool:
    """Sigfox's ACKNOWLEDGE of the last downlink this bridge handed over for the device."""
    device = str(SigfoxId.parse(body.get("device"), "device"))
    dl = session.execute(
        select(Downlink)
        .join(Device, Device.id == Downlink.device_id)
        .where(Device.network == SIGFOX, Device.identifier == device, Downlink.station_id == station_id)
        .where(Downlink.state == SENT)
        .order_by(Downlink.id.desc())
        .limit(1)
    ).scalar()
    if dl is None:
        return False
    downlinks.report(session, station_id, dl.id, _bool(body.get("downlinkAck", True)), now)
    return True
