"""The Sigfox cloud bridge on both databases, fed with the bodies a Sigfox backend's callbacks
send (Sigfox's documented variables; numbers as strings, as the live service writes them)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.downlink.models import Downlink
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Radio, radio

__all__ = ["radio"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NOW = int(time.time())


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The background decider runs (a BIDIR answer waits for its decision)."""
    return settings.model_copy(update={"dedup_window_seconds": 0.2})


@pytest.fixture
def bridge_url(client: TestClient, tenants: Tenants, radio: Radio) -> str:
    r = client.put(f"/api/v2/device-types/{radio.device_type_id}/sigfox-bridge", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    return urlsplit(r.json()["url"]).path


def uplink(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "device": "1001",
        "time": NOW,
        "data": "0a0b0c",
        "seqNumber": seq,
        "deviceTypeId": "5f1b2c",
        "ack": False,
        "station": "1E6AB",
        "rssi": "-121.50",
        "snr": "12.30",
        "avgSnr": "12.30",
        "lat": "45.0",
        "lng": "4.0",
    } | extra


def messages(client: TestClient, tenants: Tenants) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get("/api/v2/devices/1001/messages", headers=tenants.a_admin.headers).json()[
        "data"
    ]
    return data


def test_data_uplink_and_service_status_bodies_become_messages(
    client: TestClient, tenants: Tenants, bridge_url: str
) -> None:
    assert client.post(bridge_url, json=uplink(7)).status_code == 204
    status = {"device": "1001", "time": NOW, "seqNumber": 8, "temp": "21.50", "batt": "3.30"}
    assert client.post(bridge_url, json=status).status_code == 204
    newest, first = messages(client, tenants)
    assert first["seqNumber"] == 7 and first["data"] == "0a0b0c" and first["rinfos"][0]["rssi"] == "-121.50"
    assert first["time"] // 1000 >= NOW  # Heron's reception time
    assert newest["frameType"] == "KEEPALIVE" and newest["service"] == {"battery": 3.3, "temperature": 21.5}
    advanced = uplink(7, lqi="Good", linkQuality=2, duplicates=[{"bsId": "1E6AB", "rssi": -121.5, "nbRep": 3}])
    assert client.post(bridge_url, json=advanced).status_code == 204
    assert len(messages(client, tenants)) == 2


def test_a_bidir_body_is_answered_with_the_downlink_heron_decides_and_acknowledged(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, bridge_url: str
) -> None:
    r = client.put(
        f"/api/v2/device-types/{radio.device_type_id}",
        json={"downlinkMode": 0, "downlinkDataString": "0102030405060708"},
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 204
    answer = client.post(bridge_url, json=uplink(9, ack=True))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"1001": {"downlinkData": "0102030405060708"}}
    ack = {"device": "1001", "time": NOW, "infoCode": 0, "infoMessage": "Acknowledged", "downlinkAck": True}
    assert client.post(bridge_url, json=ack | {"downlinkOverusage": False}).status_code == 204
    with db.read() as s:
        dl = s.scalar(select(Downlink))
        assert dl is not None and dl.state == "ACKNOWLEDGED"


def test_a_bidir_body_without_a_downlink_gets_204(client: TestClient, bridge_url: str) -> None:
    assert client.post(bridge_url, json=uplink(10, ack="true")).status_code == 204  # mode NONE


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (uplink(1, seqNumber="x"), "seqNumber"),
        (uplink(1, seqNumber=5000), "seqNumber"),
        (uplink(1, data="0g"), "data"),
        (uplink(1, device="not-hex"), "device"),
        (uplink(1, rssi="loud"), "rssi"),
    ],
)
def test_a_malformed_body_is_refused_naming_the_field(
    client: TestClient, db: Database, bridge_url: str, body: dict[str, Any], field: str
) -> None:
    r = client.post(bridge_url, json=body)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == field, r.text


def test_a_wrong_secret_or_a_disabled_bridge_is_refused(
    client: TestClient, tenants: Tenants, radio: Radio, bridge_url: str
) -> None:
    wrong = bridge_url.rsplit("/", 1)[0] + "/not-the-secret"
    assert client.post(wrong, json=uplink(1)).status_code == 401
    base = f"/api/v2/device-types/{radio.device_type_id}/sigfox-bridge"
    assert client.get(base, headers=tenants.a_admin.headers).json()["enabled"] is True
    assert client.get(base, headers=tenants.b_admin.headers).status_code == 404
    assert client.delete(base, headers=tenants.a_admin.headers).status_code == 204
    assert client.post(bridge_url, json=uplink(1)).status_code == 401
    assert client.get(base, headers=tenants.a_admin.headers).status_code == 404
