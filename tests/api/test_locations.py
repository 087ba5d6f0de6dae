"""Network geolocation through HTTP on both databases: frames go in through the real ingest from
stations at known positions; the message's `computedLocation` and `/devices/{id}/locations`
show what heron.geolocation makes of every reception (joined and late ones refine it); a static
device's declared position wins; the list pages like messages and keeps the messages' rights."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heron.db.engine import Database
from heron.geolocation import Reading, locate
from heron.keys import Keyring
from heron.registry import contracts, device_types, devices
from heron.tenancy.access import SYSTEM
from tests.conftest import TEST_KEK, Tenants
from tests.network.sigfox.test_ingest import Clock, Station, clock, frame, messages_of, send

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
__all__ = ["clock"]  # the fixture, used here

NORTH, SOUTH, EAST = (45.60, 4.25), (45.50, 4.25), (45.55, 4.40)


@pytest.fixture
def stations(client: TestClient, db: Database, tenants: Tenants) -> dict[str, Station]:
    """Three stations at known positions and one without a position; in Customer A, devices
    1001 and 1002 holding tokens (neither with a declared position)."""
    made = {}
    for ident, name, at in (
        ("1E6AB", "north", NORTH),
        ("2B", "south", SOUTH),
        ("C0FFEE", "east", EAST),
        ("D00D", "bare", None),
    ):
        body: dict[str, Any] = {"id": ident, "groupId": str(tenants.operator), "name": name}
        if at is not None:
            body |= {"lat": at[0], "lng": at[1]}
        r = client.post("/api/v2/base-stations", json=body, headers=tenants.root_admin.headers)
        assert r.status_code == 201, r.text
        made[name] = Station(r.json()["id"], r.json()["secret"])
    with db.write() as s:
        contract = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Plan", max_tokens=10)
        dt = device_types.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name="Trackers", contract_id=contract.contract.id),
        )
        for ident in ("1001", "1002"):
            devices.create_sigfox(
                s,
                SYSTEM,
                Keyring.parse(TEST_KEK),
                identifier=ident,
                pac="0123456789ABCDEF",
                device_type_id=dt.device_type.id,
                fields=devices.DeviceFields(name=f"Tracker {ident}", activable=True),
            )
    return made


def _location(client: TestClient, tenants: Tenants, device: str = "1001") -> list[dict[str, Any]]:
    [message] = messages_of(client, tenants, device)
    found: list[dict[str, Any]] = message["computedLocation"]
    return found


def _expected(*readings: Reading) -> list[dict[str, Any]]:
    fix = locate(readings)
    assert fix is not None
    return [{"lat": fix.lat, "lng": fix.lng, "radius": fix.radius, "source": 2}]


def _locations(client: TestClient, tenants: Tenants, device: str = "1001", **query: Any) -> dict[str, Any]:
    r = client.get(f"/api/v2/devices/{device}/locations", params=query, headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_message_heard_by_stations_with_positions_has_their_computed_location(
    client: TestClient, tenants: Tenants, stations: dict[str, Station]
) -> None:
    send(client, stations["north"], frame(rssi=-110.0))
    send(client, stations["south"], frame(rssi=-130.0))
    send(client, stations["east"], frame(rssi=-128.0))
    [location] = _location(client, tenants)
    assert [location] == _expected(Reading(*NORTH, -110.0), Reading(*SOUTH, -130.0), Reading(*EAST, -128.0))
    # Loud at north, faint elsewhere: near north, inside the stations' triangle.
    assert 45.55 < location["lat"] < 45.60 and 4.25 < location["lng"] < 4.40
    assert location["source"] == 2 and 50 <= location["radius"] < 20_000


def test_each_reception_refines_the_location_late_ones_too(
    client: TestClient, tenants: Tenants, stations: dict[str, Station], clock: Clock
) -> None:
    north, south, east = Reading(*NORTH, -120.0), Reading(*SOUTH, -121.0), Reading(*EAST, -125.0)
    send(client, stations["north"], frame(rssi=-120.0))
    one = _location(client, tenants)
    # One station: its position, and the distance its RSSI stands for as the radius.
    assert one == _expected(north) and (one[0]["lat"], one[0]["lng"]) == NORTH
    send(client, stations["south"], frame(rssi=-121.0))
    assert _location(client, tenants) == _expected(north, south)
    clock.now += timedelta(seconds=5)  # after the dedup window: a late reception
    send(client, stations["east"], frame(rssi=-125.0))
    [message] = messages_of(client, tenants)
    assert [r["late"] for r in message["rinfos"]] == [False, False, True]
    assert message["computedLocation"] == _expected(north, south, east) != _expected(north, south)


def test_a_station_without_a_position_is_left_out_and_alone_gives_no_location(
    client: TestClient, tenants: Tenants, stations: dict[str, Station]
) -> None:
    send(client, stations["bare"], frame(rssi=-100.0))
    assert _location(client, tenants) == []
    assert _locations(client, tenants)["data"] == [{"time": messages_of(client, tenants)[0]["time"], "valid": False}]
    send(client, stations["north"], frame(rssi=-130.0))
    assert _location(client, tenants) == _expected(Reading(*NORTH, -130.0))
    # Neither RSSI nor position: nothing to go by (a reception without RSSI is left out too).
    send(client, stations["south"], frame(device="1002", rssi=None))
    assert _location(client, tenants, "1002") == []


def test_a_static_device_s_declared_position_wins_over_every_reception(
    client: TestClient, tenants: Tenants, stations: dict[str, Station], clock: Clock
) -> None:
    r = client.put("/api/v2/devices/1002", json={"lat": 45.0, "lng": 4.0}, headers=tenants.a_admin.headers)
    assert r.status_code == 204, r.text
    declared = [{"lat": 45.0, "lng": 4.0, "radius": 50, "source": 3}]
    send(client, stations["north"], frame(device="1002", rssi=-100.0))
    assert _location(client, tenants, "1002") == declared
    send(client, stations["south"], frame(device="1002", rssi=-110.0))
    assert _location(client, tenants, "1002") == declared
    # The writer's memory gone (a restart, another process): the stored message says it is pinned.
    client.app.state.ctx.uplinks.index.clear()  # type: ignore[attr-defined]
    clock.now += timedelta(seconds=5)
    send(client, stations["east"], frame(device="1002", rssi=-105.0))
    [message] = messages_of(client, tenants, "1002")
    assert len(message["rinfos"]) == 3 and message["computedLocation"] == declared
    [item] = _locations(client, tenants, "1002")["data"]
    assert item == {"time": message["time"], "valid": True} | declared[0]
    # The same device's neighbour without a declared position is located by the network.
    send(client, stations["north"], frame(device="1001", rssi=-100.0))
    assert _location(client, tenants, "1001") == _expected(Reading(*NORTH, -100.0))


def test_device_locations_list_one_item_per_message_newest_first_paged_like_messages(
    client: TestClient, tenants: Tenants, stations: dict[str, Station], clock: Clock
) -> None:
    for seq in range(1, 6):
        clock.now += timedelta(seconds=2)
        send(client, stations["north"], frame(seq=seq, rssi=-100.0 - seq))
    times = [m["time"] for m in messages_of(client, tenants)]
    assert len(times) == 5 and times == sorted(times, reverse=True)
    first = _locations(client, tenants, limit=2)
    assert [i["time"] for i in first["data"]] == times[:2]
    for item, seq in zip(first["data"], (5, 4), strict=True):
        assert item == {"time": item["time"], "valid": True} | _expected(Reading(*NORTH, -100.0 - seq))[0]
    seen, page = list(first["data"]), first
    while "next" in page["paging"]:
        r = client.get(page["paging"]["next"], headers=tenants.a_admin.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["data"]
    assert [i["time"] for i in seen] == times
    # `before` alone (the last item's time, exclusive), `since` inclusive, `offset`.
    assert [i["time"] for i in _locations(client, tenants, before=times[1])["data"]] == times[2:]
    assert [i["time"] for i in _locations(client, tenants, since=times[2])["data"]] == times[:3]
    assert [i["time"] for i in _locations(client, tenants, offset=3)["data"]] == times[3:]


def test_device_locations_leave_out_of_band_messages_out_unless_asked(
    client: TestClient, tenants: Tenants, stations: dict[str, Station], clock: Clock
) -> None:
    send(client, stations["north"], frame(seq=1, rssi=-110.0))
    clock.now += timedelta(seconds=2)
    keep_alive = frame(seq=2, frameType="KEEPALIVE", data="", battery=3.6, temperature=20, rssi=-115.0)
    send(client, stations["south"], keep_alive)
    times = [m["time"] for m in messages_of(client, tenants)]
    assert [i["time"] for i in _locations(client, tenants)["data"]] == times[1:]
    both = _locations(client, tenants, oob="true")["data"]
    assert [i["time"] for i in both] == times
    assert both[0] | {"time": 0} == {"time": 0, "valid": True} | _expected(Reading(*SOUTH, -115.0))[0]


def test_device_locations_keep_the_messages_rights(
    client: TestClient, tenants: Tenants, stations: dict[str, Station]
) -> None:
    send(client, stations["north"], frame(rssi=-110.0))
    reader = client.get("/api/v2/devices/1001/locations", headers=tenants.a_reader.headers)
    assert reader.status_code == 200 and len(reader.json()["data"]) == 1
    for headers, device in ((tenants.b_admin.headers, "1001"), (tenants.a_admin.headers, "ABCDEF")):
        r = client.get(f"/api/v2/devices/{device}/locations", headers=headers)
        assert r.status_code == 404 and set(r.json()) == {"message"}
    assert client.get("/api/v2/devices/1001/locations").status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("before=-1", "before"),
        ("limit=0", "limit"),
        ("offset=x", "offset"),
        ("oob=perhaps", "oob"),
    ],
)
def test_device_locations_refuse_bad_parameters_naming_them(
    client: TestClient, tenants: Tenants, stations: dict[str, Station], query: str, field: str
) -> None:
    r = client.get(f"/api/v2/devices/1001/locations?{query}", headers=tenants.a_admin.headers)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
