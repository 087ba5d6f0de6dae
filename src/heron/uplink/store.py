"""Storing what stations heard: receptions become messages, deduplicated, in one transaction
per batch (the ingest's group commit hands several requests' frames over at once).

Rules (docs/ARCHITECTURE.md, "Message pipeline"):
- Receptions are keyed by (device, sequence number). The first one makes the message; those
  arriving within the dedup window join it and are in its DATA callbacks; later ones, up to
  the dedup horizon, attach as `late` (DATA_ADVANCED). A station reporting the same frame
  twice counts once. The window and the horizon run on arrival (the writer's clock, the
  message's `arrived_at`), not on the stations' clocks.
- A message's `time` is when the network heard the frame: the earliest of its receptions'
  station times, each bounded by that reception's arrival (a station's clock cannot place a
  frame in the future); a later reception with an earlier station time lowers it.
- A frame of a device Heron does not deliver for (unknown, deleted, not holding a valid token,
  or suspended) is not stored: it is counted per station, device and hour.
- A station delivers only the devices in the subtree of the group that owns it (a Sigfox cloud
  bridge's station: only its device type's). A frame of any other device is counted exactly as
  a frame of an unknown id (reason UNKNOWN, under the id as reported), whatever that device's
  state: the station's owner cannot tell another tenant's device from an id nobody holds.
- The sequence number wraps at the network's modulo (Sigfox: 12 bits). A forward step of less
  than half of it (Sigfox: 1-2047) advances the device's number and records the gap as lost
  frames; any other step (Sigfox: 0 or 2048-4095 ahead) is an out-of-order frame: stored, no
  loss counted, the device's number kept. A frame repeating the
  device's last number after the horizon, within `STALE_REPEAT`, is a late copy and dropped.
- The device's last seen time, communication status and sequence number are updated in the
  same transaction, with one statement per batch; so are the stations' traffic counters.

On PostgreSQL the devices a batch names are locked (`FOR UPDATE`, in id order) for the
transaction, so two processes never make two messages of one frame; SQLite's single writer
does the same.

A writer may keep a `RecentIndex`: what it stored lately, so that dedup mostly needs no query.
It is never trusted blindly. A device's cached messages are used only while the device row
still holds the last seen time and sequence number this writer wrote (any writer making a
message of the device changes them, in the same transaction); otherwise, and for devices it
does not know, the database is read as before. A cached message's stations are used only
while its `receptions` count in the database is the one cached (any writer adding a reception
updates it). So several processes (or a restart) stay exactly as correct as without the index.
The caller clears it when a transaction fails (its changes are applied as the batch goes)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain, islice
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from heron.db.bulk_insert import insert_rows
from heron.db.driver import bind_processor, insert_ids, result_processor, rows_in, update_many
from heron.db.upsert import add_counts
from heron.geolocation import DECLARED_RADIUS_M, SOURCE_DECLARED, SOURCE_NETWORK, Fix, Reading, Stations, locate_heard
from heron.messages.decoding import decode_payload
from heron.messages.models import Message, Reception
from heron.radio import Network
from heron.registry.bulk import DELETED, TOKEN_OK
from heron.registry.models import Device
from heron.stations.models import BaseStation, StationTraffic, UndeliveredFrames

STALE_REPEAT = timedelta(hours=1)
# The batch's hot queries, at the driver (heron.db.driver.rows_in). Devices in identifier order:
# the order their rows are locked in on PostgreSQL, the same for every writer.
_DEVICES = (
    "SELECT d.id, d.identifier, d.device_type_id, d.lifecycle, d.token_state, d.sequence_number,"
    " d.last_seen_at, d.suspended, d.lat, d.lng, d.com_state, g.path"
    " FROM devices d JOIN groups g ON g.id = d.group_id"
    " WHERE d.network = {mark} AND d.identifier IN ({}) ORDER BY d.identifier"
)
_STATIONS = (
    "SELECT s.id, s.radio_zone, s.lat, s.lng, s.antenna_gain, g.path, s.device_type_id"
    " FROM base_stations s JOIN groups g ON g.id = s.group_id WHERE s.id IN ({})"
)
_RECENT = (
    "SELECT id, device_id, seq_number, arrived_at, time, loc_source FROM messages"
    " WHERE arrived_at >= {mark} AND device_id IN ({})"
)
_STATIONS_HEARD = (
    "SELECT r.message_id, r.station_id, r.rssi, s.radio_zone"
    " FROM receptions r JOIN base_stations s ON s.id = r.station_id WHERE r.message_id IN ({})"
)
COM_OK = 1  # api.md comState
UNKNOWN, NO_TOKEN, SUSPENDED = "UNKNOWN", "NO_TOKEN", "SUSPENDED"
_NOWHERE: tuple[str, int | None] = ("~", None)  # the scope of a station gone meanwhile: no group path starts with it


class HeardFrame(NamedTuple):
    """One station's reception of one frame, validated at the edge. A named tuple, immutable:
    the ingest makes one per reception, and a frozen dataclass cost twice as much to build."""

    station_id: int
    device: str  # the device's identifier as its network names it (Sigfox: the normalized id)
    seq_number: int
    frame_type: str  # DATA, KEEPALIVE, REPEATER
    data: str  # lower-case hex, 0-24 digits
    ack_required: bool
    time: datetime | None  # as the station reports it; None when it does not (its arrival is taken)
    rssi: float | None = None
    snr: float | None = None
    freq: float | None = None
    rep: int = 1
    battery: float | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    device_id: int
    device_type_id: int
    seq_number: int
    ack_required: bool
    frame_type: str
    time: datetime  # when the network heard it (the message's `time`)
    arrived_at: datetime  # when it reached Heron: the dedup window and horizon run from it


@dataclass
class StoreResult:
    frames: int = 0
    new: list[StoredMessage] = field(default_factory=list)
    joined: int = 0  # receptions added to a message within its dedup window
    late: int = 0  # receptions added after it
    duplicates: int = 0  # repeated reports dropped
    undelivered: int = 0

    def add(self, other: StoreResult) -> None:
        self.frames += other.frames
        self.new.extend(other.new)
        self.joined += other.joined
        self.late += other.late
        self.duplicates += other.duplicates
        self.undelivered += other.undelivered


@dataclass
class _Device:
    id: int
    device_type_id: int
    seq: int | None
    last_seen: datetime | None
    changed: bool = False
    declared: tuple[float, float] | None = None  # the device's own position (lat, lng), when set
    com_ok: bool = False  # its com_state is OK already: not written again (that rewrites an index entry)


@dataclass(slots=True)
class _Open:
    """A message of this batch or a recent one, as dedup sees it. Slotted: a RecentIndex holds
    one per message of the horizon (docs/ARCHITECTURE.md, "Memory of the uplink writer")."""

    id: int | None
    arrived: datetime  # the message's arrived_at: late or not, within the horizon or not
    time: datetime  # the message's time (the earliest station time heard)
    stations: dict[int, tuple[float | None, str]]  # station -> (rssi, radio zone)
    dirty: bool = False
    moved: bool = False  # its time was lowered: written apart (writing `time` rewrites index entries)
    pinned: bool = False  # its location is the device's declared one: receptions do not move it

    def quality(self, network: Network) -> tuple[float | None, int]:
        """Best RSSI and LQI over every reception; the zone is the best reception's station's."""
        heard = [(r, z) for r, z in self.stations.values() if r is not None]
        if not heard:
            return None, network.link_quality(None, len(self.stations), "")
        best, zone = max(heard)
        return best, network.link_quality(best, len(self.stations), zone)


@dataclass(slots=True)
class _Known:
    """A device as a writer last left it: the row's last seen time and sequence number after its
    write, and every message of the device younger than the horizon by sequence number."""

    last_seen: datetime | None
    seq: int | None
    messages: dict[int, _Open]
    touched: datetime


class RecentIndex:
    """One writer's memory of recent messages (see the module docstring for when it is used).
    `devices` is in the order they were last heard, so what ages out, or has to go when more
    than `max_devices` were heard within the horizon, is at its front."""

    SWEEP_EVERY = 200  # batches

    def __init__(self, max_devices: int = 1_000_000) -> None:
        self.devices: dict[int, _Known] = {}
        self.max_devices = max_devices
        self._batches = 0

    def clear(self) -> None:
        self.devices.clear()

    def _sweep(self, since: datetime) -> None:
        self._batches += 1
        if self._batches % self.SWEEP_EVERY and len(self.devices) <= self.max_devices:
            return
        aged = []
        for device_id, known in self.devices.items():
            if known.touched >= since:
                break
            aged.append(device_id)
        # Over the bound with devices heard within the horizon: the least recently heard go too
        # (a tenth more, not to come back at every batch); heard again, they are read afresh.
        over = len(self.devices) - len(aged) - self.max_devices
        if over > 0:
            aged = list(islice(self.devices, len(aged) + over + self.max_devices // 10))
        for device_id in aged:
            del self.devices[device_id]


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def store_frames(
    session: Session,
    frames: Sequence[HeardFrame],
    now: datetime,
    *,
    network: Network,
    dedup_window: timedelta,
    horizon: timedelta,
    index: RecentIndex | None = None,
) -> StoreResult:
    result = StoreResult(frames=len(frames))
    if not frames:
        return result
    station_ids = sorted({f.station_id for f in frames})
    zones: dict[int, str] = {}
    links: dict[int, Reading] = {}  # each station's position and gain, for computedLocation
    # What each station may deliver: its group's subtree (or its one device type's: a bridge's).
    scopes: dict[int, tuple[str, int | None]] = {}
    for sid, zone, lat, lng, gain, path, bound_type in rows_in(session, _STATIONS, station_ids):
        zones[sid] = zone
        links[sid] = _link(network, zone, lat, lng, gain)
        scopes[sid] = (path, bound_type)

    last_seen_of = result_processor(session, Device.__table__.c.last_seen_at)
    found = rows_in(session, _DEVICES, sorted({f.device for f in frames}), params=(network.name,), lock="d")
    deliverable: dict[str, _Device] = {}
    refused: dict[str, str] = {}
    owners: dict[str, tuple[str, int]] = {}  # device id -> (its group's path, its device type)
    for d_id, ident, dt_id, lifecycle, token_state, seq, last_seen, suspended, lat, lng, com, path in found:
        owners[ident] = (path, dt_id)
        if lifecycle == DELETED:
            refused[ident] = UNKNOWN
        elif token_state != TOKEN_OK:
            refused[ident] = NO_TOKEN
        elif suspended:  # /devices/bulk/suspend: counted as undelivered until resumed
            refused[ident] = SUSPENDED
        else:
            declared = (lat, lng) if lat is not None and lng is not None else None
            deliverable[ident] = _Device(
                d_id, dt_id, seq, last_seen_of(last_seen), declared=declared, com_ok=com == COM_OK
            )

    traffic: Counter[int] = Counter()
    undelivered: Counter[tuple[int, str, str]] = Counter()
    groups: dict[tuple[int, int], list[HeardFrame]] = defaultdict(list)
    devices: dict[str, _Device] = {}  # those with a frame delivered in this batch
    for f in frames:
        traffic[f.station_id] += 1
        owner = owners.get(f.device)
        scope, only_type = scopes.get(f.station_id, _NOWHERE)
        if owner is None or not owner[0].startswith(scope) or (only_type is not None and owner[1] != only_type):
            undelivered[(f.station_id, f.device, UNKNOWN)] += 1  # not the station's to know about
            continue
        dev = deliverable.get(f.device)
        if dev is None:
            undelivered[(f.station_id, f.device, refused[f.device])] += 1
            continue
        devices[f.device] = dev
        groups[(dev.id, f.seq_number)].append(f)
    result.undelivered = sum(undelivered.values())

    since = now - horizon
    if index is None:
        recent = _recent(session, [d.id for d in devices.values()], since)
    else:
        recent, unknown = _recent_indexed(session, index, devices, set(groups), since)
    payloads = _payload_settings(session, {d.device_type_id for d in devices.values()})
    by_id = {d.id: d for d in devices.values()}
    new_rows: list[dict[str, Any]] = []
    new_receptions: list[list[dict[str, Any]]] = []
    new_opened: list[_Open] = []
    new_keys: list[tuple[int, int]] = []
    added: list[dict[str, Any]] = []  # receptions of already stored messages
    wanted: list[dict[int, HeardFrame] | tuple[float, float]] = []  # per new row: what locates it
    for (device_id, seq), heard in groups.items():
        dev = by_id[device_id]
        first = heard[0]
        known = recent.get((device_id, seq))
        if known is not None:
            late = now - known.arrived > dedup_window
            for f in heard:
                if f.station_id in known.stations:
                    result.duplicates += 1
                    continue
                known.stations[f.station_id] = (f.rssi, zones.get(f.station_id, "RC1"))
                known.dirty = True
                if f.time is not None and f.time < known.time:  # heard earlier than the message says
                    known.time, known.moved = f.time, True
                added.append(_reception(f, known.id, late, now))
                result.late += late
                result.joined += not late
            continue
        if dev.seq == seq and dev.last_seen is not None and now - dev.last_seen < STALE_REPEAT:
            result.duplicates += len(heard)
            continue
        lost, advance = 0, True
        if dev.seq is not None:
            step = (seq - dev.seq) % network.sequence_modulo
            if 0 < step < network.sequence_modulo // 2:
                lost = step - 1
            else:
                advance = False
        best: dict[int, HeardFrame] = {}
        for f in heard:
            if f.station_id in best:
                result.duplicates += 1
                if (f.rssi or -1e9) > (best[f.station_id].rssi or -1e9):
                    best[f.station_id] = f
            else:
                best[f.station_id] = f
        heard_at = now  # the earliest station time, bounded by the arrival
        for f in best.values():
            if f.time is not None and f.time < heard_at:
                heard_at = f.time
        opened = _Open(None, now, heard_at, {s: (f.rssi, zones.get(s, "RC1")) for s, f in best.items()})
        best_rssi, quality = opened.quality(network)
        service = None
        if first.frame_type != "DATA" and (first.battery is not None or first.temperature is not None):
            service = json.dumps({"battery": first.battery, "temperature": first.temperature})
        new_rows.append(
            {
                "device_id": device_id,
                "device_type_id": dev.device_type_id,
                "time": heard_at,
                "arrived_at": now,
                "seq_number": seq,
                "frame_type": first.frame_type,
                "data": first.data,
                "ack_required": any(f.ack_required for f in heard),
                "nb_frames": max(f.rep for f in heard),
                "receptions": len(best),
                "best_rssi": best_rssi,
                "lqi": quality,
                "lost": lost,
                "decoded": _decoded(payloads.get(dev.device_type_id), first) if first.frame_type == "DATA" else None,
                "service": service,
            }
        )
        new_receptions.append([_reception(f, None, False, now) for f in best.values()])
        if dev.declared is None:
            wanted.append(best)
        else:  # a static device: its declared position wins over the network's estimate
            wanted.append(dev.declared)
            opened.pinned = True
        recent[(device_id, seq)] = opened
        new_opened.append(opened)
        new_keys.append((device_id, seq))
        if advance:
            dev.seq = seq
        dev.last_seen, dev.changed = now, True

    _locate(new_rows, wanted, links)
    _write_messages(session, new_rows, new_receptions, new_opened, result)
    if added:
        _insert_receptions(session, added)
        _refresh(session, network, [m for m in recent.values() if m.dirty and m.id is not None], links)
    _touch_devices(session, [d for d in devices.values() if d.changed])
    _count_traffic(session, traffic, undelivered, now)
    if index is not None:
        _remember(index, devices, recent, unknown, list(zip(new_keys, new_opened, strict=True)), now)
        index._sweep(since)
    return result


def _recent_indexed(
    session: Session, index: RecentIndex, devices: dict[str, _Device], keys: set[tuple[int, int]], since: datetime
) -> tuple[dict[tuple[int, int], _Open], set[int]]:
    """`_recent` through the index: cached devices whose row is as this writer left it, the
    database for the others (returned: the index learns them afresh); cached messages this
    batch touches are checked against their reception count in the database (another process
    may have added receptions)."""
    recent: dict[tuple[int, int], _Open] = {}
    unknown: set[int] = set()
    for dev in devices.values():
        known = index.devices.get(dev.id)
        if known is None or known.last_seen != dev.last_seen or known.seq != dev.seq:
            unknown.add(dev.id)
            continue
        old = [seq for seq, opened in known.messages.items() if opened.arrived < since]
        for seq in old:
            del known.messages[seq]
        for seq, opened in known.messages.items():
            recent[(dev.id, seq)] = opened
    check: dict[int, tuple[int, int]] = {}
    for key in keys:
        cached = recent.get(key)
        if cached is not None and cached.id is not None:
            check[cached.id] = key
    if check:
        counts = dict(rows_in(session, "SELECT id, receptions FROM messages WHERE id IN ({})", list(check)))
        stale = []
        for message_id, key in check.items():
            count = counts.get(message_id)
            if count is None:
                del recent[key]  # deleted meanwhile
                del index.devices[key[0]].messages[key[1]]
            elif count != len(recent[key].stations):
                stale.append(message_id)
        if stale:
            by_message: dict[int | None, _Open] = {m: recent[check[m]] for m in stale}
            for o in by_message.values():
                o.stations = {}
            _load_stations(session, by_message)
            # Another writer's reception may have lowered the time too.
            for message_id, heard_at in session.execute(select(Message.id, Message.time).where(Message.id.in_(stale))):
                by_message[message_id].time = heard_at
    if unknown:
        recent.update(_recent(session, sorted(unknown), since))
    return recent, unknown


def _remember(
    index: RecentIndex,
    devices: dict[str, _Device],
    recent: dict[tuple[int, int], _Open],
    unknown: set[int],
    new: list[tuple[tuple[int, int], _Open]],
    now: datetime,
) -> None:
    """After the batch: devices read from the database are learnt with their recent messages;
    the others get their new state and new messages."""
    learnt: dict[int, dict[int, _Open]] = {d: {} for d in unknown}
    if unknown:
        for (device_id, seq), opened in recent.items():
            if device_id in learnt:
                learnt[device_id][seq] = opened
    for dev in devices.values():  # each moves to the end: the index is in the order last heard
        if dev.id in learnt:
            index.devices.pop(dev.id, None)
            index.devices[dev.id] = _Known(dev.last_seen, dev.seq, learnt[dev.id], now)
        else:
            known = index.devices[dev.id] = index.devices.pop(dev.id)
            known.last_seen, known.seq, known.touched = dev.last_seen, dev.seq, now
    for (device_id, seq), opened in new:
        index.devices[device_id].messages[seq] = opened


def _payload_settings(session: Session, device_type_ids: set[int]) -> dict[int, tuple[int, str | None]]:
    if not device_type_ids:
        return {}
    rows = rows_in(
        session, "SELECT id, payload_type, payload_config FROM device_types WHERE id IN ({})", sorted(device_type_ids)
    )
    return {dt_id: (kind, config) for dt_id, kind, config in rows}


def _decoded(settings: tuple[int, str | None] | None, f: HeardFrame) -> str | None:
    if settings is None:
        return None
    fields = decode_payload(settings[0], settings[1], f.data)
    return json.dumps(fields) if fields is not None else None


def _reception(f: HeardFrame, message_id: int | None, late: bool, now: datetime) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "station_id": f.station_id,
        "time": now if f.time is None else f.time,
        "rssi": f.rssi,
        "snr": f.snr,
        "freq": f.freq,
        "rep": f.rep,
        "late": late,
    }


def _recent(session: Session, device_ids: list[int], since: datetime) -> dict[tuple[int, int], _Open]:
    """Messages of these devices younger than the horizon, with the stations that heard them."""
    if not device_ids:
        return {}
    since_param = bind_processor(session, Message.__table__.c.arrived_at)(since)
    rows = rows_in(session, _RECENT, device_ids, params=(since_param,))
    if not rows:
        return {}
    time_of = result_processor(session, Message.__table__.c.time)
    out = {(d, s): _Open(m, time_of(a), time_of(t), {}, pinned=src == SOURCE_DECLARED) for m, d, s, a, t, src in rows}
    _load_stations(session, {o.id: o for o in out.values()})
    return out


def _load_stations(session: Session, by_message: dict[int | None, _Open]) -> None:
    for message_id, station_id, rssi, zone in rows_in(session, _STATIONS_HEARD, list(by_message)):
        by_message[message_id].stations[station_id] = (rssi, zone)


def _write_messages(
    session: Session,
    rows: list[dict[str, Any]],
    receptions: list[list[dict[str, Any]]],
    opened: list[_Open],
    result: StoreResult,
) -> None:
    if not rows:
        return
    ids = insert_ids(session, cast(Table, Message.__table__), rows)
    flat = []
    for message_id, row, heard, o in zip(ids, rows, receptions, opened, strict=True):
        o.id = message_id
        result.new.append(
            StoredMessage(
                message_id,
                row["device_id"],
                row["device_type_id"],
                row["seq_number"],
                row["ack_required"],
                row["frame_type"],
                row["time"],
                row["arrived_at"],
            )
        )
        for r in heard:
            r["message_id"] = message_id
            flat.append(r)
    _insert_receptions(session, flat)


def _insert_receptions(session: Session, rows: list[dict[str, Any]]) -> None:
    insert_rows(session, cast(Table, Reception.__table__), rows)


def _refresh(session: Session, network: Network, opened: list[_Open], links: dict[int, Reading]) -> None:
    """Reception count, best RSSI, LQI, computed location and (when lowered) time of stored
    messages that gained receptions."""
    if not opened:
        return
    fixes = _relocate(session, network, [o for o in opened if not o.pinned], links)
    rows: list[tuple[Any, ...]] = []
    pinned: list[tuple[Any, ...]] = []
    for o in opened:
        best, quality = o.quality(network)
        (pinned if o.pinned else rows).append((len(o.stations), best, quality, *fixes.get(o.id, ()), o.id))
        o.dirty = False  # it may live on in a RecentIndex
    _write_times(session, opened)
    head = "UPDATE messages SET receptions = {0}, best_rssi = {0}, lqi = {0}"
    location = ", loc_lat = {0}, loc_lng = {0}, loc_radius = {0}, loc_source = {0}"
    # A static device's message keeps its declared location.
    for sql, values in ((head + location, rows), (head, pinned)):
        if values:
            update_many(session, sql + " WHERE id = {0}", values)


def _write_times(session: Session, opened: list[_Open]) -> None:
    """The time of the messages a reception heard earlier has lowered, alone: most keep theirs,
    and writing `time` rewrites its entries in the lists' indexes."""
    moved = [o for o in opened if o.moved]
    if not moved:
        return
    process = bind_processor(session, cast(Table, Message.__table__).c.time)
    update_many(session, "UPDATE messages SET time = {0} WHERE id = {0}", [(process(o.time), o.id) for o in moved])
    for o in moved:
        o.moved = False


def _touch_devices(session: Session, changed: list[_Device]) -> None:
    """Last seen time and sequence number; com_state OK for those not OK yet. Writing a column
    rewrites its index entries even with the same value: com_state was most of the batch's
    written pages (measured: 1,600 -> 1,185 WAL pages per 340-message batch, 100,000 devices)."""
    if not changed:
        return
    process = bind_processor(session, cast(Table, Device.__table__).c.last_seen_at)
    seen: dict[datetime, Any] = {}  # a batch shares its times: each is processed once
    rows: list[tuple[Any, ...]] = []
    restored: list[tuple[Any, ...]] = []
    for d in changed:
        t = d.last_seen
        if t is not None:
            if t not in seen:
                seen[t] = process(t)
            t = seen[t]
        if d.com_ok:
            rows.append((t, d.seq, d.id))
        else:
            restored.append((t, d.seq, COM_OK, d.id))
    update_many(session, "UPDATE devices SET last_seen_at = {0}, sequence_number = {0} WHERE id = {0}", rows)
    update_many(
        session,
        "UPDATE devices SET last_seen_at = {0}, sequence_number = {0}, com_state = {0} WHERE id = {0}",
        restored,
    )


def _count_traffic(
    session: Session,
    traffic: Counter[int],
    undelivered: Counter[tuple[int, str, str]],
    now: datetime,
) -> None:
    hour = _hour(now)
    per_station: Counter[int] = Counter()
    for (station_id, _device, _reason), n in undelivered.items():
        per_station[station_id] += n
    add_counts(
        session,
        cast(Table, StationTraffic.__table__),
        [
            {"station_id": s, "hour": hour, "frames": n, "undelivered": per_station.get(s, 0)}
            for s, n in sorted(traffic.items())
        ],
        keys=("station_id", "hour"),
        counts=("frames", "undelivered"),
    )
    add_counts(
        session,
        cast(Table, UndeliveredFrames.__table__),
        [
            {"station_id": s, "device": d, "hour": hour, "reason": r, "frames": n}
            for (s, d, r), n in sorted(undelivered.items())
        ],
        keys=("station_id", "device", "hour"),
        counts=("frames",),
        replace=("reason",),
    )
    stamp = bind_processor(session, BaseStation.__table__.c.last_seen_at)(now)
    update_many(
        session,
        "UPDATE base_stations SET last_seen_at = {0}, state = 'ONLINE' WHERE id = {0}",
        [(stamp, station_id) for station_id in sorted(traffic)],
    )


# -- computedLocation -----------------------------------------------------------------------------
_NO_FIX = (None, None, None, None)


def _link(network: Network, zone: str, lat: float | None, lng: float | None, gain: float | None) -> Reading:
    """What the estimator needs of a station (its `rssi` is filled per reception)."""
    return Reading(lat, lng, None, network.device_power_dbm(zone), gain)


def _columns(fix: Fix | None) -> tuple[float | None, float | None, int | None, int | None]:
    return _NO_FIX if fix is None else (fix.lat, fix.lng, fix.radius, SOURCE_NETWORK)


def _locate(
    rows: list[dict[str, Any]], wanted: list[dict[int, HeardFrame] | tuple[float, float]], links: dict[int, Reading]
) -> None:
    """The new rows' loc_* columns: the network's estimate (one vectorised call for the batch),
    or the device's declared position."""
    heard = [w for w in wanted if isinstance(w, dict)]
    fixes = iter(
        locate_heard(
            [len(h) for h in heard],
            list(chain.from_iterable(heard)),
            [f.rssi for h in heard for f in h.values()],
            Stations(links),
        )
    )
    for row, w in zip(rows, wanted, strict=True):
        if isinstance(w, dict):
            lat, lng, radius, source = _columns(next(fixes))
        else:
            (lat, lng), radius, source = w, DECLARED_RADIUS_M, SOURCE_DECLARED
        row.update(loc_lat=lat, loc_lng=lng, loc_radius=radius, loc_source=source)


def _relocate(
    session: Session, network: Network, opened: list[_Open], links: dict[int, Reading]
) -> dict[int | None, tuple[float | None, float | None, int | None, int | None]]:
    """The loc_* values of stored messages from all their receptions (late ones refine it), by
    message id. Stations heard in an earlier batch are read here."""
    if not opened:
        return {}
    missing = sorted(set(chain.from_iterable(o.stations for o in opened)) - links.keys())
    if missing:
        for sid, zone, lat, lng, gain in rows_in(
            session, "SELECT id, radio_zone, lat, lng, antenna_gain FROM base_stations WHERE id IN ({})", missing
        ):
            links[sid] = _link(network, zone, lat, lng, gain)
    fixes = locate_heard(
        [len(o.stations) for o in opened],
        list(chain.from_iterable(o.stations for o in opened)),
        [rssi for o in opened for rssi, _zone in o.stations.values()],
        Stations(links),
    )
    return {o.id: _columns(fix) for o, fix in zip(opened, fixes, strict=True)}
