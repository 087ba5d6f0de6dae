"""Callbacks end to end on both databases: frames in through the real ingest endpoint, requests
out to a real HTTP receiver on 127.0.0.1, driven round by round with an injected clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import DONE, FAILED, PENDING, Callback, Delivery
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["radio"]  # the fixture, imported for this module's tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback opened for the receiver; no background worker: each test runs the rounds."""
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.0/8", "run_deliveries": False})


class Receiver:
    """A real HTTP server recording what it gets; `status` is what it answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer: Any = None  # a JSON value (or text) to answer with
        self.delay = 0.0  # seconds before answering
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if receiver.delay:
                    time.sleep(receiver.delay)
                answer = receiver.answer
                payload = (
                    b""
                    if answer is None or receiver.status == 204
                    else (answer.encode() if isinstance(answer, str) else json.dumps(answer).encode())
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(payload)))
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def clock(client: TestClient) -> Clock:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    ctx.uplinks.clock = ctx.deliveries.clock = fake
    return fake


def rounds(client: TestClient) -> int:
    return int(client.app.state.ctx.deliveries.run_once())  # type: ignore[attr-defined]


BODY = (
    '{"device": "{device}", "data": "{data}", "seq": {seqNumber}, "station": "{station}", '
    '"rssi": {rssi}, "snr": "{snr}", "time": {time}, "temp": {customData#temp}}'
)


def make_callback(client: TestClient, tenants: Tenants, radio: Radio, **fields: Any) -> str:
    body = {
        "channel": "URL",
        "callbackType": 0,
        "callbackSubtype": 2,
        "enabled": True,
        "httpMethod": "POST",
        "contentType": "application/json",
        "payloadConfig": "temp::uint:8",
    } | fields
    r = client.post(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks", json=body, headers=tenants.a_admin.headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def failing_callback(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock, *, status: int, frames: int
) -> str:
    """A URL callback whose receiver answers `status`, owed `frames` messages (seq 1, 2, ...,
    sent 2 s apart by the first station)."""
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = status
    for seq in range(1, frames + 1):
        send(client, radio.stations[0], frame(seq=seq))
        clock.now += timedelta(seconds=2)
    return cb_id


def is_dead(db: Database, cb_id: str) -> bool:
    with db.read() as s:
        cb = s.get(Callback, int(cb_id))
        assert cb is not None
        return cb.dead


def test_a_data_callback_fires_when_the_dedup_window_closes_with_every_reception(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(
        client,
        tenants,
        radio,
        url=receiver.url + "/up/{device}?seq={seqNumber}",
        bodyTemplate=BODY,
        headers={"X-Api-Key": "secret-{device}"},
    )
    north, south, _ = radio.stations
    send(client, north, frame(rssi=-121.5, snr=7.0, data="17ff"))
    send(client, south, frame(rssi=-110.25, snr=12.0, data="17ff"))
    assert rounds(client) == 0  # the window is still open
    clock.now += timedelta(seconds=1.01)
    assert rounds(client) == 1
    [req] = receiver.requests
    assert req["method"] == "POST" and req["path"] == "/up/1001?seq=7"
    assert req["headers"]["X-Api-Key"] == "secret-1001"
    assert req["headers"]["Content-Type"] == "application/json"
    assert len(req["headers"]["webhook-id"]) == 32 and "webhook-signature" not in req["headers"]
    assert json.loads(req["body"]) == {
        "device": "1001",
        "data": "17ff",
        "seq": 7,
        "station": "2B",  # the best reception
        "rssi": -110.25,
        "snr": "12.00",
        "time": int((clock.now - timedelta(seconds=1.01)).timestamp()),
        "temp": 23,
    }
    assert rounds(client) == 0  # delivered once
    # The message shows where its callbacks stand.
    [msg] = client.get("/api/v2/devices/1001/messages", headers=tenants.a_admin.headers).json()["data"]
    assert [(c["event"], c["state"], c["status"]) for c in msg["callbacks"]] == [("UPLINK", "DONE", 200)]
    assert msg["rinfos"][0]["cbStatus"][0]["status"] == 200 and msg["rinfos"][1]["cbStatus"] == []


def test_requests_are_signed_when_the_callback_has_a_signing_secret(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY, signingSecret="whsec_" + key)
    send(client, radio.stations[0], frame())
    clock.now += timedelta(seconds=2)
    rounds(client)
    [req] = receiver.requests
    h = req["headers"]
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + req["body"]
    expected = base64.b64encode(hmac.new(b"k" * 32, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == "v1," + expected


def test_receiver_down_then_back_delivers_every_message_once_in_order(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = failing_callback(client, tenants, radio, receiver, clock, status=503, frames=5)
    # Down: only the oldest is tried (order per callback and device), with growing pauses,
    # until the callback is dead; then a probe per minute.
    for _ in range(12):
        rounds(client)
        clock.now += timedelta(minutes=31)
    assert is_dead(db, cb_id)
    assert {json.loads(r["body"])["seq"] for r in receiver.requests} == {1}
    listed = client.get(f"/api/v2/device-types/{radio.device_type_id}/callbacks", headers=tenants.a_admin.headers)
    assert listed.json()["data"][0]["dead"] is True
    # Back: the next probe succeeds, the callback revives and its backlog goes out in order.
    receiver.status = 200
    for _ in range(6):
        rounds(client)
    ok = [json.loads(r["body"])["seq"] for r in receiver.requests if r is not None]
    delivered = ok[ok.index(1, len(ok) - 5) :] if ok.count(1) > 1 else ok
    assert delivered[-5:] == [1, 2, 3, 4, 5]
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    first_key = ids[0]
    assert all(i == first_key for i, r in zip(ids, receiver.requests, strict=True) if json.loads(r["body"])["seq"] == 1)
    with db.read() as s:
        assert {d.state for d in s.scalars(select(Delivery))} == {DONE}
        cb = s.get(Callback, int(cb_id))
        assert cb is not None and not cb.dead and cb.failures == 0


def test_a_delivery_failing_past_the_give_up_age_is_failed(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = 500
    send(client, radio.stations[0], frame())
    for _ in range(200):
        clock.now += timedelta(minutes=31)
        rounds(client)
        with db.read() as s:
            state = s.scalar(select(Delivery.state))
        if state != PENDING:
            break
    assert state == FAILED
    with db.read() as s:
        d = s.scalar(select(Delivery))
        assert d is not None and d.last_status == 500 and d.last_error == "HTTP 500"
        assert d.last_attempt_at is not None and d.last_attempt_at - d.created_at >= timedelta(hours=48)


def test_a_callback_to_a_literal_forbidden_address_is_refused_on_save(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    """Link-local (cloud metadata) is refused whatever the allow-list says; more cases, and the
    send-time refusal of a name, in test_refused_destinations.py."""
    body = {"channel": "URL", "callbackType": 0, "callbackSubtype": 2, "enabled": True, "httpMethod": "GET"}
    r = client.post(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks",
        json=body | {"url": "http://169.254.169.254/latest"},
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert error["field"] == "url" and "169.254.169.254" in error["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"bodyTemplate": '{"x": "{lqi}"}'}, "bodyTemplate"),  # lqi is DATA_ADVANCED only
        ({"bodyTemplate": '{"x": {device}'}, "bodyTemplate"),  # not JSON
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://example.com/{nope}"}, "url"),
        ({"httpMethod": "DELETE"}, "httpMethod"),
        ({"headers": {"Content-Length": "3"}}, "headers"),
        ({"callbackSubtype": 0}, "callbackSubtype"),
        ({"channel": "SMS"}, "channel"),
        ({"contentType": "application/xml"}, "contentType"),
        ({"payloadConfig": "door::bool:9"}, "payloadConfig"),
        ({"callbackType": 1, "callbackSubtype": 6, "contentType": "text/plain", "payloadConfig": None}, "bodyTemplate"),
        ({"channel": "EMAIL", "recipient": "ops\x85x@example.com", "subject": "s", "message": "m"}, "recipient"),
        (
            {"channel": "EMAIL", "recipient": "ops@example.com, not an address", "subject": "s", "message": "m"},
            "recipient",
        ),
    ],
)
def test_a_callback_that_would_not_render_is_refused_naming_the_field(
    client: TestClient, tenants: Tenants, radio: Radio, fields: dict[str, Any], field: str
) -> None:
    body = {
        "channel": "URL",
        "callbackType": 0,
        "callbackSubtype": 2,
        "enabled": True,
        "url": "https://example.com/hook",
        "httpMethod": "POST",
        "contentType": "application/json",
        "bodyTemplate": '{"d": "{device}"}',
    } | fields
    r = client.post(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks", json=body, headers=tenants.a_admin.headers
    )
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"].startswith(field), r.json()


def test_callback_secrets_are_masked_when_read_and_kept_when_sent_back(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    url = receiver.url.replace("http://", "http://user:p%40ss@") + "/hook"
    cb_id = make_callback(client, tenants, radio, url=url, bodyTemplate=BODY, headers={"X-Token": "t0ps3cret"})
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks"
    [shown] = client.get(base, headers=tenants.a_admin.headers).json()["data"]
    assert shown["headers"] == {"X-Token": "****"} and "p%40ss" not in shown["url"] and "****@" in shown["url"]
    # Sending the masked values back changes nothing.
    r = client.put(
        f"{base}/{cb_id}", json={"headers": shown["headers"], "url": shown["url"]}, headers=tenants.a_admin.headers
    )
    assert r.status_code == 204, r.text
    with db.read() as s:
        raw = s.get(Callback, int(cb_id))
        assert raw is not None and "t0ps3cret" not in (raw.headers or "") and "p%40ss" not in (raw.url or "")
    send(client, radio.stations[0], frame())
    clock.now += timedelta(seconds=2)
    rounds(client)
    [req] = receiver.requests
    assert req["headers"]["X-Token"] == "t0ps3cret"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"user:p%40ss").decode()


def test_disabled_callbacks_owe_nothing_and_other_tenants_see_no_callbacks(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks"
    assert client.put(f"{base}/{cb_id}/enable?enabled=false", headers=tenants.a_admin.headers).status_code == 204
    send(client, radio.stations[0], frame())
    with db.read() as s:
        assert s.scalar(select(Delivery.id)) is None
    assert client.get(base, headers=tenants.b_admin.headers).status_code == 404
    assert client.delete(f"{base}/{cb_id}", headers=tenants.b_admin.headers).status_code == 404
