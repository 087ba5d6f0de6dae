"""What the outbox shows and what users ask of it: deliveries not (yet) delivered, per device,
device type, group or callback (`callbacks-not-delivered`); retry them now; send a test
callback; resend a device type's messages over a time range to one callback."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.delivery import callbacks as callbacks_service
from heron.delivery import templates
from heron.delivery.models import DONE, FAILED, PENDING, Callback, Delivery
from heron.errors import InvalidInput, NotFound
from heron.messages.models import Message, Reception
from heron.registry import device_types, devices
from heron.registry.models import Device, DeviceType
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, in_subtree
from heron.tenancy.models import Group
from heron.unique import unique_hex

MAX_RESEND = 100_000
# Kinds of message each callback type and subtype is owed for (enqueue._OWED, by frame type).
_FRAMES_FOR = {("DATA", "UPLINK"): "DATA", ("DATA", "BIDIR"): "DATA", ("SERVICE", "DATA_ADVANCED"): "DATA"}
_FRAMES_FOR |= {("SERVICE", "STATUS"): "KEEPALIVE", ("SERVICE", "REPEATER"): "REPEATER"}


@dataclass
class Undelivered:
    delivery: Delivery
    callback: Callback | None
    device_identifier: str | None
    data: str | None
    snr: float | None  # the best of the message's receptions


def _not_delivered() -> ColumnElement[bool]:
    """Tried and not (yet) delivered, or given up (outbox overflow fails rows never tried). The
    partial index ix_deliveries_undelivered holds exactly the rows with state <> 'DONE'."""
    return and_(Delivery.state != DONE, or_(Delivery.attempts > 0, Delivery.state == FAILED))


def _list(
    session: Session,
    scope: ColumnElement[bool],
    since: datetime | None,
    before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Undelivered], bool]:
    conds = [_not_delivered(), scope]
    if since is not None:
        conds.append(Delivery.created_at >= since)
    if before is not None:
        conds.append(Delivery.created_at < before)
    best_snr = select(func.max(Reception.snr)).where(Reception.message_id == Delivery.message_id).scalar_subquery()
    rows = list(
        session.execute(
            select(Delivery, Callback, Device.identifier, Message.data, best_snr)
            .outerjoin(Callback, Callback.id == Delivery.callback_id)
            .outerjoin(Device, Device.id == Delivery.device_id)
            .outerjoin(Message, Message.id == Delivery.message_id)
            .where(*conds)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return [Undelivered(d, c, ident, data, snr) for d, c, ident, data, snr in rows[:limit]], len(rows) > limit


def for_device(
    session: Session,
    actor: Actor,
    ref: str,
    *,
    since: datetime | None,
    before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Undelivered], bool]:
    view = devices.get(session, actor, ref)
    actor.require("callback:read", view.group.path, "device")
    return _list(session, Delivery.device_id == view.device.id, since, before, limit, offset)


def for_device_type(
    session: Session,
    actor: Actor,
    device_type_id: int,
    *,
    callback_id: int | None = None,
    since: datetime | None,
    before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Undelivered], bool]:
    view = device_types.get(session, actor, device_type_id)
    actor.require("callback:read", view.group.path, "device type")
    scope = Delivery.device_type_id == device_type_id
    if callback_id is not None:
        scope = and_(scope, Delivery.callback_id == callback_id)
    return _list(session, scope, since, before, limit, offset)


def for_group(
    session: Session,
    actor: Actor,
    group_id: int,
    *,
    since: datetime | None,
    before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Undelivered], bool]:
    """Every device type in the group's subtree the caller may read callbacks of."""
    group = groups_service.get(session, actor, group_id)
    types = (
        select(DeviceType.id)
        .join(Group, Group.id == DeviceType.group_id)
        .where(in_subtree(Group.path, group.path), actor.visible_filter(Group.path, "callback:read"))
    )
    return _list(session, Delivery.device_type_id.in_(types), since, before, limit, offset)


def retry_now(session: Session, actor: Actor, device_type_id: int, callback_id: int | None = None) -> int:
    """Every not-delivered delivery of the device type (or of one callback) goes out on the next
    round, with a fresh give-up age; dead callbacks among them are revived (probing stops)."""
    view = device_types.get(session, actor, device_type_id)
    actor.require("callback:write", view.group.path, "device type")
    now = utcnow()
    # Not the rows in flight (leased by a worker, lease running): making them due would let a
    # claim send them a second time while their request is under way.
    free = or_(Delivery.leased_by.is_(None), Delivery.next_at <= now)
    scope = [Delivery.device_type_id == device_type_id, Delivery.state != DONE, free]
    if callback_id is not None:
        scope.append(Delivery.callback_id == callback_id)
    result = session.execute(
        update(Delivery).where(*scope).values(state=PENDING, next_at=now, created_at=now, leased_by=None)
    )
    revive = [Callback.device_type_id == device_type_id]
    if callback_id is not None:
        revive.append(Callback.id == callback_id)
    session.execute(update(Callback).where(*revive).values(dead=False, dead_since=None, probe_at=None, failures=0))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _callback(session: Session, actor: Actor, device_type_id: int, callback_id: int) -> tuple[DeviceType, Callback]:
    view = device_types.get(session, actor, device_type_id)
    actor.require("callback:write", view.group.path, "device type")
    cb = session.get(Callback, callback_id)
    if cb is None or cb.device_type_id != device_type_id:
        raise NotFound("callback not found")
    return view.device_type, cb


def send_test(session: Session, actor: Actor, device_type_id: int, callback_id: int) -> str:
    """A delivery of sample values (`templates.sample_values`), due now; its key is returned
    (the `webhook-id` the receiver sees)."""
    dt, cb = _callback(session, actor, device_type_id, callback_id)
    names = templates.variables_for(
        cb.callback_type, cb.callback_subtype, custom_fields=callbacks_service.custom_fields(cb, dt)
    )
    values = templates.sample_values(names)
    now = utcnow()
    key = unique_hex()
    session.add(
        Delivery(
            key=key,
            callback_id=cb.id,
            device_type_id=dt.id,
            device_id=None,
            message_id=None,
            event="TEST",
            variables=json.dumps(values, default=str),
            state=PENDING,
            attempts=0,
            next_at=now,
            created_at=now,
        )
    )
    return key


def resend(
    session: Session, actor: Actor, device_type_id: int, callback_id: int, since: datetime, before: datetime
) -> int:
    """Deliveries to one callback for the device type's messages in [since, before), in message
    order. Each is a new delivery (a new webhook-id): a resend is asked for."""
    dt, cb = _callback(session, actor, device_type_id, callback_id)
    frame_type = _FRAMES_FOR.get((cb.callback_type, cb.callback_subtype or ""))
    if frame_type is None:
        raise InvalidInput.field("callbackId", f"a {cb.callback_type} callback is not about messages", "path")
    if before <= since:
        raise InvalidInput.field("before", "must be after since", "query")
    window = [Message.device_type_id == dt.id, Message.time >= since, Message.time < before]
    window.append(Message.frame_type == frame_type)
    count = session.scalar(select(func.count()).select_from(Message).where(*window)) or 0
    if count > MAX_RESEND:
        raise InvalidInput.field(
            "since", f"the range holds {count} messages; resend at most {MAX_RESEND} at once", "query"
        )
    now = utcnow()
    rows = [
        {
            "key": unique_hex(),
            "callback_id": cb.id,
            "device_type_id": dt.id,
            "device_id": device_id,
            "message_id": message_id,
            "event": cb.callback_subtype or cb.callback_type,
            "state": PENDING,
            "attempts": 0,
            "next_at": now,
            "created_at": now,
        }
        for message_id, device_id in session.execute(
            select(Message.id, Message.device_id).where(*window).order_by(Message.time, Message.id)
        )
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Delivery), rows[start : start + 5000])
    return int(count)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _item(u: Undelivered) -> dict[str, Any]:
    """The fields every scope's item shares, named as the Sigfox document names them; `time` is
    when the delivery was owed (the list's order and its since/before), in epoch ms like since
    and before (the document's device item says ms; its device-type and group items say "posix
    format" with a seconds example, which would make `before=<time>` paging skip a page)."""
    d, cb = u.delivery, u.callback
    medium: dict[str, Any] = {}
    if cb is not None:
        medium = {"id": str(cb.id), "channel": cb.channel}
        if cb.channel == "EMAIL":
            medium |= {"subject": cb.subject, "message": cb.message}
        else:
            medium |= {"url": callbacks_service.shown_url(cb), "method": cb.http_method, "contentType": cb.content_type}
        medium["error"] = d.last_error
    return {
        "time": _ms(d.created_at),
        "data": u.data,
        "snr": f"{u.snr:.2f}" if u.snr is not None else None,
        "status": str(d.last_status) if d.last_status is not None else None,
        "message": d.last_error,
        "callback": medium,
        # Heron's own: the outbox row behind the item (no equivalent in the document).
        "deliveryId": d.key,
        "event": d.event,
        "duplicate": d.duplicate_of is not None,  # a sendDuplicate copy (another station's reception)
        "state": d.state,
        "attempts": d.attempts,
        "nextAttempt": _ms(d.next_at) if d.state == PENDING else None,
    }


def wire(u: Undelivered) -> dict[str, Any]:
    """A device, device type or callback item: the document's `deviceErrorMessages` /
    `errorMessages` (`deviceId`, `deviceTypeId`)."""
    d = u.delivery
    return {
        "deviceId": u.device_identifier,
        "deviceTypeId": str(d.device_type_id) if d.device_type_id is not None else None,
    } | _item(u)


def wire_group(u: Undelivered, api_base: str) -> dict[str, Any]:
    """A group item: the document's `groupErrorMessages` (`device`, `deviceUrl`, `deviceType`)."""
    d, ident = u.delivery, u.device_identifier
    return {
        "device": ident,
        "deviceUrl": f"{api_base}/devices/{ident}" if ident is not None else None,
        "deviceType": str(d.device_type_id) if d.device_type_id is not None else None,
    } | _item(u)
