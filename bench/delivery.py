"""Callback delivery on SQLite, through the real `heron serve` (ingest by `heron.network.sigfox.simulator` in a
process of its own, uvloop) to a receiver on the same machine (`bench.receiver`: raw uvloop
streams, its own process, logging each request's arrival, webhook-id and body lines):

1. URL drain: 20,000 frames ingested with deliveries off (HERON_RUN_DELIVERIES=false), then a
   server with deliveries on; requests/s at the receiver, first to last, every webhook-id
   exactly once.
2. BATCH_URL drain: the same with a BATCH_URL callback; lines/s at the receiver.
3. Latency at 500 frames/s for 20 s (after 3 s of warm-up at that rate, not measured): from
   the close of the dedup window (messages.time + HERON_DEDUP_WINDOW_SECONDS) to the URL
   callback's arrival (same clock); the URL carries the device and sequence number, the time
   is read from the database afterwards.
4. Receiver down (503) for HERON_BENCH_DOWN_SECONDS (600) while 10,000 frames are ingested,
   backoff shortened (1 s base, 10 s max); then up: lost, duplicates, time to drain. A callback
   is dead after 5 consecutive failures and probed once a minute, so the drain starts within a
   minute of the recovery.

Each phase ends with the outbox lag: pending rows and the oldest pending row's age."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.common import (
    create_stations,
    free_port,
    heron_server,
    meters_customer,
    percentile,
    run_load,
    target,
    temp_dir,
    token_holding_rows,
)
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.base import utcnow
from heron.delivery import callbacks
from heron.delivery.models import DONE, PENDING, Delivery
from heron.delivery.policy import Policy
from heron.messages.models import Message
from heron.network.sigfox import simulator as simulate
from heron.registry import bulk
from heron.registry.models import Device
from heron.runtime.context import build_context
from heron.tenancy.access import SYSTEM

DOWN_SECONDS = float(os.environ.get("HERON_BENCH_DOWN_SECONDS", "600"))
DRAIN_LIMIT = float(os.environ.get("HERON_BENCH_DRAIN_SECONDS", "45"))  # the longest a drain is watched
PHASES = os.environ.get("HERON_BENCH_DELIVERY_PHASES", "1234")  # which of the 4 phases to run
DRAIN_FRAMES = 20_000
BATCH_FRAMES = 40_000
LATENCY_RATE, LATENCY_SECONDS, LATENCY_DEVICES, LATENCY_WAIT = 500.0, 20.0, 2_000, 20.0
LATENCY_WARM = 3.0  # seconds of warm-up load before the measured one
DOWN_FRAMES = 10_000
STATIONS = 3
WINDOW = 1.0  # HERON_DEDUP_WINDOW_SECONDS (the default)
DRAIN_FIRST, LATENCY_FIRST, DOWN_FIRST = 0x1000000, 0x2000000, 0x3000000
BASE_ENV = {"HERON_CALLBACK_ALLOW_CIDRS": "127.0.0.0/8", "HERON_DEDUP_WINDOW_SECONDS": str(WINDOW)}
SHORT_BACKOFF = {"HERON_DELIVERY_BACKOFF_BASE_SECONDS": "1", "HERON_DELIVERY_BACKOFF_MAX_SECONDS": "10"}


# -- the receiver ---------------------------------------------------------------------------------
@dataclass
class Hit:
    arrival: float
    status: int
    hook_id: str
    lines: int
    path: str


class Receiver:
    """`python -m bench.receiver PORT LOG` in its own process, driven over HTTP."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(port), str(log)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"
        self.http = httpx.Client(base_url=self.base, timeout=10)
        self.read_from = 0  # bytes of the log already read

    def control(self, what: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.request("GET" if what == "_stats" else "POST", "/" + what).json()
        return result

    def hits(self) -> list[Hit]:
        """The requests logged since the last call."""
        self.control("_stats")  # flushes the log
        with open(self.log, "rb") as f:
            f.seek(self.read_from)
            raw = f.read()
        complete = raw[: raw.rfind(b"\n") + 1]
        self.read_from += len(complete)
        out = []
        for line in complete.decode().splitlines():
            arrival, status, hook_id, lines, path = line.split("\t")
            out.append(Hit(float(arrival), int(status), hook_id, int(lines), path))
        return out

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- set-up -------------------------------------------------------------------------------------------
def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]


@contextmanager
def _ctx(settings: Settings) -> Iterator[Any]:
    ctx = build_context(settings, prepare(settings, announce_password=False))
    try:
        yield ctx
    finally:
        ctx.db.dispose()


def _setup(
    settings: Settings, callback: callbacks.CallbackFields, ranges: list[tuple[int, int]]
) -> list[simulate.StationCredential]:
    """A device type with `callback`, STATIONS stations, the devices of `ranges` (first, count)."""
    now = utcnow()
    identifiers = [i for first, count in ranges for i in simulate.device_ids(first, count)]
    with _ctx(settings) as ctx, ctx.db.write() as session:
        customer = meters_customer(session, max_tokens=len(identifiers))
        callbacks.create(session, SYSTEM, ctx.keyring, customer.device_type_id, callback)
        creds = [c for c, _ in create_stations(session, customer.operator_id, STATIONS)]
        rows = token_holding_rows(identifiers, customer.device_type_id, customer.group_id, customer.contract_id, now)
        for i in range(0, len(rows), 10_000):
            bulk.insert_devices(session, rows[i : i + 10_000])
    return creds


def _url_callback(port: int) -> callbacks.CallbackFields:
    return callbacks.CallbackFields(
        channel="URL",
        callback_type=0,
        callback_subtype=2,
        enabled=True,  # DATA UPLINK
        url=f"http://127.0.0.1:{port}/hook/{{device}}/{{seqNumber}}",
        http_method="POST",
        content_type="application/json",
        body_template='{"device":"{device}","seq":{seqNumber},"time":{time}}',
    )


def _batch_callback(port: int) -> callbacks.CallbackFields:
    return callbacks.CallbackFields(
        channel="BATCH_URL",
        callback_type=0,
        callback_subtype=2,
        enabled=True,
        url=f"http://127.0.0.1:{port}/batch",
        http_method="POST",
        line_pattern="{device};{time};{data};{seqNumber}",
    )


# -- load ---------------------------------------------------------------------------------------------
def _load(
    url: str,
    creds: list[simulate.StationCredential],
    first: int,
    devices: int,
    rate: float,
    seconds: float,
    heard_by: tuple[int, int] = (1, 1),
    clients: int = 8,
    first_seq: int | None = None,
) -> dict[str, Any]:
    """`heron.network.sigfox.simulator.run` in a separate process (`bench.common.run_load`). DATA frames only,
    no downlink asked: one URL delivery per frame."""
    plan = simulate.Plan(
        url=url,
        stations=creds,
        devices=simulate.device_ids(first, devices),
        rate=rate,
        duration=seconds,
        heard_by=heard_by,
        clients_per_station=clients,
        batch=20,
        ack_ratio=0.0,
        keepalive_ratio=0.0,
        seed=first,
        first_seq=first_seq,
    )
    result = run_load(plan, seconds + 120)
    if result["errors"]:
        print(f"  load errors: {result['errors']} ({result['errorSamples'][:2]})")
    return result


# -- the outbox ---------------------------------------------------------------------------------------
def _last_delivery(settings: Settings) -> int:
    with _ctx(settings) as ctx, ctx.db.read() as session:
        return int(session.scalar(select(func.max(Delivery.id))) or 0)


def _keys(settings: Settings, after: int) -> dict[str, str]:
    """Key -> state of the deliveries with an id above `after`."""
    with _ctx(settings) as ctx, ctx.db.read() as session:
        rows = session.execute(select(Delivery.key, Delivery.state).where(Delivery.id > after)).tuples().all()
    return dict(rows)


def _pending(settings: Settings) -> int:
    with _ctx(settings) as ctx, ctx.db.read() as session:
        return int(session.scalar(select(func.count()).where(Delivery.state == PENDING)) or 0)


def _lag(settings: Settings, label: str) -> None:
    """The outbox lag: pending rows (due ones) and the oldest pending row's age."""
    now = utcnow()
    with _ctx(settings) as ctx, ctx.db.read() as session:
        count, oldest = session.execute(
            select(func.count(), func.min(Delivery.created_at)).where(Delivery.state == PENDING)
        ).one()
        due = session.scalar(select(func.count()).where(Delivery.state == PENDING, Delivery.next_at <= now))
        done = session.scalar(select(func.count()).where(Delivery.state == DONE))
    age = f"{(now - oldest).total_seconds():.1f} s" if oldest is not None else "-"
    print(f"  outbox lag {label}: {count:,} pending ({int(due or 0):,} due), oldest pending {age}; {done:,} delivered")


def _wait_received(receiver: Receiver, base: int, want: int, key: str, timeout: float, idle: float = 15.0) -> None:
    """Until the receiver has `want` of `key` (ok or lines) more than `base` (its counts are
    since it started), or no progress for `idle` s."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        got = int(receiver.control("_stats")[key]) - base
        if got >= want:
            return
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > idle:
            return
        time.sleep(0.2)


def _rate(hits: list[Hit], count: int) -> tuple[float, float]:
    span = hits[-1].arrival - hits[0].arrival if len(hits) > 1 else 0.0
    return (count / span if span else 0.0), span


# -- phases ---------------------------------------------------------------------------------------------
def _drain(
    settings: Settings,
    creds: list[simulate.StationCredential],
    receiver: Receiver,
    frames: int,
    first: int,
    batch: bool,
) -> None:
    data_dir = settings.data_dir
    sent, seconds = 0, 0.0
    with heron_server(data_dir, extra_env=BASE_ENV | {"HERON_RUN_DELIVERIES": "false"}) as base:
        for _ in range(6):  # back-pressure may drop frames: again, on the devices not heard yet
            left = frames - sent
            result = _load(base, creds, first + sent, left, rate=5_000, seconds=left / 5_000)
            sent, seconds = sent + int(result["frames"]), seconds + float(result["seconds"])
            if sent >= frames * 0.99:
                break
    owed = _keys(settings, 0)
    print(
        f"  prefill: {sent:,} frames ingested in {seconds:.1f} s ({sent / seconds:,.0f} frames/s, deliveries off, "
        f"one frame per device): {len(owed):,} deliveries owed"
    )
    time.sleep(WINDOW)  # every row due
    receiver.hits()
    key = "lines" if batch else "ok"
    count = int(receiver.control("_stats")[key])
    start = time.monotonic()
    with heron_server(data_dir, extra_env=BASE_ENV) as _base:
        up = time.monotonic() - start
        _wait_received(receiver, count, len(owed), key, timeout=DRAIN_LIMIT)
        hits = [h for h in receiver.hits() if h.status == 204]
        lines = sum(h.lines for h in hits)
        ids = Counter(h.hook_id for h in hits)
        rate, span = _rate(hits, lines)
        if batch:
            print(
                f"  received {len(hits):,} requests, {lines:,} lines ({lines / max(len(hits), 1):,.0f} per request) "
                f"in {span:.2f} s, first to last; server start {up:.1f} s"
            )
            target("BATCH_URL drain (messages/s at the receiver)", rate, 10_000, "messages/s", higher_is_better=True)
        else:
            print(f"  received {len(hits):,} requests in {span:.2f} s, first to last; server start {up:.1f} s")
            target("URL drain (requests/s at the receiver)", rate, 2_000, "requests/s", higher_is_better=True)
        repeated = sum(n - 1 for n in ids.values() if n > 1)
        if batch:
            ok = lines == len(owed) and repeated == 0
            print(
                f"  exactly once: {'yes' if ok else 'NO'}: {lines:,} lines for {len(owed):,} deliveries, "
                f"{len(ids):,} distinct webhook-ids, {repeated} repeated"
            )
        else:
            missing, unknown = len(set(owed) - set(ids)), len(set(ids) - set(owed))
            ok = missing == 0 and repeated == 0 and unknown == 0
            print(
                f"  exactly once: {'yes' if ok else 'NO'}: {len(ids):,} distinct webhook-ids for {len(owed):,} "
                f"deliveries, {missing:,} not received, {repeated} repeated, {unknown} unknown"
            )
        if lines < len(owed):
            print(f"  (watched for {DRAIN_LIMIT:.0f} s, HERON_BENCH_DRAIN_SECONDS: the rest is the lag below)")
        _lag(settings, "at the end")
    if not batch:
        bare = _bare_client(receiver, len(owed))
        print(
            f"  beside a bare aiohttp client (uvloop, {Policy().concurrency} connections, the same requests to the "
            f"same receiver, the server stopped): {bare:,.0f} requests/s; Heron's drain / bare client: "
            f"{rate / bare:.2f}"
        )


def _bare_client(receiver: Receiver, requests: int) -> float:
    """Requests/s of the same POSTs (path, JSON body) as the URL callback's, sent by a bare
    aiohttp client on uvloop with the worker's concurrency: what the machine and receiver allow."""
    import aiohttp

    from heron.runtime.background import run_async

    concurrency = Policy().concurrency
    url = f"{receiver.base}/hook"
    ids = iter(range(requests))

    async def sender(client: aiohttp.ClientSession) -> None:
        for i in ids:
            body = b'{"device":"%X","seq":%d,"time":1700000000}' % (DRAIN_FIRST + i, i % 4096)
            headers = {"content-type": "application/json"}
            async with client.post(f"{url}/{DRAIN_FIRST + i:X}/{i % 4096}", data=body, headers=headers) as response:
                await response.read()

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as client:
            start = time.perf_counter()
            await asyncio.gather(*(sender(client) for _ in range(concurrency)))
            return requests / (time.perf_counter() - start)

    rate = run_async(main())
    receiver.hits()  # not Heron's: cleared
    return rate


def _latency(settings: Settings, creds: list[simulate.StationCredential], receiver: Receiver) -> None:
    with heron_server(settings.data_dir, extra_env=BASE_ENV) as base:
        # Warm-up at the same rate, not measured: a fresh server's first second pays its cold
        # caches and first connections (measured: one round of about 200 deliveries 0.4 s late).
        before, count = _last_delivery(settings), int(receiver.control("_stats")["ok"])
        # Its frames' sequence numbers (from 0) are not the measured ones' (from 2048).
        _load(base, creds, LATENCY_FIRST, LATENCY_DEVICES, LATENCY_RATE, LATENCY_WARM, (1, 3), 2, first_seq=0)
        _wait_received(receiver, count, len(_keys(settings, before)), "ok", timeout=LATENCY_WAIT, idle=5)
        before = _last_delivery(settings)
        receiver.hits()
        count = int(receiver.control("_stats")["ok"])
        result = _load(
            base, creds, LATENCY_FIRST, LATENCY_DEVICES, LATENCY_RATE, LATENCY_SECONDS, (1, 3), 2, first_seq=2048
        )
        owed = _keys(settings, before)
        _wait_received(receiver, count, len(owed), "ok", timeout=LATENCY_WAIT, idle=5)
        hits = [h for h in receiver.hits() if h.status == 204]
        _lag(settings, "at the end")
    with _ctx(settings) as ctx, ctx.db.read() as session:
        times = {
            (ident, seq): (t, arrived)
            for ident, seq, t, arrived in session.execute(
                select(Device.identifier, Message.seq_number, Message.time, Message.arrived_at)
                .join(Device, Device.id == Message.device_id)
                .join(Delivery, Delivery.message_id == Message.id)
                .where(Delivery.id > before)
            ).tuples()
        }
    latencies, stored, sent = [], [], []  # the whole, and its two parts: stored (ingest), then sent
    for h in hits:
        _hook, ident, seq = h.path.rsplit("/", 2)
        found = times.get((ident, int(seq)))
        if found is not None:
            heard, arrived = ((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() for t in found)
            latencies.append(h.arrival - (heard + WINDOW))
            stored.append(arrived - heard)
            sent.append(h.arrival - (arrived + WINDOW))
    late = len(owed) - len(latencies)  # not received within the wait: counted as infinitely late
    print(
        f"  ingested {result['frames']:,} frames in {result['seconds']:.1f} s ({result['framesPerSecond']:,.0f}/s, "
        f"heard by 1-3 stations): {len(owed):,} deliveries, {len(latencies):,} received within "
        f"{LATENCY_WAIT:.0f} s of the load's end"
    )
    if not latencies:
        print("  no latency measured")
        return
    every = latencies + [float("inf")] * late
    p50, p99 = percentile(every, 50) * 1000, percentile(every, 99) * 1000
    print(
        f"  window close -> callback received: p50 {p50:.1f} ms, p99 {p99:.1f} ms; of those received: "
        f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms, "
        f"min {min(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"  its parts: station time -> stored (messages.arrived_at) p50 {percentile(stored, 50) * 1000:.1f} ms, "
        f"p99 {percentile(stored, 99) * 1000:.1f} ms; due (arrival + window) -> received "
        f"p50 {percentile(sent, 50) * 1000:.1f} ms, p99 {percentile(sent, 99) * 1000:.1f} ms"
    )
    target("p99 window close -> URL callback received at 500 messages/s", p99, 50, "ms")


def _down(settings: Settings, creds: list[simulate.StationCredential], receiver: Receiver) -> None:
    before = _last_delivery(settings)
    receiver.hits()
    with heron_server(settings.data_dir, extra_env=BASE_ENV | SHORT_BACKOFF) as base:
        receiver.control("_down")
        down_at = time.monotonic()
        seconds = max(1.0, 0.9 * DOWN_SECONDS - 1)
        result = _load(base, creds, DOWN_FIRST, DOWN_FRAMES, DOWN_FRAMES / seconds, seconds, clients=4)
        owed = _keys(settings, before)
        print(
            f"  receiver answering 503 for {DOWN_SECONDS:.0f} s; {result['frames']:,} frames ingested over "
            f"{result['seconds']:.0f} s: {len(owed):,} deliveries owed"
        )
        _lag(settings, "while down")
        time.sleep(max(0.0, down_at + DOWN_SECONDS - time.monotonic()))
        receiver.control("_up")
        up_at, up_wall = time.monotonic(), time.time()
        _lag(settings, "at the recovery")
        drained = None
        while time.monotonic() - up_at < 300:
            if _pending(settings) == 0:
                drained = time.monotonic() - up_at
                break
            time.sleep(0.2)
        hits = receiver.hits()
        _lag(settings, "at the end")
    ok = Counter(h.hook_id for h in hits if h.status == 204)
    refused = sum(1 for h in hits if h.status == 503)
    lost = len(set(owed) - set(ok))
    duplicates = sum(n - 1 for n in ok.values() if n > 1)
    after = sorted(h.arrival for h in hits if h.status == 204 and h.arrival >= up_wall)
    start = f"{after[0] - up_wall:.1f} s" if after else "-"
    drain = f"{drained:.1f} s" if drained is not None else "not drained in 300 s"
    print(
        f"  {refused:,} requests refused (503) while down; after the recovery: first delivery after {start} "
        f"(dead-callback probe, once a minute), outbox empty after {drain}"
    )
    if after:
        print(f"  backlog sent in {after[-1] - after[0]:.1f} s, first to last ({len(after):,} requests)")
    print(f"  lost: {lost} of {len(owed):,} (delivered at least once: {len(owed) - lost:,}); duplicates: {duplicates}")
    target("lost deliveries after the receiver was down", lost, 1, "messages")


def main() -> None:
    started = time.perf_counter()
    port = free_port()
    url_settings = _settings(temp_dir("heron-bench-delivery-url-"))
    batch_settings = _settings(temp_dir("heron-bench-delivery-batch-"))
    latency_settings = _settings(temp_dir("heron-bench-delivery-latency-"))
    down_settings = _settings(temp_dir("heron-bench-delivery-down-"))
    url_creds = _setup(url_settings, _url_callback(port), [(DRAIN_FIRST, DRAIN_FRAMES)])
    batch_creds = _setup(batch_settings, _batch_callback(port), [(DRAIN_FIRST, BATCH_FRAMES)])
    latency_creds = _setup(latency_settings, _url_callback(port), [(LATENCY_FIRST, LATENCY_DEVICES)])
    down_creds = _setup(down_settings, _url_callback(port), [(DOWN_FIRST, DOWN_FRAMES)])
    print(
        f"set-up: 4 SQLite databases (one per phase), "
        f"{DRAIN_FRAMES + LATENCY_DEVICES + DOWN_FRAMES + BATCH_FRAMES:,} "
        f"devices in {time.perf_counter() - started:.1f} s; 1 server worker, receiver and load generator in "
        f"processes of their own (uvloop) on the same {os.cpu_count()}-core machine"
    )
    receiver = Receiver(port, url_settings.data_dir / "receiver.log")
    try:
        if "1" in PHASES:
            print(f"1. URL: drain of a {DRAIN_FRAMES:,}-message outbox (one frame per device)")
            _drain(url_settings, url_creds, receiver, DRAIN_FRAMES, DRAIN_FIRST, batch=False)
        if "2" in PHASES:
            print(f"2. BATCH_URL: drain of a {BATCH_FRAMES:,}-message outbox")
            _drain(batch_settings, batch_creds, receiver, BATCH_FRAMES, DRAIN_FIRST, batch=True)
        if "3" in PHASES:
            print(
                f"3. URL latency at {LATENCY_RATE:.0f} frames/s for {LATENCY_SECONDS:.0f} s "
                f"({LATENCY_DEVICES:,} devices)"
            )
            _latency(latency_settings, latency_creds, receiver)
        if "4" in PHASES:
            print(
                f"4. receiver down {DOWN_SECONDS:.0f} s (HERON_BENCH_DOWN_SECONDS) during {DOWN_FRAMES:,} messages, "
                f"backoff 1 s base, 10 s max"
            )
            _down(down_settings, down_creds, receiver)
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
