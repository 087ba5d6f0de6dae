"""The base-station ingest, end to end over HTTP on both databases: stations and their
credentials, deduplication of receptions into messages, sequence numbers, undelivered frames,
malformed requests, and the messages API that reads the result."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.keys import Keyring
from heron.messages.models import Message, Reception
from heron.registry import contracts, device_types, devices
from heron.registry.models import Device
from heron.stations.models import UndeliveredFrames
from heron.tenancy.access import SYSTEM
from tests.api.test_access_matrix import db_snapshot
from tests.conftest import TEST_KEK, Tenants

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Station:
    id: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()}


@dataclass
class Radio:
    stations: list[Station]
    device_type_id: int


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(client: TestClient) -> Iterator[Clock]:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    real, ctx.uplinks.clock = ctx.uplinks.clock, fake
    yield fake
    ctx.uplinks.clock = real


@pytest.fixture
def radio(client: TestClient, db: Database, tenants: Tenants) -> Radio:
    """Three stations of the operator; in Customer A, devices 1001-1003 holding tokens and 2001
    registered without one."""
    made = []
    for ident, name in (("1E6AB", "North"), ("2B", "South"), ("C0FFEE", "East")):
        r = client.post(
            "/api/v2/base-stations",
            json={"id": ident, "groupId": str(tenants.operator), "name": name, "lat": 45.5, "lng": 4.25},
            headers=tenants.root_admin.headers,
        )
        assert r.status_code == 201, r.text
        made.append(Station(r.json()["id"], r.json()["secret"]))
    keyring = Keyring.parse(TEST_KEK)
    with db.write() as s:
        contract = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Plan", max_tokens=100)
        dt = device_types.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name="Meters", contract_id=contract.contract.id),
        )
        for ident, activable in (("1001", True), ("1002", True), ("1003", True), ("2001", False)):
            devices.create_sigfox(
                s,
                SYSTEM,
                keyring,
                identifier=ident,
                pac="0123456789ABCDEF",
                device_type_id=dt.device_type.id,
                fields=devices.DeviceFields(name=f"Meter {ident}", activable=activable),
            )
    return Radio(made, dt.device_type.id)


def frame(device: str = "1001", seq: int = 7, **extra: Any) -> dict[str, Any]:
    base = {"device": device, "seqNumber": seq, "data": "0A0B0C", "rssi": -120.0, "snr": 12.5, "freq": 868130000}
    return base | extra


def send(client: TestClient, station: Station, *frames: dict[str, Any]) -> Any:
    r = client.post("/ingest/sigfox", json={"receptions": list(frames)}, headers=station.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": len(frames)}
    return r


def messages_of(client: TestClient, tenants: Tenants, device: str = "1001", **query: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/v2/devices/{device}/messages", params=query, headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_receptions_of_one_frame_from_three_stations_become_one_message(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    north, south, east = radio.stations
    send(client, north, frame(rssi=-118.25, snr=10.0))
    send(client, south, frame(rssi=-121.0))
    send(client, east, frame(rssi=-130.5, snr=3.25))
    [msg] = messages_of(client, tenants)
    assert msg["device"] == {"id": "1001", "name": "Meter 1001"}
    assert msg["seqNumber"] == 7 and msg["data"] == "0a0b0c" and msg["ackRequired"] is False
    assert msg["lqi"] == 3  # EXCELLENT: best RSSI -118.25 > -122 and 3 stations
    assert [r["baseStation"]["id"] for r in msg["rinfos"]] == ["1E6AB", "2B", "C0FFEE"]
    first = msg["rinfos"][0]
    assert first["rssi"] == "-118.25" and first["snr"] == "10.00" and first["lat"] == "45.50"
    assert first["freq"] == 868130000 and first["late"] is False
    device = client.get("/api/v2/devices/1001", headers=tenants.a_admin.headers).json()
    assert device["sequenceNumber"] == 7 and device["comState"] == 1
    assert device["lastCom"] == msg["time"]


def test_a_reception_after_the_dedup_window_attaches_as_late(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    north, south, east = radio.stations
    send(client, north, frame(rssi=-125.0))
    clock.now += timedelta(seconds=0.5)
    send(client, south, frame(rssi=-126.0))
    [msg] = messages_of(client, tenants)
    assert msg["lqi"] == 1  # AVERAGE: 2 stations between the thresholds
    clock.now += timedelta(seconds=5)  # past the 1 s window, within the 30 s horizon
    send(client, east, frame(rssi=-127.0))
    [msg] = messages_of(client, tenants)
    assert [r["late"] for r in msg["rinfos"]] == [False, False, True]
    assert msg["lqi"] == 2  # GOOD once the third station is known


def test_a_station_reporting_a_frame_twice_counts_once(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    north = radio.stations[0]
    send(client, north, frame(), frame())
    send(client, north, frame())
    [msg] = messages_of(client, tenants)
    assert len(msg["rinfos"]) == 1
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Reception)) == 1


def test_sequence_gaps_count_lost_frames_and_wrap_at_4096(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    north = radio.stations[0]
    for seq in (4090, 4094, 1):
        send(client, north, frame(seq=seq))
        clock.now += timedelta(minutes=2)
    send(client, north, frame(seq=4093))  # older than the last: out of order
    newest_first = messages_of(client, tenants)
    assert [(m["seqNumber"], m["lostMessages"]) for m in newest_first] == [(4093, 0), (1, 2), (4094, 3), (4090, 0)]
    device = client.get("/api/v2/devices/1001", headers=tenants.a_admin.headers).json()
    assert device["sequenceNumber"] == 1  # an out-of-order frame does not move it back


def test_a_late_copy_of_the_last_frame_after_the_horizon_is_dropped(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    north, south, _ = radio.stations
    send(client, north, frame(seq=9))
    clock.now += timedelta(minutes=5)  # past the horizon: not attachable any more
    send(client, south, frame(seq=9))
    [msg] = messages_of(client, tenants)
    assert len(msg["rinfos"]) == 1


def test_frames_of_unknown_and_tokenless_devices_are_counted_not_stored(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    north, south, _ = radio.stations
    send(client, north, frame(device="ABCDEF"), frame(device="ABCDEF", seq=8), frame(device="2001"), frame())
    send(client, south, frame(device="ABCDEF"))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 1
        counted = {(u.device, u.reason, u.frames) for u in s.scalars(select(UndeliveredFrames))}
    assert counted == {("ABCDEF", "UNKNOWN", 2), ("2001", "NO_TOKEN", 1), ("ABCDEF", "UNKNOWN", 1)}
    station = client.get("/api/v2/base-stations/1E6AB", headers=tenants.root_admin.headers).json()
    assert station["framesLastDay"] == 4 and station["undeliveredFramesLastDay"] == 3
    assert station["state"] == "ONLINE" and station["lastSeen"] is not None
    assert "secret" not in station


def test_keep_alive_frames_keep_battery_and_temperature(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    send(client, radio.stations[0], frame(frameType="KEEPALIVE", data="", battery=3.3, temperature=21.5))
    [msg] = messages_of(client, tenants)
    assert msg["frameType"] == "KEEPALIVE" and msg["service"] == {"battery": 3.3, "temperature": 21.5}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"data": "0G"}, "data"),
        ({"data": "ABC"}, "data"),
        ({"data": "00" * 13}, "data"),
        ({"seqNumber": -1}, "seqNumber"),
        ({"seqNumber": 4096}, "seqNumber"),
        ({"device": "123456789"}, "device"),
        ({"device": "XYZ"}, "device"),
        ({"rssi": "loud"}, "rssi"),
        ({"frameType": "JOIN"}, "frameType"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_a_malformed_reception_refuses_the_whole_request_and_changes_nothing(
    client: TestClient, db: Database, radio: Radio, bad: dict[str, Any], field: str
) -> None:
    before = db_snapshot(db)
    r = client.post(
        "/ingest/sigfox", json={"receptions": [frame(), frame(seq=8) | bad]}, headers=radio.stations[0].auth
    )
    assert r.status_code == 400, r.text
    assert any(e["field"].endswith(field) and "receptions[1]" in e["field"] for e in r.json()["errors"]), r.json()
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"1E6AB:wrong").decode(), "Basic " + base64.b64encode(b"FFFF:x").decode()],
)
def test_an_unknown_station_credential_is_refused_and_changes_nothing(
    client: TestClient, db: Database, radio: Radio, authorization: str | None
) -> None:
    before = db_snapshot(db)
    headers = {"authorization": authorization} if authorization else {}
    r = client.post("/ingest/sigfox", json={"receptions": [frame()]}, headers=headers)
    assert r.status_code == 401
    assert db_snapshot(db) == before


def test_renewing_a_station_secret_retires_the_old_one(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    north = radio.stations[0]
    r = client.put(f"/api/v2/base-stations/{north.id}/renew-credential", headers=tenants.root_admin.headers)
    assert r.status_code == 200
    renewed = Station(north.id, r.json()["secret"])
    assert client.post("/ingest/sigfox", json={"receptions": [frame()]}, headers=north.auth).status_code == 401
    send(client, renewed, frame())


def test_a_disabled_station_cannot_ingest(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    north = radio.stations[0]
    r = client.put(f"/api/v2/base-stations/{north.id}", json={"enabled": False}, headers=tenants.root_admin.headers)
    assert r.status_code == 204
    assert client.post("/ingest/sigfox", json={"receptions": [frame()]}, headers=north.auth).status_code == 401


def test_device_type_messages_page_through_one_instant_without_loss(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    """One request (one group commit, one instant) stores several messages: keyset pages of two
    still show each exactly once."""
    send(client, radio.stations[0], *[frame(device=d, seq=s) for d in ("1001", "1002", "1003") for s in (1, 2)])
    seen: list[tuple[str, int]] = []
    url: str | None = f"/api/v2/device-types/{radio.device_type_id}/messages?limit=2"
    while url:
        r = client.get(url, headers=tenants.a_admin.headers)
        assert r.status_code == 200, r.text
        seen += [(m["device"]["id"], m["seqNumber"]) for m in r.json()["data"]]
        url = r.json()["paging"].get("next")
    assert sorted(seen) == [(d, s) for d in ("1001", "1002", "1003") for s in (1, 2)]


def test_messages_window_since_before(client: TestClient, tenants: Tenants, radio: Radio, clock: Clock) -> None:
    north = radio.stations[0]
    times = []
    for seq in (1, 2, 3):
        send(client, north, frame(seq=seq))
        times.append(int(clock.now.timestamp() * 1000))
        clock.now += timedelta(minutes=1)
    window = messages_of(client, tenants, since=times[1], before=times[2])
    assert [m["seqNumber"] for m in window] == [2]


def test_another_tenant_cannot_read_messages_or_stations(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    send(client, radio.stations[0], frame())
    assert client.get("/api/v2/devices/1001/messages", headers=tenants.b_admin.headers).status_code == 404
    r = client.get(f"/api/v2/device-types/{radio.device_type_id}/messages", headers=tenants.b_admin.headers)
    assert r.status_code == 404
    assert client.get("/api/v2/base-stations/1E6AB", headers=tenants.a_admin.headers).status_code == 404
    assert client.get("/api/v2/base-stations", headers=tenants.a_admin.headers).json()["data"] == []


def test_a_deleted_device_stops_being_delivered(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    assert client.delete("/api/v2/devices/1002", headers=tenants.a_admin.headers).status_code == 204
    send(client, radio.stations[0], frame(device="1002"))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0
        device = s.scalar(select(Device).where(Device.identifier == "1002"))
        assert device is not None and device.last_seen_at is None


def test_messages_export_as_csv_and_count_by_period(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    north = radio.stations[0]
    for seq, age in ((1, timedelta(days=20)), (2, timedelta(days=3)), (3, timedelta(hours=2))):
        clock.now = utcnow() - age
        send(client, north, frame(seq=seq, data="00ff"))
    r = client.get("/api/v2/devices/1001/messages/export", headers=tenants.a_admin.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\r\n")
    assert lines[0].startswith("time,device,seqNumber,frameType,data")
    assert [line.split(",")[2] for line in lines[1:]] == ["3", "2", "1"]
    assert lines[1].split(",")[1:5] == ["1001", "3", "DATA", "00ff"] and lines[1].split(",")[0].endswith("Z")
    by_type = client.get(
        f"/api/v2/device-types/{radio.device_type_id}/messages/export", headers=tenants.a_admin.headers
    )
    assert by_type.text.count("\r\n") == 4
    metric = client.get("/api/v2/devices/1001/messages/metric", headers=tenants.a_admin.headers).json()
    assert metric == {"lastDay": 1, "lastWeek": 2, "lastMonth": 3}
    assert client.get("/api/v2/devices/1001/messages/export", headers=tenants.b_admin.headers).status_code == 404


def test_ingest_and_dedup_rates_are_on_metrics(client: TestClient, radio: Radio) -> None:
    def value(text: str, line: str) -> float:
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    before = client.get("/metrics").text
    north, south, _ = radio.stations
    send(client, north, frame(seq=1), frame(device="ABCDEF"))
    send(client, south, frame(seq=1))
    send(client, south, frame(seq=1))
    after = client.get("/metrics").text
    for line, delta in (
        ("heron_ingest_messages_total ", 1),
        ('heron_ingest_receptions_total{outcome="new"}', 1),
        ('heron_ingest_receptions_total{outcome="joined"}', 1),
        ('heron_ingest_receptions_total{outcome="duplicate"}', 1),
        ('heron_ingest_receptions_total{outcome="undelivered"}', 1),
    ):
        assert value(after, line) - value(before, line) == delta, line


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'{"receptions": [', "application/json"), (b"", "application/json"), (b'{"receptions": []}', "text/plain")],
)
def test_a_body_that_is_not_a_json_ingest_request_is_refused_naming_the_body(
    client: TestClient, db: Database, radio: Radio, body: bytes, content_type: str
) -> None:
    before = db_snapshot(db)
    headers = radio.stations[0].auth | {"content-type": content_type}
    r = client.post("/ingest/sigfox", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"].startswith("body"), r.json()
    assert db_snapshot(db) == before


def test_a_refused_credential_answers_401_before_the_body_is_read(client: TestClient, radio: Radio) -> None:
    r = client.post("/ingest/sigfox", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="heron"'


def test_the_ingest_request_and_answer_are_documented(client: TestClient) -> None:
    spec = client.app.openapi()  # type: ignore[attr-defined]
    op = spec["paths"]["/ingest/sigfox"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    reception = schema["properties"]["receptions"]["items"]
    assert {"device", "seqNumber", "ackRequired", "rssi"} <= set(reception["properties"])
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rpartition("/")[2]
    assert set(spec["components"]["schemas"][answer]["properties"]) == {"accepted"}
