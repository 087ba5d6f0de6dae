"""Sustained station ingest on SQLite, through the real `POST /ingest/sigfox` of `heron serve`:
3 stations x 17 keep-alive clients (51 connections) post 20 receptions per request; every frame
is one (device, seq) heard by all 3 stations, so its 3 receptions come with 3 credentials in 3
requests. The load is `heron.simulate.run` in a separate process (uvloop), so its CPU is its
own. Frames/s counts the messages committed (200 means committed), checked against receptions.
Printed beside the floor: the same kind of frames stored in-process by `store_frames`, in
group-commit-sized transactions, with no HTTP, JSON or asyncio in the way."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bench.common import heron_server, target, temp_dir
from heron import simulate
from heron.api.app import build_context
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.base import utcnow
from heron.messages.models import Message, Reception
from heron.messages.store import HeardFrame, store_frames
from heron.network.sigfox import stations
from heron.network.sigfox.stations import StationFields
from heron.registry import bulk, contracts, device_types
from heron.tenancy import groups
from heron.tenancy.access import SYSTEM

SECONDS = float(os.environ.get("HERON_BENCH_SECONDS", "60"))
WORKERS = int(os.environ.get("HERON_BENCH_WORKERS", "1"))
DEVICES = 100_000  # each sends about every 20 s at 5,000 frames/s: a realistic dedup horizon
WARM_DEVICES = 2_000
FLOOR_DEVICES = 10_000
FIRST_DEVICE, WARM_FIRST, FLOOR_FIRST = 0x1000000, 0x2000000, 0x3000000
STATIONS = 3
CLIENTS_PER_STATION = 17
BATCH = 20
RATE_CEILING = 50_000.0  # frames/s: well above what is reached, so back-pressure sets the pace


def _setup(settings: Settings) -> tuple[list[simulate.StationCredential], list[int]]:
    ctx = build_context(settings, prepare(settings, announce_password=False))
    now = utcnow()
    with ctx.db.write() as session:
        root = groups.get_root(session)
        assert root is not None
        operator = groups.create(session, SYSTEM, parent_id=root.id, name="Operator")
        customer = groups.create(session, SYSTEM, parent_id=operator.id, name="Customer")
        total = DEVICES + WARM_DEVICES + FLOOR_DEVICES
        contract = contracts.create(session, SYSTEM, group_id=customer.id, name="Plan", max_tokens=total)
        dt = device_types.create(
            session,
            SYSTEM,
            group_id=customer.id,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name="Meters", contract_id=contract.contract.id),
        )
        creds, station_ids = [], []
        for i in range(STATIONS):
            view, secret = stations.create(
                session,
                SYSTEM,
                group_id=operator.id,
                identifier=f"{0x5E000 + i:X}",
                fields=StationFields(name=f"Station {i}", lat=45.0 + i / 10, lng=4.0),
            )
            creds.append(simulate.StationCredential(view.station.identifier, secret))
            station_ids.append(view.station.id)
        identifiers = (
            simulate.device_ids(FIRST_DEVICE, DEVICES)
            + simulate.device_ids(WARM_FIRST, WARM_DEVICES)
            + simulate.device_ids(FLOOR_FIRST, FLOOR_DEVICES)
        )
        rows = [
            bulk.new_row(
                network=bulk.SIGFOX,
                identifier=ident,
                device_type_id=dt.device_type.id,
                group_id=customer.id,
                automatic_renewal=True,
                created_by="bench",
                now=now,
            )
            | {
                "lifecycle": bulk.ACTIVE,
                "token_state": bulk.TOKEN_OK,
                "contract_id": contract.contract.id,
                "pac": "x" * 70,  # stands in for the sealed PAC: never read by the ingest
            }
            for ident in identifiers
        ]
        for i in range(0, len(rows), 10_000):
            bulk.insert_devices(session, rows[i : i + 10_000])
    ctx.db.dispose()
    return creds, station_ids


def _counts(settings: Settings) -> tuple[int, int]:
    ctx = build_context(settings, prepare(settings, announce_password=False))
    with ctx.db.read() as session:
        messages = int(session.scalar(select(func.count()).select_from(Message)) or 0)
        receptions = int(session.scalar(select(func.count()).select_from(Reception)) or 0)
    ctx.db.dispose()
    return messages, receptions


def _load(plan: simulate.Plan) -> dict[str, Any]:
    """Run the plan in a separate process (`python -m bench.ingest load`, the plan on stdin)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "load"],
        input=json.dumps(asdict(plan)),
        capture_output=True,
        text=True,
        timeout=plan.duration + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _plan(url: str, creds: list[simulate.StationCredential], first: int, count: int, seconds: float) -> simulate.Plan:
    return simulate.Plan(
        url=url,
        stations=creds,
        devices=simulate.device_ids(first, count),
        rate=RATE_CEILING,
        duration=seconds,
        heard_by=(STATIONS, STATIONS),
        clients_per_station=CLIENTS_PER_STATION,
        batch=BATCH,
        seed=1,
    )


def _floor(settings: Settings, station_ids: list[int], frames: int = 30_000) -> float:
    """Frames/s of `store_frames` alone, as the load hands it over: each transaction holds
    about 1,000 receptions of one station, so a frame's first reception makes its message and
    the other two join it from later transactions (the group commit's batches under load)."""
    ctx = build_context(settings, prepare(settings, announce_password=False))
    ids = simulate.device_ids(FLOOR_FIRST, FLOOR_DEVICES)
    now = utcnow()
    per_batch = 1000
    batches = []
    for first in range(0, frames, per_batch):
        chunk = range(first, min(first + per_batch, frames))
        for s in station_ids:
            batches.append([
                HeardFrame(station_id=s, device=ids[i % len(ids)], seq_number=(i // len(ids)) % 4096,
                           frame_type="DATA", data="0a0b0c0d", ack_required=False, time=now, rssi=-120.0,
                           snr=10.0, freq=868_130_000.0)
                for i in chunk
            ])  # fmt: skip
    window, horizon = timedelta(seconds=1), timedelta(seconds=30)
    start = time.perf_counter()
    for batch in batches:
        with ctx.db.write() as session:
            store_frames(session, batch, utcnow(), dedup_window=window, horizon=horizon)
    elapsed = time.perf_counter() - start
    ctx.db.dispose()
    return frames / elapsed


def main() -> None:
    data_dir = temp_dir("heron-bench-ingest-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    start = time.perf_counter()
    creds, station_ids = _setup(settings)
    print(f"set-up: {STATIONS} stations, {DEVICES + WARM_DEVICES + FLOOR_DEVICES:,} devices in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    print(
        f"SQLite, {WORKERS} server worker(s), {STATIONS} stations x {CLIENTS_PER_STATION} clients = "
        f"{STATIONS * CLIENTS_PER_STATION} connections, {BATCH} receptions per request, every frame heard "
        f"by {STATIONS} stations, {DEVICES:,} devices, {SECONDS:.0f} s; load generator: heron.simulate in "
        f"its own process (uvloop) on the same {os.cpu_count()}-core machine"
    )
    with heron_server(data_dir, workers=WORKERS) as base:
        _load(_plan(base, creds, WARM_FIRST, WARM_DEVICES, 3.0))  # warm-up, on devices of its own
        before_m, before_r = _counts(settings)
        result = _load(_plan(base, creds, FIRST_DEVICE, DEVICES, SECONDS))
        after_m, after_r = _counts(settings)
    messages, receptions = after_m - before_m, after_r - before_r
    seconds = float(result["seconds"])
    rate = messages / seconds
    latency = result["latencyMs"]
    print(
        f"  sent {result['frames']:,} frames in {result['requests']:,} requests ({result['errors']} errors), "
        f"{seconds:.1f} s; committed {messages:,} messages, {receptions:,} receptions "
        f"({receptions / max(messages, 1):.2f} per message)"
    )
    print(
        f"  requests: {result['requests'] / seconds:,.0f} req/s, p50 {latency['p50']} ms, p99 {latency['p99']} ms; "
        f"load generator CPU {result['clientCpuPercent']:.0f}%"
    )
    if messages != result["frames"] or receptions != STATIONS * messages:
        print(f"  MISMATCH: {result['frames']:,} frames sent, {messages:,} messages, {receptions:,} receptions")
    target("sustained ingest (frames/s, 3 receptions each)", rate, 5000, "frames/s", higher_is_better=True)
    floor = _floor(settings, station_ids)
    print(f"  floor: store_frames in-process, 1,000 receptions of one station per transaction: {floor:,.0f} frames/s; "
          f"HTTP ingest / floor: {rate / floor:.2f}")  # fmt: skip


def _load_main() -> None:
    raw = json.loads(sys.stdin.read())
    raw["stations"] = [simulate.StationCredential(**s) for s in raw["stations"]]
    raw["heard_by"] = tuple(raw["heard_by"])
    plan = simulate.Plan(**raw)
    with asyncio.Runner(loop_factory=simulate.fast_event_loop()) as runner:
        stats = runner.run(simulate.run(plan))
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        _load_main()
    else:
        main()
