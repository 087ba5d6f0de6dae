"""Reading messages: a device's or a device type's, newest first, by time window (`time`: when
the network heard the frame). Pages are heron.db.keyset time-window pages on (time, id): many
messages can share one millisecond, so a time alone cannot say where a page ended."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from heron.db.engine import Database
from heron.db.keyset import TimePage, TimeWindow, newest_first_page
from heron.delivery.models import Callback, Delivery
from heron.messages.models import Message, Reception
from heron.radio import LQI_NAMES
from heron.registry import device_types, devices
from heron.registry.models import Device
from heron.stations.models import BaseStation
from heron.tenancy.access import Actor

MAX_LIMIT = 100


@dataclass
class ReceptionView:
    reception: Reception
    station: BaseStation


@dataclass
class CallbackStatus:
    """Where one of the message's deliveries stands (the Sigfox `cbStatus`).

    A sendDuplicate copy (one more call of the callback for another station's reception) is
    listed too, marked `duplicate` with that station: it is a call of its own that can fail and
    be retried, and the Sigfox message view shows callback status per reception, so hiding it
    would show a failing copy as fine. The message's own call has `duplicate` false, no station."""

    callback_id: int
    event: str
    state: str
    status: int | None
    info: str | None
    time: datetime | None
    url: str | None
    duplicate: bool = False
    reception_id: int | None = None  # a copy's: the reception whose station it carries
    station: str | None = None  # ... and that station's id


@dataclass
class MessageView:
    message: Message
    device_identifier: str
    device_name: str
    receptions: list[ReceptionView] = field(default_factory=list)
    callbacks: list[CallbackStatus] = field(default_factory=list)

    @property
    def decoded(self) -> dict[str, Any] | None:
        loaded: dict[str, Any] | None = json.loads(self.message.decoded) if self.message.decoded else None
        return loaded

    @property
    def service(self) -> dict[str, Any] | None:
        loaded: dict[str, Any] | None = json.loads(self.message.service) if self.message.service else None
        return loaded


def device_messages(session: Session, actor: Actor, ref: str, window: TimeWindow) -> TimePage:
    """A page of the device's messages (`rows`: MessageView)."""
    return _page(session, device_scope(session, actor, ref), window)


def device_type_messages(session: Session, actor: Actor, device_type_id: int, window: TimeWindow) -> TimePage:
    return _page(session, device_type_scope(session, actor, device_type_id), window)


def _page(session: Session, scope: ColumnElement[bool], window: TimeWindow, *, receptions: bool = True) -> TimePage:
    page = newest_first_page(
        session,
        select(Message, Device.identifier, Device.name).join(Device, Device.id == Message.device_id).where(scope),
        Message.time,
        Message.id,
        window,
        position=lambda row: (row[0].time, row[0].id),
    )
    page.rows = [MessageView(m, ident, name) for m, ident, name in page.rows]
    if receptions:
        _attach_receptions(session, page.rows)
    return page


def device_scope(session: Session, actor: Actor, ref: str) -> ColumnElement[bool]:
    """The messages of a device the caller may read (for the export and the metric)."""
    return Message.device_id == devices.get_traffic(session, actor, ref).device.id


def device_type_scope(session: Session, actor: Actor, device_type_id: int) -> ColumnElement[bool]:
    view = device_types.get(session, actor, device_type_id)
    actor.require("message:read", view.group.path, "device type")
    return Message.device_type_id == device_type_id


def metric(session: Session, scope: ColumnElement[bool], now: datetime) -> dict[str, int]:
    """Messages in the last day, week and month (30 days): the Sigfox `messages/metric`."""
    out = {}
    for name, days in (("lastDay", 1), ("lastWeek", 7), ("lastMonth", 30)):
        out[name] = int(
            session.scalar(
                select(func.count()).select_from(Message).where(scope, Message.time >= now - timedelta(days=days))
            )
            or 0
        )
    return out


EXPORT_COLUMNS = (
    "time",
    "device",
    "seqNumber",
    "frameType",
    "data",
    "decodedData",
    "ackRequired",
    "lqi",
    "receptions",
    "bestRssi",
    "lostMessages",
)
EXPORT_CHUNK = 2000


def export_csv(
    db: Database, scope: ColumnElement[bool], since: datetime | None, before: datetime | None
) -> Iterator[bytes]:
    """The messages as CSV, newest first, read in keyset chunks (each its own short read, so
    memory stays constant whatever the range). Times are ISO 8601 UTC, as the device export's."""
    yield (",".join(EXPORT_COLUMNS) + "\r\n").encode()
    window = TimeWindow(since, before, limit=EXPORT_CHUNK, offset=0)  # exact chunks: no trim
    while True:
        with db.read() as session:
            page = _page(session, scope, window, receptions=False)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for v in page.rows:
            m = v.message
            writer.writerow(
                [
                    m.time.isoformat().replace("+00:00", "Z"),
                    v.device_identifier,
                    m.seq_number,
                    m.frame_type,
                    m.data,
                    m.decoded or "",
                    "true" if m.ack_required else "false",
                    LQI_NAMES.get(m.lqi, "NA"),
                    m.receptions,
                    "" if m.best_rssi is None else f"{m.best_rssi:.2f}",
                    m.lost,
                ]
            )
        yield out.getvalue().encode()
        if page.next_after is None:
            return
        window = TimeWindow(since, before, page.next_after, offset=0, limit=EXPORT_CHUNK)


def _attach_receptions(session: Session, items: list[MessageView]) -> None:
    if not items:
        return
    by_id = {v.message.id: v for v in items}
    found: dict[int, list[ReceptionView]] = defaultdict(list)
    stations: dict[int, str] = {}  # reception id -> station id, for the sendDuplicate copies
    for reception, station in session.execute(
        select(Reception, BaseStation)
        .join(BaseStation, BaseStation.id == Reception.station_id)
        .where(Reception.message_id.in_(list(by_id)))
        .order_by(Reception.id)
    ):
        found[reception.message_id].append(ReceptionView(reception, station))
        stations[reception.id] = station.identifier
    for message_id, receptions in found.items():
        by_id[message_id].receptions = receptions
    for d, url in session.execute(
        select(Delivery, Callback.url)
        .join(Callback, Callback.id == Delivery.callback_id)
        .where(Delivery.message_id.in_(list(by_id)))
        .order_by(Delivery.id)
    ):
        assert d.message_id is not None and d.callback_id is not None
        copy = d.duplicate_of is not None
        by_id[d.message_id].callbacks.append(
            CallbackStatus(
                d.callback_id,
                d.event,
                d.state,
                d.last_status,
                d.last_error,
                d.last_attempt_at or d.next_at,
                url,
                duplicate=copy,
                reception_id=d.reception_id if copy else None,
                station=stations.get(d.reception_id) if copy and d.reception_id is not None else None,
            )
        )
