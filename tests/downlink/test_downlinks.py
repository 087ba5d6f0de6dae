"""Sigfox-style downlinks end to end on both databases: an uplink asks for an answer through the
real ingest, the device type's mode decides it (DIRECT template, or a BIDIR callback answered by a
real HTTP receiver on 127.0.0.1), the best station collects the 8 bytes and reports the emission,
and SERVICE ACKNOWLEDGE fires."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import DONE, Delivery
from heron.downlink.models import Downlink
from tests.conftest import Tenants
from tests.delivery.test_outbox import Receiver, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, Station, frame, radio, send

__all__ = ["radio", "receiver"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "callback_allow_cidrs": "127.0.0.0/8",
            "run_deliveries": False,
            "downlink_answer_timeout_seconds": 1.0,
        }
    )


@pytest.fixture
def clock(client: TestClient) -> Clock:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    ctx.uplinks.clock = ctx.deliveries.clock = ctx.downlinks.clock = fake
    return fake


def decide(client: TestClient) -> None:
    client.app.state.ctx.downlinks.run_once()  # type: ignore[attr-defined]


def set_mode(client: TestClient, tenants: Tenants, radio: Radio, **fields: Any) -> None:
    r = client.put(f"/api/v2/device-types/{radio.device_type_id}", json=fields, headers=tenants.a_admin.headers)
    assert r.status_code == 204, r.text


def collect(client: TestClient, station: Station) -> list[dict[str, Any]]:
    r = client.get("/ingest/sigfox/downlinks", headers=station.auth)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["downlinks"]
    return found


def downlinks_of(client: TestClient, tenants: Tenants, device: str = "1001") -> list[dict[str, Any]]:
    r = client.get(f"/api/v2/devices/{device}/downlinks", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def ask(client: TestClient, radio: Radio, device: str = "1001", seq: int = 7) -> None:
    north, south, _ = radio.stations
    send(client, north, frame(device=device, seq=seq, ackRequired=True, rssi=-130.0))
    send(client, south, frame(device=device, seq=seq, ackRequired=True, rssi=-100.0))  # the best


def test_direct_mode_renders_the_template_for_the_best_station_which_reports_the_emission(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="{tapId}CAFE{rssi}")
    make_callback(
        client,
        tenants,
        radio,
        url=receiver.url + "/ack",
        callbackType=1,
        callbackSubtype=4,
        payloadConfig=None,
        bodyTemplate='{"device": "{device}", "ack": {downlinkAck}, "info": "{infoMessage}"}',
    )
    ask(client, radio)
    decide(client)
    assert downlinks_of(client, tenants)[0]["state"] == "DECIDING"  # the window is open
    clock.now += timedelta(seconds=1.1)
    decide(client)
    north, south, _ = radio.stations
    assert collect(client, north) == []  # not the best station
    [dl] = collect(client, south)
    # {tapId}: 4 bytes of the station id 0x2B; {rssi}: 2 signed bytes of -100
    assert dl["data"] == "0000002bcafeff9c" and dl["device"] == "1001" and dl["seqNumber"] == 7
    assert dl["transmitAt"] == int((clock.now - timedelta(seconds=1.1)).timestamp() * 1000) + 20_000
    assert collect(client, south) == []  # handed over once
    r = client.post(f"/ingest/sigfox/downlinks/{dl['id']}/report", json={"emitted": True}, headers=south.auth)
    assert r.status_code == 204
    [shown] = downlinks_of(client, tenants)
    assert shown["state"] == "ACKNOWLEDGED" and shown["baseStation"]["id"] == "2B" and shown["mode"] == "DIRECT"
    rounds(client)
    [ack] = receiver.requests
    assert ack["path"] == "/ack" and json.loads(ack["body"]) == {"device": "1001", "ack": True, "info": "Acknowledged"}


def _bidir(client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver) -> str:
    set_mode(client, tenants, radio, downlinkMode=1)
    cb_id = make_callback(
        client,
        tenants,
        radio,
        url=receiver.url + "/bidir",
        callbackSubtype=3,
        bodyTemplate='{"device": "{device}", "ack": {ack}}',
    )
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}/downlink"
    assert client.put(base, headers=tenants.a_admin.headers).status_code == 204
    return cb_id


def test_callback_mode_takes_the_downlink_from_the_bidir_answer(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    _bidir(client, tenants, radio, receiver)
    receiver.answer = {"1001": {"downlinkData": "0102030405060708"}}
    ask(client, radio)
    decide(client)
    clock.now += timedelta(seconds=1.1)
    decide(client)
    [req] = receiver.requests
    assert json.loads(req["body"]) == {"device": "1001", "ack": True}
    [dl] = collect(client, radio.stations[1])
    assert dl["data"] == "0102030405060708"
    # The call was the callback's data delivery: the outbox does not send it again.
    assert rounds(client) == 0
    with db.read() as s:
        assert [d.state for d in s.scalars(select(Delivery))] == [DONE]


@pytest.mark.parametrize(
    ("answer", "status", "delay", "reason"),
    [
        (None, 204, 0.0, None),
        ({"1001": {"downlinkData": "01020304"}}, 200, 0.0, "16 hex digits"),
        ({"1001": "0102030405060708"}, 200, 0.0, "16 hex digits"),
        ("not json", 200, 0.0, "not the JSON object"),
        ({"1002": {"downlinkData": "0102030405060708"}}, 200, 0.0, "no entry for device 1001"),
        ({"1001": {"downlinkData": "0102030405060708"}}, 200, 1.5, "timeout"),
    ],
)
def test_a_bidir_answer_that_is_none_late_malformed_or_the_wrong_length_sends_nothing(
    client: TestClient,
    tenants: Tenants,
    radio: Radio,
    receiver: Receiver,
    clock: Clock,
    answer: Any,
    status: int,
    delay: float,
    reason: str | None,
) -> None:
    _bidir(client, tenants, radio, receiver)
    receiver.answer, receiver.status, receiver.delay = answer, status, delay
    ask(client, radio)
    decide(client)
    clock.now += timedelta(seconds=1.1)
    decide(client)
    assert collect(client, radio.stations[1]) == []
    [dl] = downlinks_of(client, tenants)
    if reason is None:
        assert dl["state"] == "NONE" and "reason" not in dl
    else:
        assert dl["state"] == "FAILED" and reason in dl["reason"], dl


def test_one_batched_answer_serves_every_device_that_asked(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    _bidir(client, tenants, radio, receiver)
    receiver.answer = {
        "1001": {"downlinkData": "1111111111111111"},
        "1002": {"downlinkData": "2222222222222222"},
    }
    ask(client, radio, "1001")
    ask(client, radio, "1002")
    decide(client)
    clock.now += timedelta(seconds=1.1)
    decide(client)
    got = {d["device"]: d["data"] for d in collect(client, radio.stations[1])}
    assert got == {"1001": "1111111111111111", "1002": "2222222222222222"}


def test_downlinks_count_against_the_contracts_downlinks_per_day(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    south = radio.stations[1]
    clock.now = clock.now.replace(hour=12, minute=0)  # well inside one contract day (UTC)
    for seq in range(1, 7):  # the contract allows 4 a day
        ask(client, radio, seq=seq)
        decide(client)
        clock.now += timedelta(seconds=1.1)
        decide(client)
        for dl in collect(client, south):
            client.post(f"/ingest/sigfox/downlinks/{dl['id']}/report", json={"emitted": True}, headers=south.auth)
        clock.now += timedelta(minutes=1)
    states = [d["state"] for d in reversed(downlinks_of(client, tenants))]
    assert states == ["ACKNOWLEDGED"] * 4 + ["FAILED"] * 2
    failed = [d for d in downlinks_of(client, tenants) if d["state"] == "FAILED"]
    assert all("downlinks per day" in d["reason"] for d in failed)


def test_a_downlink_nobody_collects_fails_after_the_receive_window(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    ask(client, radio)
    decide(client)
    clock.now += timedelta(seconds=1.1)
    decide(client)
    clock.now += timedelta(seconds=25)
    decide(client)
    [dl] = downlinks_of(client, tenants)
    assert dl["state"] == "FAILED" and "did not collect" in dl["reason"]
    assert collect(client, radio.stations[1]) == []


def test_stations_collect_with_a_long_poll_and_only_their_own(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    start = time.monotonic()
    r = client.get("/ingest/sigfox/downlinks?wait=0.3", headers=radio.stations[0].auth)
    assert r.status_code == 200 and r.json() == {"downlinks": []} and time.monotonic() - start >= 0.3
    assert client.get("/ingest/sigfox/downlinks").status_code == 401
    r = client.post("/ingest/sigfox/downlinks/123/report", json={"emitted": True}, headers=radio.stations[0].auth)
    assert r.status_code == 404
    assert client.get("/api/v2/devices/1001/downlinks", headers=tenants.b_admin.headers).status_code == 404


def test_an_uplink_asking_for_a_downlink_is_opened_in_the_transaction_that_stores_it(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    ask(client, radio)
    [dl] = downlinks_of(client, tenants)  # no decider round yet
    assert dl["state"] == "DECIDING" and dl["mode"] == "DIRECT"
    send(client, radio.stations[0], frame(seq=8))  # not asking: nothing opened
    assert len(downlinks_of(client, tenants)) == 1


def test_mode_none_answers_nothing_once_the_window_closes(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=2)
    ask(client, radio)
    decide(client)
    assert downlinks_of(client, tenants)[0]["state"] == "DECIDING"
    clock.now += timedelta(seconds=1.1)
    decide(client)
    [dl] = downlinks_of(client, tenants)
    assert dl["state"] == "NONE" and "reason" not in dl and dl["mode"] == "NONE"
    assert collect(client, radio.stations[1]) == []


@pytest.mark.parametrize("mode", [0, 2])
def test_a_decision_too_late_for_the_receive_window_fails(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock, mode: int
) -> None:
    set_mode(client, tenants, radio, downlinkMode=mode, downlinkDataString="0011223344556677")
    ask(client, radio)
    clock.now += timedelta(seconds=18.5)  # the decider was held up past transmit time - 2 s
    decide(client)
    [dl] = downlinks_of(client, tenants)
    assert dl["state"] == "FAILED" and "too late" in dl["reason"]
    assert collect(client, radio.stations[1]) == []


def test_the_decider_opens_what_was_stored_without_a_downlink(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    ask(client, radio)
    with db.write() as s:  # as a writer that did not open it (an older version) left it
        s.execute(delete(Downlink))
    decide(client)  # a decider's first round sweeps
    assert downlinks_of(client, tenants)[0]["state"] == "DECIDING"
    clock.now += timedelta(seconds=1.1)
    decide(client)
    [dl] = collect(client, radio.stations[1])
    assert dl["data"] == "0011223344556677"
