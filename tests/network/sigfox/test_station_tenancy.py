"""Base stations are the operator's infrastructure (issue 13, items 3 and 5), on both databases
through HTTP: only holders of `base_station:write` (the NETWORK_OPERATOR profile, the root
administrators' by default) create and manage them; a station delivers frames of, and collects
downlinks for, devices in the subtree of the group that owns it only; a frame of a device outside
it is counted exactly as a frame of an unknown id, so the station's owner cannot tell the two."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.keys import Keyring
from heron.messages.models import Message
from heron.network.sigfox import stations
from heron.registry import devices
from heron.stations.models import UndeliveredFrames
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import User
from tests.conftest import TEST_KEK, Tenants, make_credential
from tests.network.sigfox.test_ingest import Clock, Radio, Station, frame, radio, send
from tests.support.served import sigfox_type

__all__ = ["radio"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
B_DEVICE = "B0B1"  # Customer B's device, holding a token
UNKNOWN = "DEAD"  # registered nowhere


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"run_deliveries": False})


@pytest.fixture
def clock(client: TestClient) -> Clock:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    ctx.uplinks.clock = ctx.deliveries.clock = ctx.downlinks.clock = fake
    return fake


def _station(db: Database, group_id: int, ident: str) -> Station:
    """A station owned by `group_id`, made by the operator (the CLI's SYSTEM actor)."""
    with db.write() as s:
        view, secret = stations.create(
            s, SYSTEM, group_id=group_id, identifier=ident, fields=stations.StationFields(name=f"Mast {ident}")
        )
        return Station(view.station.identifier, secret)


@pytest.fixture
def b_type(db: Database, tenants: Tenants, radio: Radio) -> int:
    """Customer B's device type with device B0B1 (holding a token)."""
    with db.write() as s:
        dt = sigfox_type(s, tenants.customer_b, "B meters", max_tokens=10)
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier=B_DEVICE,
            pac="0123456789ABCDEF",
            device_type_id=dt.device_type.id,
            fields=devices.DeviceFields(name="B's meter"),
        )
        return dt.device_type.id


def _figures(client: TestClient, tenants: Tenants, station: Station) -> dict[str, Any]:
    """What the station's owner sees of it, but for what names it."""
    r = client.get(f"/api/v2/base-stations/{station.id}", headers=tenants.root_admin.headers)
    assert r.status_code == 200, r.text
    names = ("id", "name", "creationTime", "credentialRenewalTime")
    return {k: v for k, v in r.json().items() if k not in names}


def _undelivered(db: Database, station: Station) -> list[tuple[str, str, int]]:
    with db.read() as s:
        rows = s.execute(
            select(UndeliveredFrames.device, UndeliveredFrames.reason, UndeliveredFrames.frames)
            .join(stations.BaseStation, stations.BaseStation.id == UndeliveredFrames.station_id)
            .where(stations.BaseStation.identifier == station.id)
        ).all()
    return [tuple(r) for r in rows]


def _messages(client: TestClient, tenants: Tenants, device: str = B_DEVICE) -> list[dict[str, Any]]:
    r = client.get(f"/api/v2/devices/{device}/messages", headers=tenants.b_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_a_tenant_station_cannot_deliver_frames_of_another_tenants_device(
    client: TestClient, db: Database, tenants: Tenants, b_type: int, clock: Clock
) -> None:
    foreign_side, unknown_side = _station(db, tenants.customer_a, "A5A"), _station(db, tenants.customer_a, "A5B")
    a_answer = client.post("/ingest/sigfox", json={"receptions": [frame(B_DEVICE, 7)]}, headers=foreign_side.auth)
    u_answer = client.post("/ingest/sigfox", json={"receptions": [frame(UNKNOWN, 7)]}, headers=unknown_side.auth)
    accepted = (200, b'{"accepted":1}')
    assert (a_answer.status_code, a_answer.content) == (u_answer.status_code, u_answer.content) == accepted
    # Not stored: Customer B sees nothing, and its device was not heard.
    assert _messages(client, tenants) == []
    r = client.get(f"/api/v2/devices/{B_DEVICE}", headers=tenants.b_admin.headers)
    assert r.status_code == 200 and "lastCom" not in r.json()
    with db.read() as s:
        assert s.scalars(select(Message)).all() == []
    # Counted as undelivered, exactly as the unknown id is, under the id as reported.
    assert _figures(client, tenants, foreign_side) == _figures(client, tenants, unknown_side)
    assert _figures(client, tenants, foreign_side)["undeliveredFramesLastDay"] == 1
    assert _undelivered(db, foreign_side) == [(B_DEVICE, "UNKNOWN", 1)]
    assert _undelivered(db, unknown_side) == [(UNKNOWN, "UNKNOWN", 1)]


def test_a_station_delivers_frames_of_devices_in_its_groups_subtree_only(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, b_type: int
) -> None:
    a_station, site_station = _station(db, tenants.customer_a, "A5A"), _station(db, tenants.site_a, "517E")
    north = radio.stations[0]  # the operator's: its subtree holds both customers
    # In one request: A's own device is stored, B's is not.
    send(client, a_station, frame("1001", 7), frame(B_DEVICE, 7))
    # A station of a subgroup of A does not deliver A's devices (they live above it).
    send(client, site_station, frame("1002", 3))
    send(client, north, frame(B_DEVICE, 8), frame("1003", 4))
    r = client.get("/api/v2/devices/1001/messages", headers=tenants.a_admin.headers)
    [mine] = r.json()["data"]
    assert [ri["baseStation"]["id"] for ri in mine["rinfos"]] == ["A5A"]
    assert client.get("/api/v2/devices/1002/messages", headers=tenants.a_admin.headers).json()["data"] == []
    assert [m["seqNumber"] for m in _messages(client, tenants)] == [8]  # the operator's station only
    assert [ri["baseStation"]["id"] for ri in _messages(client, tenants)[0]["rinfos"]] == [north.id]
    assert _undelivered(db, a_station) == [(B_DEVICE, "UNKNOWN", 1)]
    assert _undelivered(db, site_station) == [("1002", "UNKNOWN", 1)]


def test_a_foreign_device_without_a_token_looks_unknown_too(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    """Customer A's device 2001 has no token: to its own station that is NO_TOKEN, to a station
    of Customer B it is an unknown id."""
    own, foreign = _station(db, tenants.customer_a, "A5A"), _station(db, tenants.customer_b, "B5B")
    send(client, own, frame("2001", 1))
    send(client, foreign, frame("2001", 1))
    assert _undelivered(db, own) == [("2001", "NO_TOKEN", 1)]
    assert _undelivered(db, foreign) == [("2001", "UNKNOWN", 1)]


def test_a_tenant_station_long_poll_never_returns_another_tenants_downlink(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, b_type: int, clock: Clock
) -> None:
    r = client.put(
        f"/api/v2/device-types/{b_type}",
        json={"downlinkMode": 0, "downlinkDataString": "{tapId}CAFE{rssi}"},
        headers=tenants.b_admin.headers,
    )
    assert r.status_code == 204, r.text
    a_station, north = _station(db, tenants.customer_a, "A5A"), radio.stations[0]
    send(client, a_station, frame(B_DEVICE, 9, ackRequired=True, rssi=-90.0))  # the loudest, but foreign
    send(client, north, frame(B_DEVICE, 9, ackRequired=True, rssi=-130.0))
    decide = client.app.state.ctx.downlinks.run_once  # type: ignore[attr-defined]
    decide()
    clock.now += timedelta(seconds=1.1)
    decide()

    def collect(station: Station) -> list[dict[str, Any]]:
        r = client.get("/ingest/sigfox/downlinks", headers=station.auth)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["downlinks"]
        return found

    assert collect(a_station) == []
    [dl] = collect(north)
    assert dl["device"] == B_DEVICE and dl["data"].startswith("0001e6ab" + "cafe")  # North's tapId


@pytest.mark.parametrize("profile", ["ADMIN", "LIMITED_ADMIN"])
def test_a_tenant_administrator_cannot_create_or_manage_base_stations(
    client: TestClient, db: Database, tenants: Tenants, profile: str
) -> None:
    admin = make_credential(db, tenants.customer_a, profile)
    body = {"id": "A5C", "groupId": str(tenants.customer_a), "name": "Mine"}
    r = client.post("/api/v2/base-stations", json=body, headers=admin.headers)
    assert r.status_code == 403, r.text  # sees the group, lacks the right
    r = client.post("/api/v2/base-stations", json=body | {"groupId": str(tenants.operator)}, headers=admin.headers)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "groupId"  # a group it cannot see
    existing = _station(db, tenants.customer_a, "A5A")
    assert client.get(f"/api/v2/base-stations/{existing.id}", headers=admin.headers).status_code == 200
    for method, path, payload in (
        ("PUT", f"/api/v2/base-stations/{existing.id}", {"name": "Renamed"}),
        ("PUT", f"/api/v2/base-stations/{existing.id}/renew-credential", None),
        ("DELETE", f"/api/v2/base-stations/{existing.id}", None),
    ):
        r = client.request(method, path, json=payload, headers=admin.headers)
        assert r.status_code == 403, (method, path, r.text)
    # Nor can it hand the right to itself.
    r = client.post(
        "/api/v2/api-users",
        json={"groupId": str(tenants.customer_a), "name": "op", "timezone": "UTC", "profileIds": ["NETWORK_OPERATOR"]},
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 403, r.text


def test_the_root_administrators_run_the_network(client: TestClient, db: Database, tenants: Tenants) -> None:
    """The first administrator holds NETWORK_OPERATOR on the root group from bootstrap on; an
    operator may own a station in a customer's group (it then serves that customer only)."""
    with db.read() as s:
        admin = s.scalars(select(User)).first()
        assert admin is not None
    r = client.get(f"/api/v2/users/{admin.id}", headers=tenants.root_admin.headers)
    assert r.status_code == 200, r.text
    roles = r.json()["userRoles"]
    assert {(role["group"]["id"], role["profile"]["id"]) for role in roles} == {
        (str(tenants.root), "ADMIN"),
        (str(tenants.root), "NETWORK_OPERATOR"),
    }
    operator = make_credential(db, tenants.root, "NETWORK_OPERATOR")
    for group_id, ident in ((tenants.operator, "0A1"), (tenants.customer_b, "0B2")):
        body = {"id": ident, "groupId": str(group_id), "name": f"Mast {ident}"}
        r = client.post("/api/v2/base-stations", json=body, headers=operator.headers)
        assert r.status_code == 201, r.text
