"""A Sigfox radio network in a box: simulated devices whose frames are heard by simulated base
stations, each posting its receptions to the real `POST /ingest/sigfox` over HTTP. For trying a
Heron by hand (`heron simulate sigfox`), for end-to-end tests, and for the ingest benchmark.

A frame is one (device, sequence number); it is heard by 1 to K stations, and each station
reports its own reception (its RSSI, SNR, frequency) in its own requests, batched per station.
Sequence numbers step by one per device and wrap at 4096, as a device's do. `run` paces the
frames to a rate, with back-pressure: a station whose requests fall behind slows the radio
down instead of queueing without bound. Protocol: docs/INGEST.md."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

SEQ_MODULO = 4096
MAX_BATCH = 20  # receptions per request and station
RC1_CENTRE_HZ = 868_130_000  # Sigfox RC1 uplink band: 868.034-868.226 MHz
_TICK = 0.05  # seconds between pacing steps; also the longest a partial batch waits
_ERROR_SAMPLES = 5


class SimulationError(Exception):
    """The simulation could not be set up (stations or devices not created); says why."""


@dataclass(frozen=True)
class StationCredential:
    """A base station's ingest credential (HTTP Basic: station id, secret)."""

    id: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> StationCredential:
        ident, sep, secret = text.partition(":")
        if not sep or not ident or not secret:
            raise ValueError(f"a station credential is ID:SECRET, got {text!r}")
        return cls(ident, secret)

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()


@dataclass(frozen=True)
class Plan:
    """What to simulate: who sends, who hears, how fast and for how long."""

    url: str
    stations: Sequence[StationCredential]
    devices: Sequence[str]  # Sigfox device ids, hex
    rate: float = 10.0  # frames per second, at most
    duration: float = 10.0  # seconds
    heard_by: tuple[int, int] = (1, 3)  # stations per frame, min and max (capped to len(stations))
    clients_per_station: int = 4  # concurrent HTTP requests per station
    batch: int = MAX_BATCH  # receptions per request, at most
    ack_ratio: float = 0.1  # DATA frames asking for a downlink
    keepalive_ratio: float = 0.02  # KEEPALIVE frames (battery, temperature, no payload)
    first_seq: int | None = None  # every device's first sequence number; None: random per device
    seed: int | None = None
    timeout: float = 30.0  # seconds per request

    def check(self) -> None:
        if not self.stations:
            raise ValueError("at least one station is needed")
        if not self.devices:
            raise ValueError("at least one device is needed")
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("rate and duration must be positive")
        low, high = self.heard_by
        if not 1 <= low <= high:
            raise ValueError("heard_by must be 1 <= min <= max")
        if low > len(self.stations):
            raise ValueError(f"frames heard by {low} stations need at least {low} stations")
        if not 1 <= self.batch <= 1000 or self.clients_per_station < 1:
            raise ValueError("batch must be 1 to 1000 and clients_per_station at least 1")


@dataclass
class Stats:
    """What a run did. `frames` counts frames whose every reception was accepted (200)."""

    frames: int = 0
    receptions: int = 0
    requests: int = 0
    errors: int = 0  # requests refused or failed
    failed_frames: int = 0  # frames with at least one reception in a failed request
    skipped_frames: int = 0  # not generated: the run fell behind its rate (a slow server or machine)
    elapsed: float = 0.0
    cpu_seconds: float = 0.0  # this process's, for telling a slow server from a slow client
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)  # per device, of the last frame generated

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.elapsed if self.elapsed else 0.0

    def latency_ms(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "receptions": self.receptions,
            "requests": self.requests,
            "errors": self.errors,
            "failedFrames": self.failed_frames,
            "framesSkipped": self.skipped_frames,
            "seconds": round(self.elapsed, 3),
            "framesPerSecond": round(self.frames_per_second, 1),
            "latencyMs": {"p50": _round(self.latency_ms(50)), "p99": _round(self.latency_ms(99))},
            "clientCpuPercent": round(100 * self.cpu_seconds / self.elapsed, 1) if self.elapsed else 0.0,
            "errorSamples": self.error_samples,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def device_ids(first: int, count: int) -> list[str]:
    """`count` consecutive Sigfox ids from `first`, as Heron normalizes them."""
    if first < 0 or first + count - 1 > 0xFFFFFFFF:
        raise ValueError("device ids are 1 to 8 hex digits")
    return [f"{first + i:X}" for i in range(count)]


# -- the radio -------------------------------------------------------------------------------------
@dataclass
class _Frame:
    remaining: int  # receptions not yet accepted
    failed: bool = False


class _Radio:
    """Makes frames and the receptions each station reports of them."""

    def __init__(self, plan: Plan, rng: random.Random) -> None:
        self.plan, self.rng = plan, rng
        self.seq = {
            d: plan.first_seq % SEQ_MODULO if plan.first_seq is not None else rng.randrange(SEQ_MODULO)
            for d in plan.devices
        }
        self.next_device = 0
        self.high = min(plan.heard_by[1], len(plan.stations))
        self.low = min(plan.heard_by[0], self.high)

    def frame(self) -> tuple[str, int, list[int], dict[str, Any]]:
        """(device, seq, hearing station indexes, the fields every reception shares)."""
        rng, plan = self.rng, self.plan
        device = plan.devices[self.next_device]
        self.next_device = (self.next_device + 1) % len(plan.devices)
        seq = self.seq[device]
        self.seq[device] = (seq + 1) % SEQ_MODULO
        common: dict[str, Any] = {"device": device, "seqNumber": seq}
        if rng.random() < plan.keepalive_ratio:
            common |= {
                "frameType": "KEEPALIVE",
                "battery": round(rng.uniform(2.8, 3.6), 2),
                "temperature": round(rng.uniform(-10, 40), 1),
            }
        else:
            common["data"] = rng.randbytes(rng.randint(0, 12)).hex()
            if rng.random() < plan.ack_ratio:
                common["ackRequired"] = True
        common["rep"] = rng.randint(1, 3)
        heard = rng.sample(range(len(plan.stations)), rng.randint(self.low, self.high))
        return device, seq, heard, common

    def reception(self, common: dict[str, Any], base_freq: float, now_ms: int) -> dict[str, Any]:
        rng = self.rng
        return common | {
            "time": now_ms + rng.randint(0, 40),
            "rssi": round(rng.uniform(-142.0, -90.0), 2),
            "snr": round(rng.uniform(0.5, 30.0), 2),
            "freq": round(base_freq + rng.uniform(-200, 200)),  # each station's own offset estimate
        }


# -- the run ---------------------------------------------------------------------------------------
_Batch = list[tuple[dict[str, Any], _Frame]]


async def run(plan: Plan, stop: asyncio.Event | None = None) -> Stats:
    """Send frames as `plan` says until its duration is over or `stop` is set, wait for the
    requests under way, and return what happened."""
    plan.check()
    stop = stop or asyncio.Event()
    rng = random.Random(plan.seed)
    radio = _Radio(plan, rng)
    stats = Stats()
    queues: list[asyncio.Queue[_Batch | None]] = [
        asyncio.Queue(maxsize=2 * plan.clients_per_station) for _ in plan.stations
    ]
    # One keep-alive connection per station client, spoken raw (see `_Connection`).
    clients = [_Connection(plan.url, plan.timeout) for _ in range(len(plan.stations) * plan.clients_per_station)]
    cpu0 = _cpu()
    workers = [
        asyncio.create_task(_station_client(clients[i * plan.clients_per_station + j], station, queue, stats))
        for i, (station, queue) in enumerate(zip(plan.stations, queues, strict=True))
        for j in range(plan.clients_per_station)
    ]
    start = time.perf_counter()
    try:
        await _generate(plan, radio, queues, stats, stop, start)
    finally:
        for queue in queues:
            for _ in range(plan.clients_per_station):
                await queue.put(None)
        await asyncio.gather(*workers)
        stats.elapsed = time.perf_counter() - start
        for client in clients:
            client.close()
    stats.cpu_seconds = _cpu() - cpu0
    stats.last_seq = {d: (s - 1) % SEQ_MODULO for d, s in radio.seq.items()}
    return stats


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _generate(
    plan: Plan,
    radio: _Radio,
    queues: list[asyncio.Queue[_Batch | None]],
    stats: Stats,
    stop: asyncio.Event,
    start: float,
) -> None:
    buffers: list[_Batch] = [[] for _ in queues]
    made = 0
    deadline = start + plan.duration
    while not stop.is_set():
        now = time.perf_counter()
        if now >= deadline:
            # What the rate owed by the end and was not generated (the last step's share, or
            # a step held up by back-pressure past the end) was skipped: frames generated plus
            # skipped is exactly rate x duration, however slow the machine.
            stats.skipped_frames += max(0, int(plan.duration * plan.rate) - made)
            break
        due = int((now - start) * plan.rate) - made
        burst = max(1, int(plan.rate * _TICK))
        if due > burst:  # fell behind (back-pressure): do not burst to catch up
            made += due - burst
            stats.skipped_frames += due - burst
            due = burst
        now_ms = int(time.time() * 1000)
        for n in range(due):
            if n % 64 == 63 and (stop.is_set() or time.perf_counter() >= deadline):
                stats.skipped_frames += due - n
                break  # back-pressure made this step long: the run is over
            _device, _seq, heard, common = radio.frame()
            frame = _Frame(len(heard))
            base_freq = RC1_CENTRE_HZ + radio.rng.uniform(-90_000, 90_000)
            for s in heard:
                buffers[s].append((radio.reception(common, base_freq, now_ms), frame))
                if len(buffers[s]) >= plan.batch:
                    await queues[s].put(buffers[s])
                    buffers[s] = []
        made += due
        for s, buffer in enumerate(buffers):
            if buffer:
                await queues[s].put(buffer)
                buffers[s] = []
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(_TICK, remaining))


class HttpFailure(Exception):
    """A request that got no HTTP answer (connection refused or broken, timeout, garbage)."""


class _Connection:
    """One HTTP/1.1 keep-alive connection posting ingest requests, on raw asyncio streams: the
    request head is built once per station, the answer's status and body read by hand. An HTTP
    client library cost the load generator several times the server's parsing of the same
    request, and the load generator shares the machine with the server it measures."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the ingest URL must be http(s)://host[:port][/prefix], got {url!r}")
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path.rstrip("/") + "/ingest/sigfox"
        authority = self.host if parts.port is None else f"{self.host}:{self.port}"
        self.host_header = authority.encode()
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def head(self, authorization: str) -> bytes:
        """The request head up to the Content-Length value, for one credential."""
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host_header.decode()}\r\nAuthorization: {authorization}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one request; raises HttpFailure (the connection is dropped)."""
        try:
            return await asyncio.wait_for(self._exchange(head, body), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise HttpFailure(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, ssl=True if self.tls else None)
        reader, writer = self._streams
        writer.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        answer = await reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        length, chunked, close = 0, False, False
        for line in answer.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            content = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                content += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        else:
            content = await reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, content

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _station_client(
    http: _Connection, station: StationCredential, queue: asyncio.Queue[_Batch | None], stats: Stats
) -> None:
    head = http.head(station.authorization)
    while (batch := await queue.get()) is not None:
        body = json.dumps({"receptions": [r for r, _ in batch]}, separators=(",", ":")).encode()
        began = time.perf_counter()
        problem = None
        try:
            status, answer = await http.post(head, body)
            if status != 200:
                problem = f"HTTP {status}: {answer[:200].decode(errors='replace')}"
        except HttpFailure as exc:
            problem = str(exc)
        stats.requests += 1
        if problem is None:
            stats.latencies.append(time.perf_counter() - began)
            stats.receptions += len(batch)
        else:
            stats.errors += 1
            if len(stats.error_samples) < _ERROR_SAMPLES:
                stats.error_samples.append(problem)
        for _, frame in batch:
            frame.remaining -= 1
            if problem is not None and not frame.failed:
                frame.failed = True
                stats.failed_frames += 1
            if frame.remaining == 0 and not frame.failed:
                stats.frames += 1


# -- setting up through the API --------------------------------------------------------------------
def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise SimulationError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json() if response.content else {}
    return data


async def create_stations(
    http: httpx.AsyncClient, group_id: str, identifiers: Sequence[str]
) -> list[StationCredential]:
    """Create the stations in `group_id` (`http` carries an API key with base_station:write);
    a station that exists already gets a new secret instead, so a second run works too."""
    made = []
    rng = random.Random()
    for i, ident in enumerate(identifiers):
        body = {
            "id": ident,
            "groupId": group_id,
            "name": f"Simulated station {ident}",
            "lat": round(45.75 + rng.uniform(-0.2, 0.2), 5),
            "lng": round(4.85 + rng.uniform(-0.3, 0.3), 5),
        }
        r = await http.post("/api/v2/base-stations", json=body)
        if r.status_code == 409:
            r = await http.put(f"/api/v2/base-stations/{ident}/renew-credential")
            data = _check(r, f"renewing the secret of station {ident}")
        else:
            data = _check(r, f"creating station {ident} (station {i + 1} of {len(identifiers)})")
        made.append(StationCredential(ident, data["secret"]))
    return made


@dataclass
class Registration:
    job_id: str
    registered: int
    existing: int  # ids already registered (a second run)
    errors: list[str]


async def register_devices(
    http: httpx.AsyncClient, device_type_id: str, identifiers: Sequence[str], *, poll: float = 0.2, timeout: float = 600
) -> Registration:
    """Register the devices in a device type with one native bulk job (random PACs), and wait
    for the job to finish."""
    rng = random.Random()
    rows = [{"id": ident, "pac": rng.randbytes(8).hex().upper()} for ident in identifiers]
    data = _check(
        await http.post("/api/v2/devices/bulk", json={"deviceTypeId": device_type_id, "data": rows}),
        "submitting the bulk registration",
    )
    job_id = str(data["jobId"])
    deadline = time.monotonic() + timeout
    while True:
        status = _check(await http.get(f"/api/v2/devices/bulk/{job_id}"), f"reading bulk job {job_id}")
        if status.get("jobDone"):
            break
        if time.monotonic() > deadline:
            raise SimulationError(f"bulk job {job_id} not done after {timeout:.0f} s")
        await asyncio.sleep(poll)
    errors = [f"{e.get('entity')}: {e.get('message')}" for e in status["status"]["errors"]]
    existing = [e for e in errors if e.endswith("already exists")]
    others = [e for e in errors if not e.endswith("already exists")]
    return Registration(job_id, int(status["status"]["success"]), len(existing), others)
