"""What a delivery renders: the variables of a message (`message_variables`, Sigfox's callback
variables) and the values of claimed outbox rows (`load_items`), loaded in a few set-based queries."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from heron.delivery import templates
from heron.delivery.channels import Item, Owed
from heron.delivery.models import Callback
from heron.messages.decoding import decode, grammar_of
from heron.messages.models import Message, Reception
from heron.radio import LQI_NAMES
from heron.registry.models import Device, DeviceType
from heron.stations.models import BaseStation

log = logging.getLogger("heron.delivery")


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


class Heard(NamedTuple):
    """What the variables read of a reception (`message_variables` takes these or Reception rows)."""

    late: bool
    rssi: float | None
    snr: float | None
    rep: int


class HeardBy(NamedTuple):
    """What the variables read of the station that heard it (these or BaseStation rows)."""

    identifier: str
    lat: float | None
    lng: float | None


# The message columns the variables read (the worker loads only these).
MESSAGE_COLUMNS = (
    "id",
    "device_id",
    "device_type_id",
    "time",
    "data",
    "seq_number",
    "ack_required",
    "lqi",
    "service",
    "decoded",
    "loc_lat",
    "loc_lng",
    "loc_radius",
    "loc_source",
)


def best_reception(receptions: Sequence[tuple[Any, Any]]) -> tuple[Any, Any] | None:
    """The reception a message's delivery carries: the highest RSSI, the first of equals."""
    return max(receptions, key=lambda rs: rs[0].rssi if rs[0].rssi is not None else -1e9, default=None)


def _computed_location(message: Any) -> dict[str, object] | None:
    """`{computedLocation}`: the message's location (heron.geolocation) in the shape of Sigfox's
    DATA_ADVANCED object (`status` 1: a location was computed), or missing."""
    if message.loc_lat is None or message.loc_lng is None:
        return None
    return {
        "lat": message.loc_lat,
        "lng": message.loc_lng,
        "radius": message.loc_radius,
        "source": message.loc_source,
        "status": 1,
    }


def message_variables(
    message: Any,
    device: Any,
    receptions: Sequence[tuple[Any, Any]],
    grammar_config: str | None,
    *,
    duplicate: tuple[Any, Any] | None = None,
) -> dict[str, object]:
    """Every variable a message offers (sigfox-callbacks.md); each callback uses what it names.
    `message`, `device` and the (reception, station) pairs are ORM objects or Core rows with the
    same attribute names (`MESSAGE_COLUMNS`, Device identifier/lat/lng, `Heard`, `HeardBy`).
    A sendDuplicate copy gives its (reception, station): the network values are that station's
    rather than the best reception's, and `duplicate` is true."""
    in_window = [(r, s) for r, s in receptions if not r.late] or receptions
    best = best_reception(in_window) if duplicate is None else duplicate
    snrs = [r.snr for r, _s in in_window if r.snr is not None]
    service = json.loads(message.service) if message.service else {}
    values: dict[str, object] = {
        "device": device.identifier,
        "time": _epoch(message.time),
        "data": message.data,
        "seqNumber": message.seq_number,
        "deviceTypeId": str(message.device_type_id),
        "station": best[1].identifier if best else None,
        "rssi": best[0].rssi if best else None,
        "snr": best[0].snr if best else None,
        "avgSnr": sum(snrs) / len(snrs) if snrs else None,
        "lat": device.lat if device.lat is not None else (best[1].lat if best else None),
        "lng": device.lng if device.lng is not None else (best[1].lng if best else None),
        "duplicate": duplicate is not None,
        "ack": message.ack_required,
        "longPolling": False,
        "temp": service.get("temperature"),
        "batt": service.get("battery"),
        "lqi": LQI_NAMES.get(message.lqi, "NA"),
        "linkQuality": message.lqi,
        "fixedLat": device.lat,
        "fixedLng": device.lng,
        "operatorName": "Heron",
        "countryCode": None,
        "computedLocation": _computed_location(message),
        "duplicates": [{"bsId": s.identifier, "nbRep": r.rep, "rssi": r.rssi, "snr": r.snr} for r, s in receptions],
    }
    fields: dict[str, Any] = {}
    if grammar_config:
        fields = decode(grammar_of(grammar_config), message.data)
    elif message.decoded:
        fields = json.loads(message.decoded)
    values.update({f"{templates.CUSTOM_PREFIX}{k}": v for k, v in fields.items()})
    return values


def load_items(session: Session, owed: list[Owed], cbs: dict[int, Callback]) -> list[Item]:
    """Each delivery's values: from its message, or the ones it carries."""
    conn = session.connection()
    message_ids = [d.message_id for d in owed if d.message_id is not None]
    m, dv, rc, st = (cast(Table, model.__table__) for model in (Message, Device, Reception, BaseStation))
    messages = {
        row.id: row for row in conn.execute(select(*(m.c[n] for n in MESSAGE_COLUMNS)).where(m.c.id.in_(message_ids)))
    }
    devices = {
        row.id: row
        for row in conn.execute(
            select(dv.c.id, dv.c.identifier, dv.c.lat, dv.c.lng).where(
                dv.c.id.in_({row.device_id for row in messages.values()})
            )
        )
    }
    types = {
        t.id: t
        for t in session.scalars(select(DeviceType).where(DeviceType.id.in_({c.device_type_id for c in cbs.values()})))
    }
    receptions: dict[int, list[tuple[Heard, HeardBy]]] = defaultdict(list)
    by_id: dict[int, tuple[Heard, HeardBy]] = {}  # what sendDuplicate copies carry
    for reception_id, message_id, late, rssi, snr, rep, identifier, lat, lng in conn.execute(
        select(rc.c.id, rc.c.message_id, rc.c.late, rc.c.rssi, rc.c.snr, rc.c.rep, st.c.identifier, st.c.lat, st.c.lng)
        .join(st, st.c.id == rc.c.station_id)
        .where(rc.c.message_id.in_(message_ids))
        .order_by(rc.c.id)
    ):
        heard = by_id[reception_id] = (Heard(late, rssi, snr, rep), HeardBy(identifier, lat, lng))
        receptions[message_id].append(heard)
    items = []
    for d in owed:
        cb = cbs.get(d.callback_id) if d.callback_id is not None else None
        dt = types.get(cb.device_type_id) if cb is not None else None
        try:
            if d.message_id is not None:
                message = messages[d.message_id]
                grammar = cb.payload_config if cb is not None else None
                copied = None
                if d.reception_id is not None and (copied := by_id.get(d.reception_id)) is None:
                    raise LookupError(f"reception {d.reception_id} of the message is gone")
                values = message_variables(
                    message, devices[message.device_id], receptions[message.id], grammar, duplicate=copied
                )
            else:
                values = json.loads(d.variables or "{}")
            items.append(Item(d, cb, dt, values))
        except Exception as exc:  # a delivery that cannot render is a recorded failure
            log.warning("delivery.render_failed", extra={"delivery": d.id, "error": str(exc)})
            items.append(Item(d, cb, dt, None, f"cannot render the request: {exc}"))
    return items
