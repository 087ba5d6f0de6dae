"""The Sigfox cloud bridge of a device type takes frames of that device type's devices only
(issue 13, item 4), on both databases through HTTP: a device of another type, of the same
customer or of another one, is counted as an unknown id (item 5), never stored, and its
downlinks are never answered to the bridge."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.keys import Keyring
from heron.messages.models import Message
from heron.registry import contracts, device_types, devices
from heron.stations.models import BaseStation, UndeliveredFrames
from heron.tenancy.access import SYSTEM
from tests.conftest import TEST_KEK, Tenants
from tests.network.sigfox.test_bridge import bridge_url, uplink
from tests.network.sigfox.test_ingest import Radio, radio

__all__ = ["bridge_url", "radio"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"dedup_window_seconds": 0.2})


def _device_of_new_type(db: Database, group_id: int, ident: str) -> None:
    """`ident` holding a token, on a new device type of `group_id`."""
    with db.write() as s:
        contract = contracts.create(s, SYSTEM, group_id=group_id, name=f"Plan {ident}", max_tokens=10)
        dt = device_types.create(
            s,
            SYSTEM,
            group_id=group_id,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name=f"Type {ident}", contract_id=contract.contract.id),
        )
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier=ident,
            pac="0123456789ABCDEF",
            device_type_id=dt.device_type.id,
            fields=devices.DeviceFields(name=f"Device {ident}"),
        )


def _bridge_station(client: TestClient, tenants: Tenants, radio: Radio) -> dict[str, Any]:
    r = client.get(f"/api/v2/device-types/{radio.device_type_id}/sigfox-bridge", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    station = r.json()["baseStation"]
    r = client.get(f"/api/v2/base-stations/{station}", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _undelivered(db: Database) -> list[tuple[str, str, int]]:
    with db.read() as s:
        rows = s.execute(
            select(UndeliveredFrames.device, UndeliveredFrames.reason, UndeliveredFrames.frames)
            .join(BaseStation, BaseStation.id == UndeliveredFrames.station_id)
            .where(BaseStation.identifier.like("F%"))
            .order_by(UndeliveredFrames.device)
        ).all()
    return [tuple(r) for r in rows]


def test_the_bridge_of_a_device_type_refuses_devices_of_other_types(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, bridge_url: str
) -> None:
    _device_of_new_type(db, tenants.customer_b, "B0B1")  # another customer's
    _device_of_new_type(db, tenants.customer_a, "A0A1")  # the same customer's, another type
    before = _bridge_station(client, tenants, radio)
    answers = []
    for device in ("B0B1", "A0A1", "DEAD"):  # DEAD: registered nowhere
        r = client.post(bridge_url, json=uplink(5, device=device))
        answers.append((r.status_code, r.content))
    assert answers == [(204, b"")] * 3  # a foreign device answers as an unknown one
    with db.read() as s:
        assert s.scalars(select(Message)).all() == []
    for device, who in (("B0B1", tenants.b_admin), ("A0A1", tenants.a_admin)):
        r = client.get(f"/api/v2/devices/{device}/messages", headers=who.headers)
        assert r.status_code == 200 and r.json()["data"] == [], device
    after = _bridge_station(client, tenants, radio)
    assert after["framesLastDay"] - before["framesLastDay"] == 3
    assert after["undeliveredFramesLastDay"] - before["undeliveredFramesLastDay"] == 3
    assert _undelivered(db) == [("A0A1", "UNKNOWN", 1), ("B0B1", "UNKNOWN", 1), ("DEAD", "UNKNOWN", 1)]
    # Its own device type's devices are still taken.
    assert client.post(bridge_url, json=uplink(6)).status_code == 204
    r = client.get("/api/v2/devices/1001/messages", headers=tenants.a_admin.headers)
    assert [m["seqNumber"] for m in r.json()["data"]] == [6]
