"""A heavy request (a 100,000-row bulk call, a series file) must not hold the event loop: the
app is served by a real uvicorn server (one event loop, as in production; TestClient would run
each request in a thread of its own and hide a stall), and /api/health is asked while the heavy
work runs. The proof is an order of events, not a wall-time bound: a health request sent after
the heavy work began is answered before that work ends."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from heron.config import Settings
from heron.db.engine import Database
from heron.registry import bulk_jobs, devices, series_input
from heron.registry.devices import DeviceFields
from heron.runtime.context import AppContext
from heron.tenancy.access import SYSTEM
from tests.conftest import Tenants
from tests.support.served import sigfox_device_type, sigfox_type, uvicorn_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PAC = "A1B2C3D4E5F60718"
ROWS = 100_000
DEADLINE = 120.0  # seconds; generous for a loaded machine, only ever reached on failure


@pytest.fixture
def server(settings: Settings, ctx: AppContext) -> Iterator[tuple[str, int]]:
    with uvicorn_in_thread(settings, ctx) as port:
        yield "127.0.0.1", port


@pytest.fixture
def device_type(db: Database, tenants: Tenants) -> str:
    return sigfox_device_type(db, tenants.customer_a, "Bulk", max_tokens=10)


class Watched:
    """A service function wrapped to record when the server began and ended calling it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.began = threading.Event()
        self.began_at = 0.0
        self.ended_at: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.began_at = time.monotonic()
        self.began.set()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.ended_at = time.monotonic()


def raw_request(host: str, port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request over a plain socket (Connection: close); the whole answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(head.encode() + body)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def health_answered_while(watched: Watched, heavy: Callable[[], bytes], base: str) -> tuple[int, bytes]:
    """Run `heavy` in a thread; once the server is inside the watched work, ask /api/health
    until that work ends. The number of health answers received strictly inside the work, and
    the heavy request's own answer."""
    answer: list[bytes] = []
    worker = threading.Thread(target=lambda: answer.append(heavy()), daemon=True)
    worker.start()
    assert watched.began.wait(DEADLINE), "the heavy request never reached the watched work"
    inside = 0
    with httpx.Client(base_url=base, timeout=DEADLINE) as probe:
        while watched.ended_at is None:
            sent = time.monotonic()
            assert probe.get("/api/health").status_code == 200
            answered = time.monotonic()
            ended = watched.ended_at
            if sent >= watched.began_at and (ended is None or answered < ended):
                inside += 1
    worker.join(DEADLINE)
    assert answer, "the heavy request got no answer"
    return inside, answer[0]


def test_health_is_answered_while_a_100000_row_bulk_create_is_submitted(
    server: tuple[str, int], tenants: Tenants, device_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = server
    watched = Watched(bulk_jobs.prepare_create)
    monkeypatch.setattr(bulk_jobs, "prepare_create", watched)
    body = json.dumps(
        {"deviceTypeId": device_type, "data": [{"id": f"{0x100000 + i:X}", "pac": PAC} for i in range(ROWS)]}
    )
    headers = tenants.a_admin.headers | {"content-type": "application/json"}

    def heavy() -> bytes:
        return raw_request(host, port, "POST", "/api/v2/devices/bulk", headers, body.encode())

    inside, answer = health_answered_while(watched, heavy, f"http://{host}:{port}")
    assert status_of(answer) == 200, answer[-500:]
    assert b'"total":100000' in answer
    assert inside >= 1, "no health request was answered while the bulk rows were checked and stored"


def test_health_is_answered_while_a_100000_line_series_file_is_parsed(
    server: tuple[str, int], tenants: Tenants, device_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = server
    watched = Watched(series_input.new_series)
    monkeypatch.setattr(series_input, "new_series", watched)
    text = "id;pac\n" + "".join(f"{0x200000 + i:X};{PAC}\n" for i in range(ROWS))
    boundary = "heronboundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    headers = tenants.a_admin.headers | {"content-type": f"multipart/form-data; boundary={boundary}"}

    def heavy() -> bytes:
        return raw_request(
            host, port, "POST", f"/api/v2/devices/bulk/series/new?deviceTypeId={device_type}", headers, form
        )

    inside, answer = health_answered_while(watched, heavy, f"http://{host}:{port}")
    assert status_of(answer) == 200, answer[-500:]
    assert inside >= 1, "no health request was answered while the series file was parsed"


def test_station_ingest_is_answered_while_a_100000_row_bulk_create_is_prepared(
    server: tuple[str, int], db: Database, ctx: AppContext, tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the event loop nor (on SQLite) the one write lock is held while 100,000 rows are
    checked and their PACs sealed: a station's frames are stored and acknowledged meanwhile."""
    host, port = server
    base = f"http://{host}:{port}"
    r = httpx.post(
        base + "/api/v2/base-stations",
        json={"id": "1E6AB", "groupId": str(tenants.operator), "name": "North", "lat": 45.5, "lng": 4.25},
        headers=tenants.root_admin.headers,
    )
    assert r.status_code == 201, r.text
    station = base64.b64encode(f"{r.json()['id']}:{r.json()['secret']}".encode()).decode()
    with db.write() as s:
        dt = sigfox_type(s, tenants.customer_a, "Meters", max_tokens=10)
        devices.create_sigfox(
            s,
            SYSTEM,
            ctx.keyring,
            identifier="1001",
            pac=PAC,
            device_type_id=dt.device_type.id,
            fields=DeviceFields(name="Meter"),
        )
        device_type_id = str(dt.device_type.id)
    watched = Watched(bulk_jobs.prepare_create)
    monkeypatch.setattr(bulk_jobs, "prepare_create", watched)
    rows = [{"id": f"{0x100000 + i:X}", "pac": PAC} for i in range(ROWS)]
    body = json.dumps({"deviceTypeId": device_type_id, "data": rows}).encode()
    headers = tenants.a_admin.headers | {"content-type": "application/json"}
    answer: list[bytes] = []
    worker = threading.Thread(
        target=lambda: answer.append(raw_request(host, port, "POST", "/api/v2/devices/bulk", headers, body)),
        daemon=True,
    )
    worker.start()
    assert watched.began.wait(DEADLINE), "the bulk request never reached its preparation"
    inside, seq = 0, 0
    with httpx.Client(base_url=base, timeout=DEADLINE) as radio:
        while watched.ended_at is None:
            sent = time.monotonic()
            frame = {"device": "1001", "seqNumber": seq, "data": "0A0B", "rssi": -120.0, "snr": 12.5, "freq": 868130000}
            got = radio.post(
                "/ingest/sigfox", json={"receptions": [frame]}, headers={"authorization": "Basic " + station}
            )
            assert got.status_code == 200 and got.json() == {"accepted": 1}, got.text
            answered, ended = time.monotonic(), watched.ended_at
            if sent >= watched.began_at and (ended is None or answered < ended):
                inside += 1
            seq += 1
    worker.join(DEADLINE)
    assert answer and status_of(answer[0]) == 200, answer[-1][-300:] if answer else "no answer"
    assert inside >= 1, "no station frame was acknowledged while the bulk rows were prepared"


# -- an over-limit upload is refused from its head, not after reading it all -----------------------
def refused_from_head(host: str, port: int, path: str, headers: dict[str, str], length: int, first: bytes) -> bytes:
    """Announce `length` bytes, send only `first`, and read the answer: a server that waits for
    the rest never answers (the read times out)."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode() + first)
        try:
            return _read_all(sock)
        except TimeoutError:
            pytest.fail("the server waited for the rest of an upload it should have refused from its head")


def error_of(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body


def test_an_upload_over_the_limit_is_refused_from_its_content_length(
    server: tuple[str, int], tenants: Tenants, device_type: str
) -> None:
    host, port = server
    too_big = series_input.MAX_BYTES + 1024 * 1024
    series = f"/api/v2/devices/bulk/series/new?deviceTypeId={device_type}"
    for kind in ("text/plain", "multipart/form-data; boundary=b"):
        answer = refused_from_head(
            host, port, series, tenants.a_admin.headers | {"content-type": kind}, too_big, b"1;" + PAC.encode()
        )
        assert status_of(answer) == 400, answer[:300]
        assert error_of(answer)["errors"][0]["field"] == "file"
    answer = refused_from_head(
        host,
        port,
        "/api/v2/devices/bulk",
        tenants.a_admin.headers | {"content-type": "application/json"},
        too_big,
        b'{"deviceTypeId":"' + device_type.encode() + b'","data":[',
    )
    assert status_of(answer) == 400, answer[:300]
    assert error_of(answer)["errors"][0]["field"] == "data"


def test_a_binary_series_file_is_refused_from_its_first_bytes(
    server: tuple[str, int], tenants: Tenants, device_type: str
) -> None:
    """A file that is not text is known from its first chunk: the rest is never read."""
    host, port = server
    first = b"\x00\x01\x02" * 30_000
    answer = refused_from_head(
        host,
        port,
        f"/api/v2/devices/bulk/series/new?deviceTypeId={device_type}",
        tenants.a_admin.headers | {"content-type": "text/plain"},
        10 * 1024 * 1024,
        first,
    )
    assert status_of(answer) == 400, answer[:300]
    error = error_of(answer)["errors"][0]
    assert error["field"] == "file" and "binary" in error["message"]
