"""A device's computed locations (`/devices/{id}/locations`): one item per message, newest
first, paged like its messages (heron.db.keyset). A message without a location is an item with
`valid` false, as the Sigfox document describes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.db.keyset import TimePage, TimeWindow, newest_first_page
from heron.messages.models import Message
from heron.registry import devices
from heron.tenancy.access import Actor

DATA = "DATA"  # the other frame types (keep-alive, repeater) are out of band


def device_locations(session: Session, actor: Actor, ref: str, window: TimeWindow, *, oob: bool = False) -> TimePage:
    """A page of the device's locations (`rows`: id, time, loc_lat, loc_lng, loc_radius,
    loc_source), with the messages' own rights (`devices.get_traffic`). Out-of-band messages
    (service frames) only when `oob`."""
    device = devices.get_traffic(session, actor, ref).device
    stmt = select(
        Message.id, Message.time, Message.loc_lat, Message.loc_lng, Message.loc_radius, Message.loc_source
    ).where(Message.device_id == device.id)
    if not oob:
        stmt = stmt.where(Message.frame_type == DATA)
    return newest_first_page(session, stmt, Message.time, Message.id, window, position=lambda r: (r.time, r.id))
