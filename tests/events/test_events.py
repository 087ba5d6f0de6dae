"""Events end to end on both databases: frames in through the real ingest endpoint, the upkeep
passes run with an injected clock, ERROR callbacks out to a real HTTP receiver, and the events
read back through the API. A "restart" is a second context on the same database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import Delivery
from heron.events.models import Event
from heron.registry.models import Contract, Device, DeviceType
from heron.runtime.context import AppContext, build_context
from tests.conftest import Tenants
from tests.delivery.test_outbox import Receiver, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["radio", "receiver"]  # fixtures, imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ERROR_BODY = '{"device": "{device}", "info": "{info}", "severity": "{severity}", "time": {time}}'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback opened for the receiver; no background runner or worker: each test runs the
    upkeep and the delivery rounds itself, with its own clock."""
    return settings.model_copy(
        update={"callback_allow_cidrs": "127.0.0.0/8", "run_deliveries": False, "run_jobs": False}
    )


@pytest.fixture
def clock(client: TestClient) -> Clock:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    ctx.uplinks.clock = ctx.deliveries.clock = fake
    return fake


def upkeep(ctx: AppContext, now: datetime) -> None:
    """One pass of every periodic task of the process's job runner, at `now`."""
    for task in ctx.jobs.periodic:
        with ctx.db.write() as session:
            task.task(session, now)


def restarted_upkeep(settings: Settings, now: datetime) -> None:
    """The upkeep of a process started afresh on the same database."""
    fresh = build_context(settings, prepare(settings, announce_password=False))
    try:
        upkeep(fresh, now)
    finally:
        fresh.db.dispose()


def events_of(client: TestClient, tenants: Tenants, device: str = "1001", **query: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/v2/devices/{device}/events", params=query, headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def com_state(client: TestClient, tenants: Tenants, device: str = "1001") -> int:
    state: int = client.get(f"/api/v2/devices/{device}", headers=tenants.a_admin.headers).json()["comState"]
    return state


def set_keep_alive(db: Database, radio: Radio, seconds: int) -> None:
    with db.write() as s:
        s.execute(update(DeviceType).where(DeviceType.id == radio.device_type_id).values(keep_alive=seconds))


def set_contract(db: Database, **values: Any) -> None:
    with db.write() as s:
        s.execute(update(Contract).where(Contract.name == "Plan").values(**values))


def count(db: Database, model: type[Any]) -> int:
    with db.read() as s:
        return len(list(s.scalars(select(model))))


# -- keep-alive ---------------------------------------------------------------------------------------
def test_a_device_silent_past_its_keep_alive_is_lost_once_and_restored_when_it_speaks(
    client: TestClient,
    ctx: AppContext,
    settings: Settings,
    db: Database,
    tenants: Tenants,
    radio: Radio,
    receiver: Receiver,
    clock: Clock,
) -> None:
    set_keep_alive(db, radio, 600)
    make_callback(
        client,
        tenants,
        radio,
        callbackType=2,
        callbackSubtype=None,
        payloadConfig=None,
        url=receiver.url + "/error/{device}",
        bodyTemplate=ERROR_BODY,
    )
    send(client, radio.stations[0], frame(seq=7))
    heard = clock.now
    upkeep(ctx, heard + timedelta(seconds=599))
    assert com_state(client, tenants) == 1 and events_of(client, tenants) == []

    clock.now = heard + timedelta(seconds=601)
    upkeep(ctx, clock.now)
    assert com_state(client, tenants) == 3  # KO
    [lost] = events_of(client, tenants)
    assert lost["type"] == "COMMUNICATION_LOST" and lost["device"] == {"id": "1001", "name": "Meter 1001"}
    assert lost["time"] == int(clock.now.timestamp() * 1000)
    assert lost["details"] == {"lastSeen": int(heard.timestamp() * 1000), "keepAlive": 600}
    # 1002 and 1003 were never heard: NOT_SEEN, not lost.
    assert com_state(client, tenants, "1002") == 5 and events_of(client, tenants, "1002") == []

    assert rounds(client) == 1
    [req] = receiver.requests
    assert req["path"] == "/error/1001"
    assert json.loads(req["body"]) == {
        "device": "1001",
        "info": f"No message received since {heard.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
        "severity": "ERROR",
        "time": int(clock.now.timestamp()),
    }

    # Later passes, in this process and after a restart, add nothing.
    upkeep(ctx, clock.now + timedelta(hours=2))
    restarted_upkeep(settings, clock.now + timedelta(hours=3))
    assert len(events_of(client, tenants)) == 1 and count(db, Delivery) == 1
    assert rounds(client) == 0 and len(receiver.requests) == 1

    clock.now += timedelta(hours=4)
    send(client, radio.stations[0], frame(seq=8))
    assert com_state(client, tenants) == 1
    restored, first = events_of(client, tenants)
    assert first == lost
    assert restored["type"] == "COMMUNICATION_RESTORED"
    assert restored["details"] == {"lostSince": lost["time"]}
    send(client, radio.stations[0], frame(seq=9))
    assert len(events_of(client, tenants)) == 2  # restored once

    # Silent again: a second loss, a second ERROR callback.
    clock.now += timedelta(seconds=601)
    upkeep(ctx, clock.now)
    assert events_of(client, tenants)[0]["type"] == "COMMUNICATION_LOST"
    assert rounds(client) == 1 and len(receiver.requests) == 2


def test_another_tenant_cannot_read_a_devices_events(
    client: TestClient, ctx: AppContext, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_keep_alive(db, radio, 60)
    send(client, radio.stations[0], frame())
    upkeep(ctx, clock.now + timedelta(seconds=61))
    assert len(events_of(client, tenants)) == 1
    r = client.get("/api/v2/devices/1001/events", headers=tenants.b_admin.headers)
    assert r.status_code == 404 and r.json() == {"message": "device not found"}
    unknown = client.get("/api/v2/devices/FFFF/events", headers=tenants.b_admin.headers)
    assert unknown.status_code == 404 and unknown.json() == r.json()
    assert client.get("/api/v2/devices/1001/events", headers=tenants.a_reader.headers).status_code == 200


# -- overusage ----------------------------------------------------------------------------------------
def test_uplinks_past_the_daily_limit_raise_one_overusage_event_and_are_all_delivered(
    client: TestClient,
    ctx: AppContext,
    settings: Settings,
    db: Database,
    tenants: Tenants,
    radio: Radio,
    receiver: Receiver,
    clock: Clock,
) -> None:
    set_contract(db, max_uplink_frames=3, timezone="UTC")
    make_callback(client, tenants, radio, url=receiver.url + "/up", bodyTemplate='{"seq": {seqNumber}}')
    clock.now = datetime(2030, 3, 10, 12, 0, tzinfo=UTC)
    for seq in range(1, 6):
        send(client, radio.stations[0], frame(seq=seq))
        clock.now += timedelta(seconds=10)
    [event] = events_of(client, tenants)
    assert event["type"] == "OVERUSAGE"
    assert event["details"] | {"contractId": None} == {
        "day": "2030-03-10",
        "uplinks": 4,
        "maxUplinkFrames": 3,
        "contractId": None,
    }
    while rounds(client):  # one per device and round: order is kept
        pass
    assert sorted(b["seq"] for b in receiver.bodies()) == [1, 2, 3, 4, 5]  # still delivered

    # More the same day, after a restart: still one event for the day.
    restarted_upkeep(settings, clock.now)
    send(client, radio.stations[0], frame(seq=6))
    assert len(events_of(client, tenants)) == 1
    assert events_of(client, tenants, "1002") == []  # counted per device

    # The next contract day starts a new count.
    clock.now = datetime(2030, 3, 11, 0, 0, 5, tzinfo=UTC)
    for seq in range(7, 11):
        send(client, radio.stations[0], frame(seq=seq))
    newest, _first = events_of(client, tenants)
    assert newest["type"] == "OVERUSAGE" and newest["details"]["day"] == "2030-03-11"


def test_the_contract_day_ends_at_midnight_in_the_contracts_timezone(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_contract(db, max_uplink_frames=3, timezone="America/New_York")
    # 04:30 UTC is 23:30 the day before in New York (UTC-5 in January); 05:30 UTC is past midnight.
    clock.now = datetime(2030, 1, 15, 4, 30, tzinfo=UTC)
    for seq in range(1, 4):
        send(client, radio.stations[0], frame(seq=seq))
    assert events_of(client, tenants) == []
    clock.now = datetime(2030, 1, 15, 5, 30, tzinfo=UTC)
    for seq in range(4, 7):
        send(client, radio.stations[0], frame(seq=seq))
    assert events_of(client, tenants) == []  # 3 on the 14th, 3 on the 15th: none over
    send(client, radio.stations[0], frame(seq=7))
    [event] = events_of(client, tenants)
    assert event["details"]["day"] == "2030-01-15" and event["details"]["uplinks"] == 4


def test_a_device_without_a_contract_has_no_limit(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_contract(db, max_uplink_frames=1)
    with db.write() as s:  # a device whose token is kept though its contract is gone (no limit known)
        s.execute(update(Device).where(Device.identifier == "1001").values(contract_id=None))
    for seq in range(1, 4):
        send(client, radio.stations[0], frame(seq=seq))
    assert events_of(client, tenants) == []
    send(client, radio.stations[0], frame(device="1002", seq=1), frame(device="1002", seq=2))
    assert [e["type"] for e in events_of(client, tenants, "1002")] == ["OVERUSAGE"]


# -- stations -----------------------------------------------------------------------------------------
def station_events(client: TestClient, tenants: Tenants, station: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v2/base-stations/{station}/events", headers=tenants.root_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_a_station_silent_past_the_threshold_goes_offline_once_and_back_online(
    client: TestClient,
    ctx: AppContext,
    settings: Settings,
    tenants: Tenants,
    radio: Radio,
    clock: Clock,
) -> None:
    north = radio.stations[0]
    send(client, north, frame())
    heard = clock.now
    threshold = timedelta(seconds=settings.station_offline_seconds)
    upkeep(ctx, heard + threshold - timedelta(seconds=1))
    assert station_events(client, tenants, north.id) == []

    upkeep(ctx, heard + threshold + timedelta(seconds=1))
    [offline] = station_events(client, tenants, north.id)
    assert offline["type"] == "STATION_OFFLINE" and offline["baseStation"] == {"id": "1E6AB", "name": "North"}
    assert offline["details"] == {"lastSeen": int(heard.timestamp() * 1000)}
    station = client.get(f"/api/v2/base-stations/{north.id}", headers=tenants.root_admin.headers).json()
    assert station["state"] in ("OFFLINE", 2)
    assert station_events(client, tenants, radio.stations[1].id) == []  # never heard: NEW, not offline

    upkeep(ctx, heard + 2 * threshold)
    restarted_upkeep(settings, heard + 3 * threshold)
    assert len(station_events(client, tenants, north.id)) == 1

    clock.now = heard + 4 * threshold
    send(client, north, frame(seq=8))
    upkeep(ctx, clock.now + timedelta(seconds=1))
    online, _offline = station_events(client, tenants, north.id)
    assert online["type"] == "STATION_ONLINE"
    upkeep(ctx, clock.now + timedelta(seconds=2))
    assert len(station_events(client, tenants, north.id)) == 2
    # Customer A's key does not see the operator's station.
    r = client.get(f"/api/v2/base-stations/{north.id}/events", headers=tenants.a_admin.headers)
    assert r.status_code == 404


# -- tokens -------------------------------------------------------------------------------------------
def test_a_token_given_back_at_its_end_writes_one_token_expired_event(
    client: TestClient, ctx: AppContext, db: Database, tenants: Tenants, radio: Radio
) -> None:
    with db.write() as s:
        s.execute(update(Device).where(Device.identifier.in_(["1001", "1002"])).values(automatic_renewal=False))
        end = s.scalar(select(Device.token_end_at).where(Device.identifier == "1001"))
    assert end is not None
    upkeep(ctx, end - timedelta(seconds=1))
    assert events_of(client, tenants) == []
    upkeep(ctx, end + timedelta(seconds=1))
    [event] = events_of(client, tenants)
    assert event["type"] == "TOKEN_EXPIRED" and event["details"]["contractId"]
    upkeep(ctx, end + timedelta(days=1))
    assert len(events_of(client, tenants)) == 1
    assert events_of(client, tenants, "1003") == []  # renewed, not expired
    with db.read() as s:
        kinds = [e.kind for e in s.scalars(select(Event).where(Event.kind == "TOKEN_EXPIRED"))]
    assert len(kinds) == 2  # 1001 and 1002; 1003 renewed


def test_events_page_newest_first_with_since_before_and_limit(
    client: TestClient, ctx: AppContext, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    set_keep_alive(db, radio, 60)
    times = []
    for seq in range(1, 4):
        send(client, radio.stations[0], frame(seq=seq))
        clock.now += timedelta(seconds=61)
        upkeep(ctx, clock.now)
        times.append(int(clock.now.timestamp() * 1000))
        clock.now += timedelta(seconds=1)
    everything = events_of(client, tenants)
    assert [e["type"] for e in everything] == ["COMMUNICATION_LOST", "COMMUNICATION_RESTORED"] * 2 + [
        "COMMUNICATION_LOST"
    ]
    assert [e["time"] for e in everything] == sorted((e["time"] for e in everything), reverse=True)
    r = client.get("/api/v2/devices/1001/events", params={"limit": 2}, headers=tenants.a_admin.headers)
    page = r.json()
    assert [e["id"] for e in page["data"]] == [e["id"] for e in everything[:2]]
    following = client.get(page["paging"]["next"], headers=tenants.a_admin.headers).json()
    assert [e["id"] for e in following["data"]] == [e["id"] for e in everything[2:4]]
    window = events_of(client, tenants, since=times[1], before=times[2])
    assert [e["time"] for e in window] == [times[1] + 1000, times[1]]  # restored at seq 3, lost after seq 2


def test_events_sharing_a_millisecond_page_like_messages(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio
) -> None:
    """Events follow the messages' page rule (heron.db.keyset): `paging.next` shows each once
    however many share a millisecond, a client paging by `before` alone never loops or repeats,
    and `offset` is an exact slice."""
    send(client, radio.stations[0], frame(seq=1))
    with db.write() as s:
        device_id = s.scalar(select(Device.id).where(Device.identifier == "1001"))
        base = datetime(2026, 3, 1, tzinfo=UTC)
        # 7 events in one millisecond, then 5 in ms of their own (newest first: the 5, then the 7).
        times = [base] * 7 + [base + timedelta(milliseconds=i) for i in range(1, 6)]
        s.add_all(Event(kind="COMMUNICATION_LOST", device_id=device_id, time=t) for t in times)
    headers = tenants.a_admin.headers
    url, seen = "/api/v2/devices/1001/events?limit=3&before=1800000000000", []
    while url:
        page = client.get(url, headers=headers).json()
        seen += [e["id"] for e in page["data"]]
        url = page["paging"].get("next")
    assert len(seen) == len(set(seen)) == 12

    before, by_before = 1800000000000, []
    for _ in range(20):
        data = client.get(f"/api/v2/devices/1001/events?limit=3&before={before}", headers=headers).json()["data"]
        if not data:
            break
        by_before += [e["id"] for e in data]
        before = data[-1]["time"]
    assert len(by_before) == len(set(by_before)) and set(by_before) <= set(seen)
    assert len(by_before) >= 5  # the five own milliseconds at least; the shared one may be skipped whole

    sliced = client.get("/api/v2/devices/1001/events?limit=4&offset=4&before=1800000000000", headers=headers)
    assert [e["id"] for e in sliced.json()["data"]] == seen[4:8]
    assert client.get("/api/v2/devices/1001/events?offset=-1", headers=headers).status_code == 400
