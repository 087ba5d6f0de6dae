"""Sustained station ingest on SQLite, through the real `POST /ingest/sigfox` of `heron serve`:
3 stations x 17 keep-alive clients (51 connections) post 20 receptions per request; every frame
is one (device, seq) heard by all 3 stations, so its 3 receptions come with 3 credentials in 3
requests. The load is `heron.network.sigfox.simulator.run` in a separate process (uvloop), so its CPU is its
own. Frames/s counts the messages committed (200 means committed), checked against receptions.
Printed beside the floor: the same kind of frames stored in-process by `store_frames`, in
group-commit-sized transactions, with no HTTP, JSON or asyncio in the way.

The device type has a URL callback (DATA UPLINK, a JSON body) to a receiver on 127.0.0.1 in a
process of its own (raw uvloop streams answering 204), so every message commits with its
outbox row and the delivery worker sends them during the run, with the turns the ingest leaves
it (docs/ARCHITECTURE.md, "The write turn"); the outbox lag (deliveries still pending) is
printed when the load ends and a few seconds later."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.common import create_stations, free_port, heron_server, run_load, target, temp_dir, token_holding_rows
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.base import utcnow
from heron.delivery import callbacks
from heron.delivery.enqueue import enqueue_messages
from heron.delivery.models import DONE, PENDING, Delivery
from heron.messages.models import Message, Reception
from heron.network.sigfox import simulator as simulate
from heron.network.sigfox.radio import NETWORK as SIGFOX
from heron.registry import bulk, contracts, device_types
from heron.runtime.context import build_context
from heron.tenancy import groups
from heron.tenancy.access import SYSTEM
from heron.uplink.store import HeardFrame, RecentIndex, store_frames

SECONDS = float(os.environ.get("HERON_BENCH_SECONDS", "60"))
WORKERS = int(os.environ.get("HERON_BENCH_WORKERS", "1"))
DEVICES = 100_000  # each sends about every 20 s at 5,000 frames/s: a realistic dedup horizon
WARM_DEVICES = 2_000
FLOOR_DEVICES = 10_000
FIRST_DEVICE, WARM_FIRST, FLOOR_FIRST = 0x1000000, 0x2000000, 0x3000000
STATIONS = 3
CLIENTS_PER_STATION = int(os.environ.get("HERON_BENCH_CLIENTS_PER_STATION", "17"))
BATCH = 20
RATE_CEILING = 50_000.0  # frames/s: well above what is reached, so back-pressure sets the pace


def _setup(settings: Settings, hook_port: int) -> tuple[list[simulate.StationCredential], list[int]]:
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
        callbacks.create(
            session,
            SYSTEM,
            ctx.keyring,
            dt.device_type.id,
            callbacks.CallbackFields(
                channel="URL",
                callback_type=0,  # DATA
                callback_subtype=2,  # UPLINK
                enabled=True,
                url=f"http://127.0.0.1:{hook_port}/hook",
                http_method="POST",
                content_type="application/json",
                body_template='{"device":"{device}","data":"{data}"}',
            ),
        )
        made = create_stations(session, operator.id, STATIONS)
        creds, station_ids = [c for c, _ in made], [i for _, i in made]
        identifiers = (
            simulate.device_ids(FIRST_DEVICE, DEVICES)
            + simulate.device_ids(WARM_FIRST, WARM_DEVICES)
            + simulate.device_ids(FLOOR_FIRST, FLOOR_DEVICES)
        )
        rows = token_holding_rows(identifiers, dt.device_type.id, customer.id, contract.contract.id, now)
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


def _outbox(settings: Settings) -> dict[str, int]:
    """Deliveries by state; `due` is the pending ones whose time has come (the lag)."""
    ctx = build_context(settings, prepare(settings, announce_password=False))
    now = utcnow()
    with ctx.db.read() as session:
        by_state = dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).tuples().all())
        due = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.state == PENDING, Delivery.next_at <= now)
        )
    ctx.db.dispose()
    total = sum(by_state.values())
    return {"rows": total, "done": by_state.get(DONE, 0), "pending": by_state.get(PENDING, 0), "due": int(due or 0)}


def _show_outbox(label: str, outbox: dict[str, int], received: int | None = None) -> None:
    got = f", receiver got {received:,}" if received is not None else ""
    print(
        f"  outbox {label}: {outbox['rows']:,} rows, {outbox['done']:,} delivered, {outbox['pending']:,} pending "
        f"({outbox['due']:,} due: the lag){got}"
    )


class _Receiver:
    """The callback receiver: `python -m bench.ingest receiver PORT` in its own process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest", "receiver", str(port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"

    def stop(self) -> int:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return int(out.strip().splitlines()[-1]) if out.strip() else 0


def _receiver_main(port: int) -> None:
    import signal

    import uvloop

    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                count += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a closed connection, or the receiver stopping (cancelled quietly, no traceback)
        finally:
            writer.close()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    uvloop.run(main())
    print(count, flush=True)


def _load(plan: simulate.Plan) -> dict[str, Any]:
    return run_load(plan, plan.duration + 120)


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
    """Frames/s of the writer's transaction alone (`store_frames` with its index, then
    `enqueue_messages`), as the load hands it over: each transaction holds
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
    index = RecentIndex()  # as the ingest's writer keeps it
    start = time.perf_counter()
    for batch in batches:
        with ctx.db.write() as session:
            stored = store_frames(
                session, batch, utcnow(), network=SIGFOX, dedup_window=window, horizon=horizon, index=index
            )
            enqueue_messages(session, stored.new, dedup_window=window, horizon=horizon)
    elapsed = time.perf_counter() - start
    ctx.db.dispose()
    return frames / elapsed


def _processes(data_dir: Path) -> dict[str, tuple[int, float]]:
    """Role -> (VmRSS in KiB, CPU seconds so far) of every process `heron serve` runs for
    `data_dir` (the API process(es), the uplink writer, the worker): the ones whose environment
    names it."""
    marker = f"HERON_DATA_DIR={data_dir}".encode()
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            status = (entry / "status").read_text().splitlines()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile, or not ours
            continue
        role = words[words.index("heron.cli") + 1] if "heron.cli" in words else " ".join(words)[-40:]
        rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        cpu = (int(stat[11]) + int(stat[12])) / tick  # utime + stime
        out[f"{role} ({entry.name})"] = (rss, cpu)
    return dict(sorted(out.items()))


def _show_processes(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], seconds: float) -> None:
    print(f"  {len(after)} processes: CPU during the load (% of one core), VmRSS after it:")
    for role, (kib, cpu) in after.items():
        used = cpu - before.get(role, (0, 0.0))[1]
        print(f"    {100 * used / seconds:5.0f}%  {kib / 1024:7,.0f} MiB  {role}")


def main() -> None:
    data_dir = temp_dir("heron-bench-ingest-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    start = time.perf_counter()
    hook_port = free_port()
    creds, station_ids = _setup(settings, hook_port)
    print(f"set-up: {STATIONS} stations, {DEVICES + WARM_DEVICES + FLOOR_DEVICES:,} devices in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    print(
        f"SQLite, heron serve: {WORKERS} API process(es), the uplink writer and the worker (deliveries) in "
        f"processes of their own; {STATIONS} stations x {CLIENTS_PER_STATION} clients = "
        f"{STATIONS * CLIENTS_PER_STATION} connections, {BATCH} receptions per request, every frame heard "
        f"by {STATIONS} stations, {DEVICES:,} devices, {SECONDS:.0f} s; load generator: "
        f"heron.network.sigfox.simulator in "
        f"its own process (uvloop) on the same {os.cpu_count()}-core machine"
    )
    receiver = _Receiver(hook_port)
    env = {"HERON_CALLBACK_ALLOW_CIDRS": "127.0.0.0/8"}
    try:
        with heron_server(data_dir, workers=WORKERS, extra_env=env) as base:
            _load(_plan(base, creds, WARM_FIRST, WARM_DEVICES, 3.0))  # warm-up, on devices of its own
            before_m, before_r = _counts(settings)
            at_start = _processes(data_dir)
            result = _load(_plan(base, creds, FIRST_DEVICE, DEVICES, SECONDS))
            at_load_end = _processes(data_dir)
            after_m, after_r = _counts(settings)
            at_end = _outbox(settings)
            time.sleep(5)
            later = _outbox(settings)
    finally:
        received = receiver.stop()
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
    _show_outbox("when the load ended", at_end)
    _show_outbox("5 s later", later, received)
    _show_processes(at_start, at_load_end, seconds)
    floor = _floor(settings, station_ids)
    print(f"  floor: store_frames + enqueue_messages in-process, 1,000 receptions of one station per "
          f"transaction: {floor:,.0f} frames/s; HTTP ingest / floor: {rate / floor:.2f}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        _receiver_main(int(sys.argv[2]))
    else:
        main()
