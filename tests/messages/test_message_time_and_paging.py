"""A message's `time` is when the network heard the frame (the earliest reception's station time,
bounded by its arrival), and its lists page by that time: `since` inclusive, `before`
exclusive, `paging.next` followed or `before` taken from the last message, `offset` honoured.
Through the HTTP API (the station ingest, the messages API, a real callback receiver) on both
databases."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from heron.config import Settings
from heron.db.base import utcnow
from tests.conftest import Tenants
from tests.delivery.test_outbox import Receiver, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["radio", "receiver"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback opened for the callback receiver; deliveries run when a test says."""
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.0/8", "run_deliveries": False})


@pytest.fixture
def clock(client: TestClient) -> Clock:
    """The writer's and the outbox's clock, on a whole millisecond (arrival times are exact)."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fake = Clock()
    fake.now = fake.now.replace(microsecond=fake.now.microsecond // 1000 * 1000)
    ctx.uplinks.clock = ctx.deliveries.clock = fake
    return fake


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def get(client: TestClient, tenants: Tenants, path: str, **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params or None, headers=tenants.a_admin.headers)  # {} drops a URL's query
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def times_by_seq(client: TestClient, tenants: Tenants, **params: Any) -> dict[int, int]:
    data = get(client, tenants, "/api/v2/devices/1001/messages", **params)["data"]
    return {m["seqNumber"]: m["time"] for m in data}


def test_frames_sent_in_one_request_take_their_station_times(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    arrival = ms(clock.now)
    heard = {1: arrival - 3_000, 2: arrival - 2_001, 3: arrival - 17}
    send(client, radio.stations[0], *[frame(seq=s, time=t) for s, t in heard.items()])
    assert times_by_seq(client, tenants) == heard
    # Heron's own record of the device is still when it heard from it.
    assert get(client, tenants, "/api/v2/devices/1001")["lastCom"] == arrival


def test_a_station_clock_ahead_cannot_place_a_frame_in_the_future(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    arrival = ms(clock.now)
    send(client, radio.stations[0], frame(seq=1, time=arrival + 3_600_000), frame(seq=2, time=arrival - 5))
    send(client, radio.stations[0], frame(seq=3))  # no station time: the arrival
    assert times_by_seq(client, tenants) == {1: arrival, 2: arrival - 5, 3: arrival}


def test_the_earliest_reception_sets_the_time_and_the_dedup_window_runs_on_arrival(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    north, south, east = radio.stations
    arrival = ms(clock.now)
    send(client, north, frame(time=arrival - 100))
    clock.now += timedelta(seconds=0.5)  # within the window by arrival, though heard 40 s earlier
    send(client, south, frame(time=arrival - 40_000))
    clock.now += timedelta(seconds=5)  # past the window: late, however early its station time
    send(client, east, frame(time=arrival - 60_000))
    [msg] = get(client, tenants, "/api/v2/devices/1001/messages")["data"]
    assert [r["late"] for r in msg["rinfos"]] == [False, False, True]
    assert msg["time"] == arrival - 60_000  # the earliest station time heard
    window = get(client, tenants, "/api/v2/devices/1001/messages", since=arrival - 60_000, before=arrival - 59_999)
    assert [m["seqNumber"] for m in window["data"]] == [7]


def test_since_and_before_select_by_station_time(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    t = ms(utcnow()) - 60_000
    send(client, radio.stations[0], *[frame(seq=s, time=t + 1_000 * s) for s in (1, 2, 3)])
    t1, t2, t3 = t + 1_000, t + 2_000, t + 3_000
    assert list(times_by_seq(client, tenants, since=t2, before=t3)) == [2]  # since inclusive, before exclusive
    assert list(times_by_seq(client, tenants, before=t2)) == [1]
    assert list(times_by_seq(client, tenants, since=t3)) == [3]
    assert list(times_by_seq(client, tenants, since=t1, before=t3 + 1)) == [3, 2, 1]
    assert list(times_by_seq(client, tenants, since=t3 + 1)) == []


# 250 messages of three devices: 60 a second apart, then 120 heard in one millisecond (more than
# a page), then 70 in pairs sharing a millisecond.
SHARED = 120


def store_250(client: TestClient, radio: Radio) -> tuple[int, dict[tuple[str, int], int]]:
    top = ms(utcnow()) - 600_000
    shared = top - 61_000
    frames, times = [], {}
    for i in range(250):
        if i < 60:
            t = top - 1_000 * i
        elif i < 60 + SHARED:
            t = shared
        else:
            t = shared - 1_000 * (1 + (i - 60 - SHARED) // 2)
        key = (("1001", "1002", "1003")[i % 3], i // 3 + 1)
        frames.append(frame(device=key[0], seq=key[1], time=t))
        times[key] = t
    send(client, radio.stations[0], *frames)
    return shared, times


def keys(data: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(m["device"]["id"], m["seqNumber"]) for m in data]


@pytest.mark.parametrize("limit", [100, 7])
def test_following_paging_next_shows_every_message_once_even_in_a_shared_millisecond(
    client: TestClient, tenants: Tenants, radio: Radio, limit: int
) -> None:
    _, times = store_250(client, radio)
    seen: list[dict[str, Any]] = []
    url: str | None = f"/api/v2/device-types/{radio.device_type_id}/messages?limit={limit}"
    pages = 0
    while url:
        body = get(client, tenants, url)
        assert 0 < len(body["data"]) <= limit
        seen += body["data"]
        url = body["paging"].get("next")
        # Only parameters the Sigfox document declares, so a generated client can follow it.
        assert url is None or set(parse_qs(urlsplit(url).query)) <= {"limit", "before", "offset"}
        pages += 1
        assert pages <= 250
    assert Counter(keys(seen)) == Counter(list(times))  # each exactly once
    assert [m["time"] for m in seen] == sorted(times.values(), reverse=True)  # newest first
    assert {m["time"] for m in seen} == set(times.values())


def by_before(client: TestClient, tenants: Tenants, path: str, limit: int) -> list[dict[str, Any]]:
    """A client that pages by `before` = the last message's time alone, until a page is empty."""
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(300):
        data = get(client, tenants, path, **params)["data"]
        if not data:
            return seen
        seen += data
        params["before"] = data[-1]["time"]
    raise AssertionError("paging by `before` did not end")


@pytest.mark.parametrize("limit", [100, 7])
def test_paging_by_before_alone_ends_without_duplicates_and_skips_only_inside_an_overfull_millisecond(
    client: TestClient, tenants: Tenants, radio: Radio, limit: int
) -> None:
    shared, times = store_250(client, radio)
    seen = keys(by_before(client, tenants, f"/api/v2/device-types/{radio.device_type_id}/messages", limit))
    assert len(seen) == len(set(seen))  # no duplicates
    missed = set(times) - set(seen)
    # Pages end on a millisecond boundary: only a millisecond holding more than `limit`
    # messages loses its rest (paging.next's before + offset carries it); every other one is whole.
    assert {times[k] for k in missed} == {shared}
    assert len(missed) == SHARED - limit


def test_paging_by_before_alone_sees_all_of_a_device_whose_milliseconds_fit_in_a_page(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    t = ms(utcnow()) - 600_000
    # Pairs of frames in one millisecond: a page of 5 would cut every third pair in two.
    send(client, radio.stations[0], *[frame(seq=s, time=t - 1_000 * (s // 2)) for s in range(1, 31)])
    seen = [m["seqNumber"] for m in by_before(client, tenants, "/api/v2/devices/1001/messages", 5)]
    assert sorted(seen) == list(range(1, 31))


def test_offset_skips_messages_and_offset_pages_are_exact_slices(
    client: TestClient, tenants: Tenants, radio: Radio
) -> None:
    _, times = store_250(client, radio)
    path = f"/api/v2/device-types/{radio.device_type_id}/messages"
    slices = [keys(get(client, tenants, path, limit=100, offset=n)["data"]) for n in (0, 100, 200)]
    assert [len(s) for s in slices] == [100, 100, 50]  # exact slices, though the ms at 100 is shared
    assert Counter(slices[0] + slices[1] + slices[2]) == Counter(list(times))  # each once
    page = get(client, tenants, path, limit=3, offset=5)
    order = [k for k, _ in sorted(times.items(), key=lambda kv: kv[1], reverse=True)]
    assert set(keys(page["data"])) == set(order[5:8])
    # paging.next goes on after the slice (the offset is spent, not repeated).
    nxt = page["paging"]["next"]
    assert "offset=" not in nxt
    assert set(keys(get(client, tenants, nxt)["data"])) == set(order[8:11])
    assert get(client, tenants, path, offset=250)["data"] == []
    device = get(client, tenants, "/api/v2/devices/1002/messages", limit=2, offset=1)["data"]
    assert [m["seqNumber"] for m in device] == [2, 3]  # 1002's seq 1 is its newest


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_a_bad_offset_is_refused_naming_it(client: TestClient, tenants: Tenants, radio: Radio, value: str) -> None:
    for path in ("/api/v2/devices/1001/messages", f"/api/v2/device-types/{radio.device_type_id}/messages"):
        r = client.get(path, params={"offset": value}, headers=tenants.a_admin.headers)
        assert r.status_code == 400, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["offset"]


def test_a_data_callback_gets_the_frame_time_and_fires_when_the_window_closes_by_arrival(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(client, tenants, radio, url=receiver.url + "/up", bodyTemplate='{"time": {time}}')
    north, south, _ = radio.stations
    heard = clock.now - timedelta(seconds=30)  # the stations report the frame 30 s old
    send(client, north, frame(time=ms(heard) + 400))
    clock.now += timedelta(seconds=0.5)
    send(client, south, frame(time=ms(heard)))
    assert rounds(client) == 0  # the window (1 s from the first arrival) is still open
    clock.now += timedelta(seconds=0.51)
    assert rounds(client) == 1
    assert [json.loads(r["body"]) for r in receiver.requests] == [{"time": int(heard.timestamp())}]
    [msg] = get(client, tenants, "/api/v2/devices/1001/messages")["data"]
    assert msg["time"] == ms(heard) and len(msg["rinfos"]) == 2


def test_the_csv_export_shows_station_times(client: TestClient, tenants: Tenants, radio: Radio) -> None:
    t = ms(utcnow()) - 60_000
    send(client, radio.stations[0], frame(seq=1, time=t), frame(seq=2, time=t + 1_500))
    r = client.get(
        "/api/v2/devices/1001/messages/export", params={"before": t + 1_500}, headers=tenants.a_admin.headers
    )
    assert r.status_code == 200, r.text
    [row] = r.text.strip().split("\r\n")[1:]
    stamp = datetime.fromtimestamp(t / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert row.split(",")[:3] == [stamp, "1001", "1"]
