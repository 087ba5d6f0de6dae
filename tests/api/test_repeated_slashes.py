"""A path with repeated slashes names the same resource as its single-slash form (Sigfox
normalises them), on every route, the station ingest's fast lane included."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenants

BASE = "http://testserver"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _device(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    r = client.post("/api/v2//device-types", json={"name": "Meters", "groupId": str(tenants.customer_a)}, headers=h)
    assert r.status_code == 201, r.text
    body = {"id": "1001", "name": "Meter", "pac": "0123456789ABCDEF", "deviceTypeId": r.json()["id"]}
    r = client.post("/api/v2/devices//", json=body, headers=h)
    assert r.status_code == 201, r.text


def test_repeated_slashes_answer_like_single_ones(client: TestClient, tenants: Tenants) -> None:
    _device(client, tenants)
    h = tenants.a_admin.headers
    for path in ("/api/v2//devices", "//api/v2/devices", "/api/v2///devices/", "/api//v2/devices//"):
        r = client.get(BASE + path, headers=h)  # absolute: a bare `//api` would name a host
        assert r.status_code == 200, (path, r.text)
        assert [d["id"] for d in r.json()["data"]] == ["1001"], path
    for path in ("/api/v2/devices//1001/messages", "/api/v2/devices//1001//messages/"):
        r = client.get(path, headers=h)
        assert r.status_code == 200 and r.json()["data"] == [], (path, r.text)
    assert client.get("/api/v2/devices//1001", headers=h).json()["id"] == "1001"
    # A list's next page is written in the single-slash form.
    r = client.get("/api/v2//groups", params={"limit": 1}, headers=h)
    assert r.status_code == 200 and r.json()["paging"]["next"].startswith("http://testserver/api/v2/groups?")
    # Errors keep their meaning: a wrong method is 405, no credential 401, an unknown path 404.
    assert client.delete("/api/v2//devices", headers=h).status_code == 405
    assert client.get("/api/v2//devices").status_code == 401
    assert client.get("/api/v2//no-such-thing", headers=h).status_code == 404


def test_the_station_ingest_takes_repeated_slashes_too(client: TestClient, tenants: Tenants) -> None:
    _device(client, tenants)
    body = {"id": "1E6AB", "groupId": str(tenants.operator), "name": "North", "lat": 45.5, "lng": 4.25}
    r = client.post("/api/v2//base-stations", json=body, headers=tenants.root_admin.headers)
    assert r.status_code == 201, r.text
    auth = "Basic " + base64.b64encode(f"{r.json()['id']}:{r.json()['secret']}".encode()).decode()
    frame = {"device": "1001", "seqNumber": 1, "data": "0A", "rssi": -120.0, "snr": 10.0, "freq": 868130000}
    r = client.post(BASE + "//ingest//sigfox", json={"receptions": [frame]}, headers={"authorization": auth})
    assert r.status_code == 200 and r.json() == {"accepted": 1}, r.text
