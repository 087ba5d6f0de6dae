"""The station side of downlinks: a Sigfox base station collects the downlinks the decider
(heron.downlink.decider) chose it for, in time for the device's receive window, and reports
their emission."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session, aliased

from heron.delivery.enqueue import enqueue_event
from heron.downlink.models import ACKNOWLEDGED, OPEN, SENT, Downlink
from heron.downlink.models import PENDING as DL_PENDING
from heron.events import service as events
from heron.messages.models import Message
from heron.registry.models import Device
from heron.stations.models import BaseStation
from heron.stations.scope import serves
from heron.tenancy.models import Group

_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def _served(query: _Q) -> _Q:
    """`query` (of downlinks joined with their device) kept to devices the downlink's station
    serves now: a device transferred since its uplink is no longer that station's business."""
    station_group, device_group = aliased(Group), aliased(Group)
    return (
        query.join(BaseStation, BaseStation.id == Downlink.station_id)
        .join(station_group, station_group.id == BaseStation.group_id)
        .join(device_group, device_group.id == Device.group_id)
        .where(serves(station_group.path, device_group.path))
    )


def _for_station(station_id: int, now: datetime) -> Any:
    return and_(OPEN, Downlink.state == DL_PENDING, Downlink.station_id == station_id, Downlink.transmit_at > now)


def waiting(session: Session, station_id: int, now: datetime) -> bool:
    """Whether `collect` would find anything: a read, for long polls to check before they
    take the write lock."""
    query = select(Downlink.id).join(Device, Device.id == Downlink.device_id).where(_for_station(station_id, now))
    return session.scalar(_served(query).limit(1)) is not None


def collect(session: Session, station_id: int, now: datetime) -> list[tuple[Downlink, str, int]]:
    """Downlinks this station should transmit and can still make in time: handed over (SENT)."""
    query = (
        select(Downlink, Device.identifier, Message.seq_number)
        .join(Device, Device.id == Downlink.device_id)
        .join(Message, Message.id == Downlink.message_id)
        .where(_for_station(station_id, now))
    )
    rows = session.execute(_served(query).order_by(Downlink.transmit_at).limit(100)).all()
    for dl, _ident, _seq in rows:
        dl.state, dl.sent_at = SENT, now
    return [(dl, ident, seq) for dl, ident, seq in rows]


def report(session: Session, station_id: int, downlink_id: int, emitted: bool, now: datetime) -> Downlink | None:
    """A station's emission report: ACKNOWLEDGED fires SERVICE ACKNOWLEDGE callbacks."""
    dl = session.get(Downlink, downlink_id)
    if dl is None or dl.station_id != station_id or dl.state != SENT:
        return None
    if not emitted:
        dl.fail("the station reported that it could not emit")
        return dl
    dl.state, dl.acknowledged_at = ACKNOWLEDGED, now
    events.count_downlink(session, dl.device_id, now)  # the device's consumption
    device = session.get(Device, dl.device_id)
    enqueue_event(
        session,
        device_type_id=dl.device_type_id,
        device_id=dl.device_id,
        callback_type="SERVICE",
        subtype="ACKNOWLEDGE",
        variables={
            "device": device.identifier if device else None,
            "time": int(now.timestamp()),
            "infoCode": 0,
            "infoMessage": "Acknowledged",
            "downlinkAck": True,
            "downlinkOverusage": False,
        },
        now=now,
    )
    return dl
