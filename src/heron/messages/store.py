"""Storing what stations heard: receptions become messages, deduplicated, in one transaction
per batch (the ingest's group commit hands several requests' frames over at once).

Rules (docs/ARCHITECTURE.md, "Message pipeline"):
- Receptions are keyed by (device, sequence number). The first one makes the message (its
  `time` is when it reached Heron); those arriving within the dedup window join it and are in
  its DATA callbacks; later ones, up to the dedup horizon, attach as `late` (DATA_ADVANCED).
  A station reporting the same frame twice counts once.
- A frame of a device Heron does not deliver for (unknown, deleted, or not holding a valid
  token) is not stored: it is counted per station, device and hour.
- The sequence number is 12 bits and wraps. A forward step of 1-2047 advances the device's
  number and records the gap as lost frames; a backward step (0 or 2048-4095 ahead) is an
  out-of-order frame: stored, no loss counted, the device's number kept. A frame repeating the
  device's last number after the horizon, within `STALE_REPEAT`, is a late copy and dropped.
- The device's last seen time, communication status and sequence number are updated in the
  same transaction, with one statement per batch; so are the stations' traffic counters.

On PostgreSQL the devices a batch names are locked (`FOR UPDATE`, in id order) for the
transaction, so two processes never make two messages of one frame; SQLite's single writer
does the same."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from heron.db.upsert import add_counts
from heron.messages.decoding import decode_payload
from heron.messages.models import Message, Reception
from heron.network.sigfox.lqi import lqi
from heron.network.sigfox.models import BaseStation, StationTraffic, UndeliveredFrames
from heron.registry.bulk import DELETED, SIGFOX, TOKEN_OK
from heron.registry.models import Device, DeviceType

SEQ_MODULO = 4096
STALE_REPEAT = timedelta(hours=1)
COM_OK = 1  # api.md comState
UNKNOWN, NO_TOKEN = "UNKNOWN", "NO_TOKEN"


@dataclass(frozen=True)
class HeardFrame:
    """One station's reception of one frame, validated at the edge."""

    station_id: int
    device: str  # normalized Sigfox id
    seq_number: int
    frame_type: str  # DATA, KEEPALIVE, REPEATER
    data: str  # lower-case hex, 0-24 digits
    ack_required: bool
    time: datetime  # as the station reports it (its arrival time when it does not)
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
    time: datetime


@dataclass
class StoreResult:
    frames: int = 0
    new: list[StoredMessage] = field(default_factory=list)
    joined: int = 0  # receptions added to a message within its dedup window
    late: int = 0  # receptions added after it
    duplicates: int = 0  # repeated reports dropped
    undelivered: int = 0


@dataclass
class _Device:
    id: int
    device_type_id: int
    seq: int | None
    last_seen: datetime | None
    changed: bool = False


@dataclass
class _Open:
    """A message of this batch or a recent one, as dedup sees it."""

    id: int | None
    time: datetime
    stations: dict[int, tuple[float | None, str]]  # station -> (rssi, radio zone)
    dirty: bool = False

    def quality(self) -> tuple[float | None, int]:
        """Best RSSI and LQI over every reception; the zone is the best reception's station's."""
        heard = [(r, z) for r, z in self.stations.values() if r is not None]
        if not heard:
            return None, lqi(None, len(self.stations))
        best, zone = max(heard)
        return best, lqi(best, len(self.stations), zone)


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def store_frames(
    session: Session,
    frames: Sequence[HeardFrame],
    now: datetime,
    *,
    dedup_window: timedelta,
    horizon: timedelta,
) -> StoreResult:
    result = StoreResult(frames=len(frames))
    if not frames:
        return result
    is_pg = session.get_bind().dialect.name == "postgresql"
    station_ids = sorted({f.station_id for f in frames})
    zones: dict[int, str] = {
        sid: zone
        for sid, zone in session.execute(
            select(BaseStation.id, BaseStation.radio_zone).where(BaseStation.id.in_(station_ids))
        )
    }

    query = (
        select(
            Device.id,
            Device.identifier,
            Device.device_type_id,
            Device.lifecycle,
            Device.token_state,
            Device.sequence_number,
            Device.last_seen_at,
        )
        .where(Device.network == SIGFOX, Device.identifier.in_(sorted({f.device for f in frames})))
        .order_by(Device.id)
    )
    if is_pg:
        query = query.with_for_update()
    devices: dict[str, _Device] = {}
    refused: dict[str, str] = {}
    for d_id, ident, dt_id, lifecycle, token_state, seq, last_seen in session.execute(query):
        if lifecycle == DELETED:
            refused[ident] = UNKNOWN
        elif token_state != TOKEN_OK:
            refused[ident] = NO_TOKEN
        else:
            devices[ident] = _Device(d_id, dt_id, seq, last_seen)

    traffic: Counter[int] = Counter()
    undelivered: Counter[tuple[int, str, str]] = Counter()
    groups: dict[tuple[int, int], list[HeardFrame]] = defaultdict(list)
    for f in frames:
        traffic[f.station_id] += 1
        dev = devices.get(f.device)
        if dev is None:
            undelivered[(f.station_id, f.device, refused.get(f.device, UNKNOWN))] += 1
            continue
        groups[(dev.id, f.seq_number)].append(f)
    result.undelivered = sum(undelivered.values())

    recent = _recent(session, [d.id for d in devices.values()], now - horizon)
    payloads = _payload_settings(session, {d.device_type_id for d in devices.values()})
    by_id = {d.id: d for d in devices.values()}
    new_rows: list[dict[str, Any]] = []
    new_receptions: list[list[dict[str, Any]]] = []
    added: list[dict[str, Any]] = []  # receptions of already stored messages
    for (device_id, seq), heard in groups.items():
        dev = by_id[device_id]
        first = heard[0]
        known = recent.get((device_id, seq))
        if known is not None:
            late = now - known.time > dedup_window
            for f in heard:
                if f.station_id in known.stations:
                    result.duplicates += 1
                    continue
                known.stations[f.station_id] = (f.rssi, zones.get(f.station_id, "RC1"))
                known.dirty = True
                added.append(_reception(f, known.id, late))
                result.late += late
                result.joined += not late
            continue
        if dev.seq == seq and dev.last_seen is not None and now - dev.last_seen < STALE_REPEAT:
            result.duplicates += len(heard)
            continue
        lost, advance = 0, True
        if dev.seq is not None:
            step = (seq - dev.seq) % SEQ_MODULO
            if 0 < step < SEQ_MODULO // 2:
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
        opened = _Open(None, now, {s: (f.rssi, zones.get(s, "RC1")) for s, f in best.items()})
        best_rssi, quality = opened.quality()
        service = None
        if first.frame_type != "DATA" and (first.battery is not None or first.temperature is not None):
            service = json.dumps({"battery": first.battery, "temperature": first.temperature})
        new_rows.append(
            {
                "device_id": device_id,
                "device_type_id": dev.device_type_id,
                "time": now,
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
        new_receptions.append([_reception(f, None, False) for f in best.values()])
        recent[(device_id, seq)] = opened
        if advance:
            dev.seq = seq
        dev.last_seen, dev.changed = now, True

    _write_messages(session, new_rows, new_receptions, result)
    if added:
        session.execute(insert(Reception), added)
        _refresh(session, [m for m in recent.values() if m.dirty and m.id is not None])
    _touch_devices(session, [d for d in devices.values() if d.changed])
    _count_traffic(session, traffic, undelivered, now)
    return result


def _payload_settings(session: Session, device_type_ids: set[int]) -> dict[int, tuple[int, str | None]]:
    if not device_type_ids:
        return {}
    rows = session.execute(
        select(DeviceType.id, DeviceType.payload_type, DeviceType.payload_config).where(
            DeviceType.id.in_(sorted(device_type_ids))
        )
    )
    return {dt_id: (kind, config) for dt_id, kind, config in rows}


def _decoded(settings: tuple[int, str | None] | None, f: HeardFrame) -> str | None:
    if settings is None:
        return None
    fields = decode_payload(settings[0], settings[1], f.data)
    return json.dumps(fields) if fields is not None else None


def _reception(f: HeardFrame, message_id: int | None, late: bool) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "station_id": f.station_id,
        "time": f.time,
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
    rows = list(
        session.execute(
            select(Message.id, Message.device_id, Message.seq_number, Message.time).where(
                Message.device_id.in_(device_ids), Message.time >= since
            )
        )
    )
    if not rows:
        return {}
    out = {(d, s): _Open(m, t, {}) for m, d, s, t in rows}
    by_message = {o.id: o for o in out.values()}
    for message_id, station_id, rssi, zone in session.execute(
        select(Reception.message_id, Reception.station_id, Reception.rssi, BaseStation.radio_zone)
        .join(BaseStation, BaseStation.id == Reception.station_id)
        .where(Reception.message_id.in_(list(by_message)))
    ):
        by_message[message_id].stations[station_id] = (rssi, zone)
    return out


def _write_messages(
    session: Session, rows: list[dict[str, Any]], receptions: list[list[dict[str, Any]]], result: StoreResult
) -> None:
    if not rows:
        return
    table = cast(Table, Message.__table__)
    ids = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars().all()
    flat = []
    for message_id, row, heard in zip(ids, rows, receptions, strict=True):
        result.new.append(
            StoredMessage(
                message_id,
                row["device_id"],
                row["device_type_id"],
                row["seq_number"],
                row["ack_required"],
                row["frame_type"],
                row["time"],
            )
        )
        for r in heard:
            r["message_id"] = message_id
            flat.append(r)
    session.execute(insert(Reception), flat)


def _refresh(session: Session, opened: list[_Open]) -> None:
    """Reception count, best RSSI and LQI of stored messages that gained receptions."""
    if not opened:
        return
    rows = []
    for o in opened:
        best, quality = o.quality()
        rows.append({"b_id": o.id, "receptions": len(o.stations), "best_rssi": best, "lqi": quality})
    table = cast(Table, Message.__table__)
    session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(receptions=bindparam("receptions"), best_rssi=bindparam("best_rssi"), lqi=bindparam("lqi")),
        rows,
    )


def _touch_devices(session: Session, changed: list[_Device]) -> None:
    if not changed:
        return
    table = cast(Table, Device.__table__)
    session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(last_seen_at=bindparam("b_seen"), sequence_number=bindparam("b_seq"), com_state=COM_OK),
        [{"b_id": d.id, "b_seen": d.last_seen, "b_seq": d.seq} for d in changed],
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
    table = cast(Table, BaseStation.__table__)
    session.connection().execute(
        update(table).where(table.c.id.in_(sorted(traffic))).values(last_seen_at=now, state="ONLINE")
    )
