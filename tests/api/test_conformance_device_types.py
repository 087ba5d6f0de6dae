"""Device types as a client generated from Sigfox's OpenAPI document writes them: `contracts`
(required by `deviceTypeCreate`) without the older optional `contractId`, on create and update,
down to the devices of the type being on contract and their frames being stored."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Tenants

API = "/api/v2"


def _create(client: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> str:
    r = client.post(API + path, json=body, headers=headers)
    assert r.status_code == 201, r.text
    new_id: str = r.json()["id"]
    return new_id


def _contract(client: TestClient, tenants: Tenants, name: str) -> str:
    body = {
        "name": name,
        "groupId": str(tenants.customer_a),
        "maxTokens": 10,
        "maxUplinkFrames": 140,
        "maxDownlinkFrames": 4,
        "tokenDuration": 12,
        "startTime": 1_700_000_000_000,
        "timezone": "UTC",
        "bidir": True,
    }
    return _create(client, tenants.a_admin.headers, "/contracts", body)


def _station_auth(client: TestClient, tenants: Tenants) -> dict[str, str]:
    body = {"id": "1E6AB", "groupId": str(tenants.operator), "name": "North", "lat": 45.5, "lng": 4.25}
    r = client.post(API + "/base-stations", json=body, headers=tenants.root_admin.headers)
    assert r.status_code == 201, r.text
    login = f"{r.json()['id']}:{r.json()['secret']}"
    return {"authorization": "Basic " + base64.b64encode(login.encode()).decode()}


def _device_takes_a_token_and_its_uplink_is_stored(
    client: TestClient, tenants: Tenants, device_type: str, contract: str, device: str
) -> None:
    headers = tenants.a_admin.headers
    body = {"id": device, "name": f"Meter {device}", "pac": "0123456789ABCDEF", "deviceTypeId": device_type}
    _create(client, headers, "/devices", body)
    got = client.get(f"{API}/devices/{device}", headers=headers).json()
    assert got["contract"]["id"] == contract
    assert got["state"] == 0 and got["token"]["state"] == 0 and got["token"]["detailMessage"] == "Valid"
    frame = {"device": device, "seqNumber": 1, "data": "0A0B", "rssi": -120.0, "snr": 10.0, "freq": 868130000}
    r = client.post("/ingest/sigfox", json={"receptions": [frame]}, headers=_station_auth(client, tenants))
    assert r.status_code == 200, r.text
    r = client.get(f"{API}/devices/{device}/messages", headers=headers)
    assert r.status_code == 200, r.text
    assert [(m["seqNumber"], m["data"]) for m in r.json()["data"]] == [(1, "0a0b")]


def test_device_type_created_with_contracts_only_takes_the_first_as_its_contract(
    client: TestClient, tenants: Tenants
) -> None:
    first, second = _contract(client, tenants, "First"), _contract(client, tenants, "Second")
    body = {"name": "Meters", "groupId": str(tenants.customer_a), "contracts": [{"id": first}, {"id": second}]}
    dt = _create(client, tenants.a_admin.headers, "/device-types", body)
    got = client.get(f"{API}/device-types/{dt}", headers=tenants.a_admin.headers).json()
    assert got["contract"] == {"id": first, "name": "First"}
    assert sorted(c["id"] for c in got["contracts"]) == sorted([first, second])
    _device_takes_a_token_and_its_uplink_is_stored(client, tenants, dt, first, "1001")


def test_contract_id_beside_contracts_stays_the_default(client: TestClient, tenants: Tenants) -> None:
    first, second = _contract(client, tenants, "First"), _contract(client, tenants, "Second")
    body = {
        "name": "Meters",
        "groupId": str(tenants.customer_a),
        "contractId": second,
        "contracts": [{"id": first}, {"id": second}],
    }
    dt = _create(client, tenants.a_admin.headers, "/device-types", body)
    got = client.get(f"{API}/device-types/{dt}", headers=tenants.a_admin.headers).json()
    assert got["contract"]["id"] == second


def test_device_type_updated_with_contracts_only_takes_the_first_as_its_contract(
    client: TestClient, tenants: Tenants
) -> None:
    headers = tenants.a_admin.headers
    first, second = _contract(client, tenants, "First"), _contract(client, tenants, "Second")
    dt = _create(client, headers, "/device-types", {"name": "Meters", "groupId": str(tenants.customer_a)})
    assert "contract" not in client.get(f"{API}/device-types/{dt}", headers=headers).json()
    r = client.put(f"{API}/device-types/{dt}", json={"contracts": [{"id": second}, {"id": first}]}, headers=headers)
    assert r.status_code == 204, r.text
    got = client.get(f"{API}/device-types/{dt}", headers=headers).json()
    assert got["contract"] == {"id": second, "name": "Second"}
    assert sorted(c["id"] for c in got["contracts"]) == sorted([first, second])
    # The same list again (a client sending back what it read) keeps the default.
    listed = [{"id": c["id"]} for c in got["contracts"]]
    assert client.put(f"{API}/device-types/{dt}", json={"contracts": listed}, headers=headers).status_code == 204
    assert client.get(f"{API}/device-types/{dt}", headers=headers).json()["contract"]["id"] == second
    # A list without the default: its first contract becomes the default.
    r = client.put(f"{API}/device-types/{dt}", json={"contracts": [{"id": first}]}, headers=headers)
    assert r.status_code == 204, r.text
    got = client.get(f"{API}/device-types/{dt}", headers=headers).json()
    assert got["contract"]["id"] == first and [c["id"] for c in got["contracts"]] == [first]
    _device_takes_a_token_and_its_uplink_is_stored(client, tenants, dt, first, "1002")
