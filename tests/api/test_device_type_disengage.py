"""`PUT /device-types/{id}/disengage` (the Sigfox document's method; POST too): the sequence
number check is off for the next frame of every device of the type, over HTTP on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from heron.db.engine import Database
from tests.api.test_bad_input import assert_message, unchanged
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Clock, Radio, clock, frame, messages_of, radio, send

__all__ = ["clock", "radio"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _seq(client: TestClient, tenants: Tenants, device: str) -> int | None:
    r = client.get(f"/api/v2/devices/{device}", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    value: int | None = r.json().get("sequenceNumber")  # absent (the fixture refuses a null) until a frame
    return value


def _other_type_device(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    """Device 3001 on a second device type of Customer A, on the same contract."""
    h = tenants.a_admin.headers
    contract = client.get(f"/api/v2/device-types/{radio.device_type_id}", headers=h).json()["contract"]["id"]
    body = {"name": "Others", "groupId": str(tenants.customer_a), "contracts": [{"id": contract}]}
    r = client.post("/api/v2/device-types", json=body, headers=h)
    assert r.status_code == 201, r.text
    body = {"id": "3001", "name": "Other", "pac": "0123456789ABCDEF", "deviceTypeId": r.json()["id"]}
    assert client.post("/api/v2/devices", json=body, headers=h).status_code == 201


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_disengaging_a_device_type_lets_the_next_frame_of_each_device_through(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock, method: str
) -> None:
    station = radio.stations[0]
    _other_type_device(client, tenants, radio)
    send(client, station, frame(seq=100), frame(device="1002", seq=100), frame(device="3001", seq=50))
    clock.now += timedelta(minutes=2)  # past the dedup horizon
    # Engaged: the last number again is a stale repeat (dropped); a step back is out of order
    # (stored, the device keeps its number).
    send(client, station, frame(seq=100), frame(device="1002", seq=90))
    assert [m["seqNumber"] for m in messages_of(client, tenants, "1001")] == [100]
    assert (_seq(client, tenants, "1001"), _seq(client, tenants, "1002")) == (100, 100)

    r = client.request(
        method, f"/api/v2/device-types/{radio.device_type_id}/disengage", headers=tenants.a_admin.headers
    )
    assert r.status_code == 204 and r.content == b"", r.text
    assert (_seq(client, tenants, "1001"), _seq(client, tenants, "1002")) == (None, None)
    assert _seq(client, tenants, "3001") == 50  # another device type's device is untouched

    clock.now += timedelta(minutes=2)
    send(client, station, frame(seq=100), frame(device="1002", seq=5))
    assert [m["seqNumber"] for m in messages_of(client, tenants, "1001")] == [100, 100]  # the repeat is taken
    newest = messages_of(client, tenants, "1002")[0]
    assert (newest["seqNumber"], newest["lostMessages"]) == (5, 0)  # a new start, no frames lost
    assert (_seq(client, tenants, "1001"), _seq(client, tenants, "1002")) == (100, 5)
    # Only the next frame: the check is engaged again after it.
    send(client, station, frame(device="1002", seq=7))
    assert messages_of(client, tenants, "1002")[0]["lostMessages"] == 1


def test_disengaging_a_device_type_needs_device_type_write_rights(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    path = f"/api/v2/device-types/{radio.device_type_id}/disengage"
    send(client, radio.stations[0], frame(seq=1))  # a number a refused call must not clear
    with unchanged(db):
        assert_message(client.put(path, headers=tenants.a_reader.headers), 403)
        assert_message(client.put(path, headers=tenants.b_admin.headers), 404)
        assert_message(client.put("/api/v2/device-types/999999/disengage", headers=tenants.a_admin.headers), 404)
        assert client.put(path).status_code == 401
