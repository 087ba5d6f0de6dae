"""Consumption per day (`/devices/{id}/consumption/{year}[/{month}]`, and Heron's device type and
group reads) through HTTP on both databases: uplinks stored by the real ingest, a downlink
decided, collected and acknowledged by a station, summed per contract day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.events import service as events
from heron.events.models import UplinkCount
from heron.registry.models import Contract
from tests.api.test_bad_input import assert_invalid, assert_message
from tests.conftest import Tenants
from tests.downlink.test_downlinks import collect, decide, set_mode
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["radio"]  # fixture imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

API = "/api/v2"


@pytest.fixture
def clock(client: TestClient) -> Clock:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    ctx.uplinks.clock = ctx.deliveries.clock = ctx.downlinks.clock = fake
    return fake


def read(client: TestClient, tenants: Tenants, path: str, root: bool = False) -> Any:
    r = client.get(API + path, headers=(tenants.root_admin if root else tenants.a_admin).headers)
    assert r.status_code == 200, r.text
    return r.json()


def contract_today(db: Database, now: datetime) -> date:
    with db.read() as s:
        timezone = s.scalar(select(Contract.timezone).limit(1))
    return now.astimezone(ZoneInfo(timezone or "UTC")).date()


def test_uplinks_and_acknowledged_downlinks_are_counted_per_day_for_a_device_its_type_and_its_groups(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock, db: Database
) -> None:
    north, south, _ = radio.stations
    send(client, north, frame(device="1001", seq=1), frame(device="1001", seq=2), frame(device="1002", seq=1))
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    send(client, south, frame(device="1001", seq=3, ackRequired=True))
    clock.now += timedelta(seconds=1.1)
    decide(client)
    [dl] = collect(client, south)
    r = client.post(f"/ingest/sigfox/downlinks/{dl['id']}/report", json={"emitted": True}, headers=south.auth)
    assert r.status_code == 204, r.text

    today = contract_today(db, clock.now)
    year = read(client, tenants, f"/devices/1001/consumption/{today.year}")["deviceConsumptions"]
    assert len(year) == (366 if today.year % 4 == 0 else 365)
    index = today.timetuple().tm_yday - 1
    assert year[index] == {
        "day": today.isoformat(),
        "frameCount": 3,
        "downlinkFrameCount": 1,
        "roamingFrameCount": 0,
        "roamingDownlinkFrameCount": 0,
        "roamingDetails": [],
    }
    assert sum(d["frameCount"] for d in year) == 3 and year[0]["day"] == f"{today.year}-01-01"
    month = read(client, tenants, f"/devices/1001/consumption/{today.year}/{today.month}")["deviceConsumptions"]
    assert month[today.day - 1]["frameCount"] == 3 and month[today.day - 1]["downlinkFrameCount"] == 1
    assert [d["day"] for d in month][:2] == [f"{today.year}-{today.month:02}-01", f"{today.year}-{today.month:02}-02"]

    def day_of(path: str, root: bool = False) -> tuple[int, int]:
        days = read(client, tenants, f"{path}/consumption/{today.year}/{today.month}", root)["deviceConsumptions"]
        return days[today.day - 1]["frameCount"], days[today.day - 1]["downlinkFrameCount"]

    assert day_of(f"/device-types/{radio.device_type_id}") == (4, 1)  # 1001 and 1002
    assert day_of(f"/groups/{tenants.customer_a}") == (4, 1)
    assert day_of(f"/groups/{tenants.operator}", root=True) == (4, 1)  # the subtree
    assert day_of(f"/groups/{tenants.site_a}") == (0, 0)
    assert day_of("/devices/1003") == (0, 0)
    other_month = 1 if today.month != 1 else 2
    assert all(
        d["frameCount"] == 0
        for d in read(client, tenants, f"/devices/1001/consumption/{today.year}/{other_month}")["deviceConsumptions"]
    )


def test_a_downlink_the_station_could_not_emit_is_not_counted(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock, db: Database
) -> None:
    _north, south, _ = radio.stations
    set_mode(client, tenants, radio, downlinkMode=0, downlinkDataString="0011223344556677")
    send(client, south, frame(device="1001", seq=3, ackRequired=True))
    clock.now += timedelta(seconds=1.1)
    decide(client)
    [dl] = collect(client, south)
    client.post(f"/ingest/sigfox/downlinks/{dl['id']}/report", json={"emitted": False}, headers=south.auth)
    today = contract_today(db, clock.now)
    days = read(client, tenants, f"/devices/1001/consumption/{today.year}/{today.month}")["deviceConsumptions"]
    assert (days[today.day - 1]["frameCount"], days[today.day - 1]["downlinkFrameCount"]) == (1, 0)


def test_counters_are_kept_a_year_and_a_month_then_pruned(
    client: TestClient, tenants: Tenants, radio: Radio, db: Database
) -> None:
    send(client, radio.stations[0], frame(device="1001", seq=1))
    now = utcnow()
    with db.write() as s:
        assert events.prune_counts(s, now + timedelta(days=399)) == 0  # a year's consumption stays readable
    with db.write() as s:
        assert events.prune_counts(s, now + timedelta(days=402)) == 1
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(UplinkCount)) == 0


def test_consumption_refuses_bad_periods_and_foreign_objects(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    h = tenants.a_admin.headers
    for path, field in (
        ("/devices/1001/consumption/1969", "year"),
        ("/devices/1001/consumption/twenty", "year"),
        ("/devices/1001/consumption/2026/13", "month"),
        ("/devices/1001/consumption/2026/0", "month"),
        (f"/device-types/{radio.device_type_id}/consumption/2026/x", "month"),
        (f"/groups/{tenants.customer_a}/consumption/99999", "year"),
        ("/groups/x/consumption/2026", "id"),
    ):
        assert_invalid(client.get(API + path, headers=h), field, "path")
    b = tenants.b_admin.headers
    for path in (
        "/devices/1001/consumption/2026",
        f"/device-types/{radio.device_type_id}/consumption/2026/1",
        f"/groups/{tenants.customer_a}/consumption/2026",
        "/devices/FFFF/consumption/2026",
    ):
        assert_message(client.get(API + path, headers=b), 404)
