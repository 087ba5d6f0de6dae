"""Events: what Heron notices about devices and base stations, each written once.

- **Communication loss** (keep-alive): a device of a device type with `keep_alive` > 0, seen at
  least once, holding a token, and silent for longer than the keep-alive, gets com_state KO,
  a COMMUNICATION_LOST event and one ERROR callback delivery per enabled ERROR callback of its
  device type (`info` "No message received since ...", `severity` ERROR, as Sigfox sends). A
  device never seen stays NOT_SEEN: a loss needs a first contact. Its next message (the store
  sets com_state OK) closes the loss with COMMUNICATION_RESTORED, in the ingest's transaction.
- **Overusage**: DATA uplinks are counted per device and contract day (midnight in the
  contract's timezone). The batch that takes a device past its contract's `max_uplink_frames`
  writes one OVERUSAGE event; the unique (device, kind, day) key makes it one per day whatever
  restarts or processes. The messages are stored and delivered as usual. Devices without a
  contract have no limit.
- **Token expiry**: a token given back at its end (not renewed) writes TOKEN_EXPIRED.
- **Station offline**: an ONLINE station silent for `HERON_STATION_OFFLINE_SECONDS` becomes
  OFFLINE with STATION_OFFLINE; once the ingest has heard it again (and set it ONLINE), the
  next upkeep pass writes STATION_ONLINE (so that event lags by up to one upkeep interval).

Everything is set-based: `after_uplinks` costs two statements per ingest batch (read the
devices' contract and open loss, add to the counters), plus one when an event is due; the
periodic passes read their due rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
processes never write the same event, and a restart repeats nothing (the state is in the
database: com_state, the open losses and outages, the counters)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from heron.db.driver import bind_processor, result_processor, rows_in, upsert_insert
from heron.db.keyset import TimePage, TimeWindow, newest_first_page
from heron.db.upsert import add_counts
from heron.delivery.enqueue import new_key
from heron.delivery.models import PENDING, Callback, Delivery
from heron.events.models import DeviceLoss, Event, StationOutage, UplinkCount
from heron.jobs.engine import Periodic
from heron.registry import devices
from heron.registry.bulk import DELETED, TOKEN_OK
from heron.registry.models import Contract, Device, DeviceType
from heron.stations.models import BaseStation
from heron.tenancy.access import Actor
from heron.uplink.store import StoredMessage


class EventKind(StrEnum):
    """An event's stored `kind` (api.md)."""

    COMMUNICATION_LOST = "COMMUNICATION_LOST"
    COMMUNICATION_RESTORED = "COMMUNICATION_RESTORED"
    OVERUSAGE = "OVERUSAGE"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 (an event kind, not a secret)
    STATION_OFFLINE = "STATION_OFFLINE"
    STATION_ONLINE = "STATION_ONLINE"


COMMUNICATION_LOST, COMMUNICATION_RESTORED, OVERUSAGE, TOKEN_EXPIRED, STATION_OFFLINE, STATION_ONLINE = EventKind

COM_OK, COM_KO = 1, 3  # api.md comState
BATCH = 5000
_CHUNK = 1000  # rows per multi-VALUES statement (SQLite's bound-parameter limit)
# Per-device-day counters are kept this many days back: the overusage check needs two (timezones
# span less than a day), consumption reads (heron.events.consumption) a year and its month.
COUNT_DAYS = 400


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def contract_day(t: datetime, timezone: str) -> date:
    """The contract day an instant falls in: the date in the contract's timezone."""
    try:
        return t.astimezone(_zone(timezone)).date()
    except (KeyError, ValueError):
        return t.date()


def _event(kind: str, now: datetime, details: dict[str, Any], **subject: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "device_id": subject.get("device_id"),
        "station_id": subject.get("station_id"),
        "time": now,
        "day": subject.get("day"),
        "details": json.dumps(details),
    }


def _write_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert events; an OVERUSAGE already written for its (device, day) is skipped."""
    table = cast(Table, Event.__table__)
    for start in range(0, len(rows), _CHUNK):
        stmt = upsert_insert(session, table).values(rows[start : start + _CHUNK])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["device_id", "kind", "day"]))


# -- in the ingest's transaction --------------------------------------------------------------------
# Its two queries over the batch's devices, at the driver (heron.db.driver.rows_in).
_LIMITS = (
    "SELECT d.id, c.id, c.max_uplink_frames, c.timezone, l.since FROM devices d"
    " LEFT JOIN contracts c ON c.id = d.contract_id LEFT JOIN device_losses l ON l.device_id = d.id"
    " WHERE d.id IN ({})"
)
_OVER_LIMIT = (  # `{days}`: a mark per day
    "SELECT u.device_id, u.day, u.uplinks FROM uplink_counts u JOIN devices d ON d.id = u.device_id"
    " JOIN contracts c ON c.id = d.contract_id"
    " WHERE u.day IN ({days}) AND u.uplinks > c.max_uplink_frames AND u.device_id IN ({})"
)


def after_uplinks(session: Session, messages: Sequence[StoredMessage], now: datetime) -> None:
    """Count the new messages against the contracts' daily limits and close open communication
    losses, in the transaction that stored the messages."""
    if not messages:
        return
    ids = sorted({m.device_id for m in messages})
    limits: dict[int, tuple[int, int, str]] = {}
    lost: list[int] = []
    for device_id, contract_id, max_uplinks, timezone, lost_since in rows_in(session, _LIMITS, ids):
        if contract_id is not None:
            limits[device_id] = (contract_id, max_uplinks, timezone)
        if lost_since is not None:
            lost.append(device_id)

    added: Counter[tuple[int, date]] = Counter()
    for m in messages:
        found = limits.get(m.device_id)
        if found is not None and m.frame_type == "DATA":
            added[(m.device_id, contract_day(m.time, found[2]))] += 1
    events = _count_uplinks(session, added, limits, now)
    if lost:
        table = cast(Table, DeviceLoss.__table__)
        closed = session.execute(
            delete(table).where(table.c.device_id.in_(lost)).returning(table.c.device_id, table.c.since)
        ).all()
        events += [_event(COMMUNICATION_RESTORED, now, {"lostSince": _ms(since)}, device_id=d) for d, since in closed]
    if events:
        _write_events(session, events)


def _count_uplinks(
    session: Session, added: Counter[tuple[int, date]], limits: dict[int, tuple[int, int, str]], now: datetime
) -> list[dict[str, Any]]:
    """Add to the per-day counters (one upsert), then read back the counters now past their
    device's limit (few: one device past it shows up once per message until the day ends); an
    OVERUSAGE event for each device this batch took past its limit."""
    if not added:
        return []
    table = cast(Table, UplinkCount.__table__)
    rows = [{"device_id": d, "day": day, "uplinks": n} for (d, day), n in sorted(added.items())]
    add_counts(session, table, rows, keys=("device_id", "day"), counts=("uplinks",))
    days = sorted({day for _, day in added})
    day_param = bind_processor(session, table.c.day)
    day_of = result_processor(session, table.c.day)
    over = rows_in(
        session,
        _OVER_LIMIT.format("{}", mark="{mark}", days=", ".join(["{mark}"] * len(days))),
        sorted({d for d, _ in added}),
        params=[day_param(day) for day in days],
    )
    events = []
    for device_id, stored_day, total in over:
        day = day_of(stored_day)
        n = added.get((device_id, day))
        if n is None or device_id not in limits:
            continue
        contract_id, limit, _tz = limits[device_id]
        if total - n <= limit < total:  # crossed in this batch
            details = {"day": day.isoformat(), "uplinks": total, "maxUplinkFrames": limit}
            details["contractId"] = str(contract_id)
            events.append(_event(OVERUSAGE, now, details, device_id=device_id, day=day))
    return events


def count_downlink(session: Session, device_id: int, now: datetime) -> None:
    """One downlink the device's station acknowledged, counted on its contract day beside the
    uplinks (consumption): one upsert, in the acknowledgment's transaction."""
    timezone = session.scalar(
        select(Contract.timezone).join(Device, Device.contract_id == Contract.id).where(Device.id == device_id)
    )
    day = contract_day(now, timezone or "UTC")
    row = {"device_id": device_id, "day": day, "uplinks": 0, "downlinks": 1}
    add_counts(session, cast(Table, UplinkCount.__table__), [row], keys=("device_id", "day"), counts=("downlinks",))


# -- periodic upkeep --------------------------------------------------------------------------------
def watch_keep_alive(session: Session, now: datetime, limit: int = BATCH) -> int:
    """Devices silent for longer than their device type's keep-alive: com_state KO, one
    COMMUNICATION_LOST event and the ERROR callbacks. Returns how many were lost."""
    periods = list(session.scalars(select(DeviceType.keep_alive).where(DeviceType.keep_alive > 0).distinct()))
    if not periods:
        return 0
    silent = or_(*(and_(DeviceType.keep_alive == p, Device.last_seen_at < now - timedelta(seconds=p)) for p in periods))
    due = session.execute(
        select(Device.id, Device.identifier, Device.device_type_id, Device.last_seen_at, DeviceType.keep_alive)
        .join(DeviceType, DeviceType.id == Device.device_type_id)
        .where(
            Device.last_seen_at < now - timedelta(seconds=min(periods)),  # the last_seen_at index's range
            Device.com_state != COM_KO,
            Device.lifecycle != DELETED,
            Device.token_state == TOKEN_OK,
            silent,
        )
        .order_by(Device.last_seen_at)
        .limit(limit)
        .with_for_update(of=Device, skip_locked=True)
    ).all()
    if not due:
        return 0
    ids = [r.id for r in due]
    for start in range(0, len(ids), _CHUNK):
        session.execute(
            update(Device)
            .where(Device.id.in_(ids[start : start + _CHUNK]))
            .values(com_state=COM_KO)
            .execution_options(synchronize_session=False)
        )
    losses = cast(Table, DeviceLoss.__table__)
    session.execute(
        upsert_insert(session, losses).on_conflict_do_nothing(index_elements=["device_id"]),
        [{"device_id": r.id, "since": now} for r in due],
    )
    _write_events(
        session,
        [
            _event(
                COMMUNICATION_LOST, now, {"lastSeen": _ms(r.last_seen_at), "keepAlive": r.keep_alive}, device_id=r.id
            )
            for r in due
        ],
    )
    _enqueue_errors(session, due, now)
    return len(due)


def _enqueue_errors(session: Session, lost: Sequence[Any], now: datetime) -> int:
    """The ERROR callback deliveries of lost devices, as `enqueue.enqueue_event` writes them, with
    one query and one insert for the whole batch instead of two statements per device."""
    type_ids = sorted({r.device_type_id for r in lost})
    hooks: dict[int, list[int]] = {}
    for cb_id, dt_id in session.execute(
        select(Callback.id, Callback.device_type_id).where(
            Callback.device_type_id.in_(type_ids),
            Callback.enabled.is_(True),
            Callback.callback_type == "ERROR",
            Callback.callback_subtype.is_(None),
        )
    ):
        hooks.setdefault(dt_id, []).append(cb_id)
    rows = []
    for r in lost:
        variables = {
            "device": r.identifier,
            "time": int(now.timestamp()),
            "info": f"No message received since {r.last_seen_at:%Y-%m-%d %H:%M:%S}",
            "severity": "ERROR",
        }
        for cb_id in hooks.get(r.device_type_id, ()):
            rows.append(
                {
                    "key": new_key(),
                    "callback_id": cb_id,
                    "device_type_id": r.device_type_id,
                    "device_id": r.id,
                    "message_id": None,
                    "event": "ERROR",
                    "variables": json.dumps(variables),
                    "state": PENDING,
                    "attempts": 0,
                    "next_at": now,
                    "created_at": now,
                }
            )
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def watch_stations(session: Session, now: datetime, offline_after: timedelta, limit: int = BATCH) -> tuple[int, int]:
    """Close the outages of stations the ingest has heard again (STATION_ONLINE), then mark
    ONLINE stations silent longer than `offline_after` OFFLINE (STATION_OFFLINE); (back, offline)."""
    back = session.execute(
        select(StationOutage.station_id, StationOutage.since)
        .join(BaseStation, BaseStation.id == StationOutage.station_id)
        .where(BaseStation.state == "ONLINE")
        .limit(limit)
        .with_for_update(of=StationOutage, skip_locked=True)
    ).all()
    events = [_event(STATION_ONLINE, now, {"offlineSince": _ms(since)}, station_id=s) for s, since in back]
    if back:
        session.execute(delete(StationOutage).where(StationOutage.station_id.in_([s for s, _ in back])))
    due = session.execute(
        select(BaseStation.id, BaseStation.last_seen_at)
        .where(BaseStation.state == "ONLINE", BaseStation.last_seen_at < now - offline_after)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if due:
        session.execute(
            update(BaseStation)
            .where(BaseStation.id.in_([s for s, _ in due]))
            .values(state="OFFLINE")
            .execution_options(synchronize_session=False)
        )
        outages = cast(Table, StationOutage.__table__)
        session.execute(
            upsert_insert(session, outages).on_conflict_do_nothing(index_elements=["station_id"]),
            [{"station_id": s, "since": now} for s, _ in due],
        )
        events += [_event(STATION_OFFLINE, now, {"lastSeen": _ms(seen)}, station_id=s) for s, seen in due]
    if events:
        _write_events(session, events)
    return len(back), len(due)


def tokens_expired(session: Session, ended: Sequence[tuple[int, int | None]], now: datetime) -> None:
    """TOKEN_EXPIRED for the (device id, contract id) whose token was given back at its end."""
    _write_events(
        session,
        [_event(TOKEN_EXPIRED, now, {"contractId": str(c) if c else None}, device_id=d) for d, c in ended],
    )


def prune_counts(session: Session, now: datetime) -> int:
    """Drop the per-day counters older than `COUNT_DAYS`."""
    result = session.execute(delete(UplinkCount).where(UplinkCount.day < (now - timedelta(days=COUNT_DAYS)).date()))
    return int(getattr(result, "rowcount", 0) or 0)


def periodic_tasks(every: float, station_offline: timedelta) -> list[Periodic]:
    """The events' upkeep, for each process's job runner."""
    return [
        Periodic("events.keep_alive", every, lambda session, now: watch_keep_alive(session, now)),
        Periodic("events.stations", every, lambda session, now: watch_stations(session, now, station_offline)),
        Periodic("events.prune_counts", every, lambda session, now: prune_counts(session, now)),
    ]


# -- reading ----------------------------------------------------------------------------------------


@dataclass
class EventView:
    event: Event
    subject_id: str  # the device's or the station's identifier
    subject_name: str

    @property
    def details(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.event.details) if self.event.details else {}
        return loaded


def device_events(session: Session, actor: Actor, ref: str, window: TimeWindow) -> TimePage:
    """A device's events, newest first; readable with message:read on the device's group."""
    d = devices.get_traffic(session, actor, ref).device
    return _page(session, Event.device_id == d.id, (d.identifier, d.name), window)


def station_events(session: Session, actor: Actor, identifier: str, window: TimeWindow) -> TimePage:
    """A base station's events, newest first; readable by whoever reads the station."""
    from heron.network.sigfox import stations  # stations imports the ingest side; keep it lazy

    s = stations.get(session, actor, identifier).station
    return _page(session, Event.station_id == s.id, (s.identifier, s.name), window)


def _page(session: Session, scope: ColumnElement[bool], subject: tuple[str, str], window: TimeWindow) -> TimePage:
    """A page of `EventView`s, by the time-window page rule of heron.db.keyset."""
    page = newest_first_page(
        session, select(Event).where(scope), Event.time, Event.id, window, lambda row: (row[0].time, row[0].id)
    )
    page.rows = [EventView(row[0], *subject) for row in page.rows]
    return page
