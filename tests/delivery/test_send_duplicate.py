"""`sendDuplicate` end to end on both databases: a frame heard by several stations through the real
ingest, a callback that asks for duplicates called once more per other station in the dedup
window (that station's values, `duplicate` true) by a real HTTP receiver (or SMTP server) on
127.0.0.1, driven round by round with an injected clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import DONE, PENDING, Delivery
from tests.conftest import Tenants
from tests.delivery.test_channels import Inbox, inbox, outbox_settings
from tests.delivery.test_outbox import Receiver, make_callback, receiver, rounds
from tests.downlink.test_downlinks import clock
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["clock", "inbox", "radio", "receiver"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BODY = (
    '{"seq": {seqNumber}, "station": "{station}", "rssi": {rssi}, "snr": {snr}, '
    '"lat": {lat}, "lng": {lng}, "duplicate": {duplicate}}'
)


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Settings:
    return outbox_settings(settings, inbox, downlink_answer_timeout_seconds=1.0)


def heard_by_three(client: TestClient, radio: Radio, device: str = "1001", seq: int = 7, **extra: Any) -> None:
    north, south, east = radio.stations
    send(client, north, frame(device, seq, rssi=-121.5, snr=7.0, **extra))
    send(client, south, frame(device, seq, rssi=-110.25, snr=12.0, **extra))  # the best
    send(client, east, frame(device, seq, rssi=-130.0, snr=3.5, **extra))


def drain(client: TestClient) -> list[int]:
    """Rounds until one sends nothing; how many each sent."""
    counts = []
    while (n := rounds(client)) and len(counts) < 20:
        counts.append(n)
    return counts


def deliveries(db: Database) -> list[Delivery]:
    with db.read() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


def move_east(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    r = client.put(
        f"/api/v2/base-stations/{radio.stations[2].id}",
        json={"lat": 48.25, "lng": 2.5},
        headers=tenants.root_admin.headers,
    )
    assert r.status_code == 204, r.text


def test_a_send_duplicate_callback_gets_one_more_call_per_other_station_with_its_values(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    move_east(client, tenants, radio)
    make_callback(client, tenants, radio, url=receiver.url + "/dup", bodyTemplate=BODY, sendDuplicate=True)
    make_callback(client, tenants, radio, url=receiver.url + "/plain", bodyTemplate=BODY)
    heard_by_three(client, radio)
    clock.now += timedelta(seconds=1.01)
    # The normal calls first; the copies wait behind theirs (order per callback and device).
    assert drain(client) == [2, 1, 1]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for req in receiver.requests:
        by_path.setdefault(req["path"], []).append(req)
    [plain] = by_path["/plain"]
    best = {"seq": 7, "station": "2B", "rssi": -110.25, "snr": 12.0, "lat": 45.5, "lng": 4.25}
    assert json.loads(plain["body"]) == best | {"duplicate": False}
    assert [json.loads(r["body"]) for r in by_path["/dup"]] == [
        best | {"duplicate": False},
        {"seq": 7, "station": "1E6AB", "rssi": -121.5, "snr": 7.0, "lat": 45.5, "lng": 4.25, "duplicate": True},
        {"seq": 7, "station": "C0FFEE", "rssi": -130.0, "snr": 3.5, "lat": 48.25, "lng": 2.5, "duplicate": True},
    ]
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == 4
    # Nothing left owed.
    r = client.get(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered", headers=tenants.a_admin.headers
    )
    assert r.json()["data"] == []


def test_a_message_shows_its_copies_marked_with_their_station_and_under_their_reception(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    """A copy is a call of its own that can fail: the message lists it (`duplicate`, `station`),
    and Sigfox's `cbStatus` shows it in the `rinfos` entry of the station it was made for."""
    dup = make_callback(client, tenants, radio, url=receiver.url + "/dup", bodyTemplate=BODY, sendDuplicate=True)
    plain = make_callback(client, tenants, radio, url=receiver.url + "/plain", bodyTemplate=BODY)
    heard_by_three(client, radio)
    clock.now += timedelta(seconds=1.01)
    assert (rounds(client), rounds(client)) == (2, 1)  # the calls, then 1E6AB's copy
    receiver.status = 503
    assert rounds(client) == 1  # C0FFEE's copy fails, to be retried
    [msg] = client.get("/api/v2/devices/1001/messages", headers=tenants.a_admin.headers).json()["data"]
    # `station` names a copy's station; a call that is no copy has none (absent).
    calls = [(c["callbackId"], c["duplicate"], c.get("station"), c["state"], c["status"]) for c in msg["callbacks"]]
    assert [c for c in msg["callbacks"] if not c["duplicate"] and "station" in c] == []
    assert calls == [
        (dup, False, None, DONE, 200),
        (plain, False, None, DONE, 200),
        (dup, True, "1E6AB", DONE, 200),
        (dup, True, "C0FFEE", PENDING, 503),
    ]
    cb_status = [
        (r["baseStation"]["id"], [(c["status"], c["cbDef"].rpartition("/")[2]) for c in r["cbStatus"]])
        for r in msg["rinfos"]
    ]
    assert cb_status == [
        ("1E6AB", [(200, "dup"), (200, "plain"), (200, "dup")]),  # the first reception: the calls, and its copy
        ("2B", []),  # the best reception: the calls carried it
        ("C0FFEE", [(503, "dup")]),
    ]


def test_a_reception_after_the_dedup_window_is_no_duplicate(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(client, tenants, radio, url=receiver.url + "/dup", bodyTemplate=BODY, sendDuplicate=True)
    north, south, east = radio.stations
    send(client, north, frame(rssi=-121.5))
    send(client, south, frame(rssi=-110.25))
    clock.now += timedelta(seconds=1.01)
    send(client, east, frame(rssi=-100.0))  # late: stored before the claim, still DATA_ADVANCED's only
    assert drain(client) == [1, 1]
    assert [(b["station"], b["duplicate"]) for b in receiver.bodies()] == [("2B", False), ("1E6AB", True)]
    clock.now += timedelta(seconds=5)
    send(client, north, frame(seq=8))  # the next frame, heard once: no copy
    clock.now += timedelta(seconds=1.01)
    assert drain(client) == [1]
    assert [(d.event, d.duplicate_of is not None, d.state) for d in deliveries(db)] == [
        ("UPLINK", False, DONE),
        ("UPLINK", True, DONE),
        ("UPLINK", False, DONE),
    ]


def test_copies_are_owed_once_whatever_the_failures_and_restarts_and_keep_their_webhook_ids(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(client, tenants, radio, url=receiver.url + "/dup", bodyTemplate=BODY, sendDuplicate=True)
    heard_by_three(client, radio)
    clock.now += timedelta(seconds=1.01)
    # A worker claims, then dies before sending: the claim's copies are committed with its lease.
    worker = client.app.state.ctx.deliveries  # type: ignore[attr-defined]
    assert [len(batch) for batch in worker._claim(clock.now)] == [1]
    rows = deliveries(db)
    assert [(d.duplicate_of, d.state, d.attempts) for d in rows] == [
        (None, PENDING, 0),
        (rows[0].id, PENDING, 0),
        (rows[0].id, PENDING, 0),
    ]
    keys = [d.key for d in rows]
    # The lease runs out; the next claim takes the delivery again and owes no second copy.
    clock.now += timedelta(seconds=61)
    receiver.status = 503
    assert rounds(client) == 1
    assert rounds(client) == 0  # the copies wait behind their failing original
    clock.now += timedelta(minutes=31)
    assert rounds(client) == 1
    receiver.status = 200
    clock.now += timedelta(minutes=31)
    assert rounds(client) == 1
    # A copy failing is retried like any delivery, and listed as a copy.
    receiver.status = 503
    assert rounds(client) == 1
    r = client.get(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered", headers=tenants.a_admin.headers
    )
    assert [(e["deliveryId"], e["duplicate"], e["status"]) for e in r.json()["data"]] == [(keys[1], True, "503")]
    receiver.status = 200
    clock.now += timedelta(minutes=31)
    assert drain(client) == [1, 1]
    assert [d.key for d in deliveries(db)] == keys and {d.state for d in deliveries(db)} == {DONE}
    sent = [(r["headers"]["webhook-id"], json.loads(r["body"])["duplicate"]) for r in receiver.requests]
    assert sent == [(keys[0], False)] * 3 + [(keys[1], True)] * 2 + [(keys[2], True)]


def test_batch_url_carries_the_copies_as_more_lines_of_the_same_request(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(
        client,
        tenants,
        radio,
        channel="BATCH_URL",
        url=receiver.url + "/batch",
        linePattern="{device};{seqNumber};{station};{rssi};{duplicate}",
        sendDuplicate=True,
    )
    heard_by_three(client, radio)
    send(client, radio.stations[0], frame("1002", 3, rssi=-120.0))
    clock.now += timedelta(seconds=2.1)
    receiver.status = 503
    assert rounds(client) == 4
    receiver.status = 200
    clock.now += timedelta(seconds=13)
    assert rounds(client) == 4
    assert rounds(client) == 0
    failed, retried = receiver.requests
    assert failed["body"] == retried["body"]
    assert failed["headers"]["webhook-id"] == retried["headers"]["webhook-id"]
    assert retried["body"].decode().split("\n") == [
        "1001;7;2B;-110.25;false",
        "1002;3;1E6AB;-120.00;false",
        "1001;7;1E6AB;-121.50;true",
        "1001;7;C0FFEE;-130.00;true",
    ]
    assert len(deliveries(db)) == 4 and {d.state for d in deliveries(db)} == {DONE}


def test_email_sends_one_more_mail_per_copy(
    client: TestClient, tenants: Tenants, radio: Radio, inbox: Inbox, clock: Clock
) -> None:
    make_callback(
        client,
        tenants,
        radio,
        channel="EMAIL",
        recipient="ops@example.com",
        subject="Uplink {device} #{seqNumber} via {station}",
        message="duplicate={duplicate}",
        sendDuplicate=True,
    )
    heard_by_three(client, radio)
    clock.now += timedelta(seconds=1.01)
    assert drain(client) == [1, 1, 1]
    assert [(m["Subject"], m.get_content().strip()) for _, _, m in inbox.mails] == [
        ("Uplink 1001 #7 via 2B", "duplicate=false"),
        ("Uplink 1001 #7 via 1E6AB", "duplicate=true"),
        ("Uplink 1001 #7 via C0FFEE", "duplicate=true"),
    ]


def test_the_downlink_callbacks_copies_follow_its_call_and_carry_no_downlink(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    r = client.put(
        f"/api/v2/device-types/{radio.device_type_id}", json={"downlinkMode": 1}, headers=tenants.a_admin.headers
    )
    assert r.status_code == 204, r.text
    cb_id = make_callback(
        client,
        tenants,
        radio,
        url=receiver.url + "/bidir",
        callbackSubtype=3,
        bodyTemplate='{"station": "{station}", "ack": {ack}, "duplicate": {duplicate}}',
        sendDuplicate=True,
    )
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}/downlink"
    assert client.put(base, headers=tenants.a_admin.headers).status_code == 204
    receiver.answer = {"1001": {"downlinkData": "0102030405060708"}}
    heard_by_three(client, radio, ackRequired=True)
    clock.now += timedelta(seconds=1.1)
    client.app.state.ctx.downlinks.run_once()  # type: ignore[attr-defined]
    # The decider's call is the callback's data delivery; the copies then go through the outbox.
    assert drain(client) == [1, 1]
    assert receiver.bodies() == [
        {"station": "2B", "ack": True, "duplicate": False},
        {"station": "1E6AB", "ack": True, "duplicate": True},
        {"station": "C0FFEE", "ack": True, "duplicate": True},
    ]
    [dl] = client.get("/api/v2/devices/1001/downlinks", headers=tenants.a_admin.headers).json()["data"]
    assert dl["state"] == "PENDING" and dl["data"] == "0102030405060708"
    assert [(d.duplicate_of is not None, d.state) for d in deliveries(db)] == [
        (False, DONE),
        (True, DONE),
        (True, DONE),
    ]
