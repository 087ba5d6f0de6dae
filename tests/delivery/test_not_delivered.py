"""What the outbox shows and what users ask of it, on both databases: callbacks not delivered
(per device, device type, group and callback), retry now, a test callback, a resend."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import DONE, Callback, Delivery
from tests.conftest import Tenants
from tests.delivery.test_outbox import BODY, Receiver, clock, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["clock", "radio", "receiver"]  # fixtures imported for this module's tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.0/8", "run_deliveries": False})


def _failing(client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock) -> str:
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = 502
    send(client, radio.stations[0], frame(seq=1, data="0102"))
    send(client, radio.stations[0], frame(device="1002", seq=9, data="0a"))
    clock.now += timedelta(seconds=2)
    rounds(client)
    return cb_id


def test_failed_attempts_are_listed_per_device_type_device_group_and_callback(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = _failing(client, tenants, radio, receiver, clock)
    h = tenants.a_admin.headers
    dt = radio.device_type_id
    by_type = client.get(f"/api/v2/device-types/{dt}/callbacks-not-delivered", headers=h).json()
    assert {(e["deviceId"], e["data"], e["status"], e["message"]) for e in by_type["data"]} == {
        ("1001", "0102", "502", "HTTP 502"),
        ("1002", "0a", "502", "HTTP 502"),
    }
    entry = by_type["data"][0]
    assert entry["callback"]["id"] == cb_id and entry["callback"]["method"] == "POST"
    assert entry["deviceTypeId"] == str(dt) and entry["state"] == "PENDING" and entry["attempts"] == 1
    assert abs(entry["time"] - int(clock.now.timestamp() * 1000)) <= 3000  # ms, like since and before
    by_device = client.get("/api/v2/devices/1002/callbacks-not-delivered", headers=h).json()["data"]
    assert [e["deviceId"] for e in by_device] == ["1002"]
    by_group = client.get(f"/api/v2/groups/{tenants.customer_a}/callbacks-not-delivered", headers=h).json()["data"]
    assert len(by_group) == 2
    by_cb = client.get(f"/api/v2/device-types/{dt}/callbacks/{cb_id}/callbacks-not-delivered", headers=h).json()
    assert len(by_cb["data"]) == 2
    # Another tenant sees none of it.
    b = tenants.b_admin.headers
    assert client.get(f"/api/v2/device-types/{dt}/callbacks-not-delivered", headers=b).status_code == 404
    assert client.get(f"/api/v2/groups/{tenants.customer_a}/callbacks-not-delivered", headers=b).status_code == 404
    mine = client.get(f"/api/v2/groups/{tenants.customer_b}/callbacks-not-delivered", headers=b).json()["data"]
    assert mine == []


def test_retry_now_sends_at_once_and_delivered_ones_leave_the_list(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    _failing(client, tenants, radio, receiver, clock)
    receiver.status = 200
    assert rounds(client) == 0  # backing off
    dt = radio.device_type_id
    r = client.post(f"/api/v2/device-types/{dt}/callbacks-not-delivered/retry", headers=tenants.a_admin.headers)
    assert r.status_code == 200 and r.json() == {"total": 2}
    clock.now += timedelta(seconds=1)
    assert rounds(client) == 2
    listed = client.get(f"/api/v2/device-types/{dt}/callbacks-not-delivered", headers=tenants.a_admin.headers)
    assert listed.json()["data"] == []
    with db.read() as s:
        assert {d.state for d in s.scalars(select(Delivery))} == {DONE}


def test_a_test_callback_sends_sample_values_with_the_callbacks_templates(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/t/{device}", bodyTemplate=BODY)
    r = client.post(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}/test", headers=tenants.a_admin.headers
    )
    assert r.status_code == 200
    clock.now += timedelta(seconds=1)  # the action stamps the real time; the worker runs on the test clock
    assert rounds(client) == 1
    [req] = receiver.requests
    assert req["headers"]["webhook-id"] == r.json()["deliveryId"]
    body = json.loads(req["body"])
    assert req["path"] == f"/t/{body['device']}" and isinstance(body["seq"], int) and "temp" in body


def test_resend_delivers_a_time_range_again_in_order(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    start = int(clock.now.timestamp() * 1000)
    for seq in (1, 2, 3):
        send(client, radio.stations[0], frame(seq=seq))
        clock.now += timedelta(minutes=1)
    end = int(clock.now.timestamp() * 1000)
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}/resend"
    r = client.post(base, params={"since": start + 1, "before": end}, headers=tenants.a_admin.headers)
    assert r.status_code == 200 and r.json() == {"total": 2}  # the first message is before `since`
    clock.now += timedelta(minutes=1)
    for _ in range(3):
        rounds(client)
    assert [json.loads(q["body"])["seq"] for q in receiver.requests] == [2, 3]
    bad = client.post(base, params={"since": end, "before": start}, headers=tenants.a_admin.headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "before"
    with db.read() as s:
        assert s.scalar(select(Callback.id)) == int(cb_id)
