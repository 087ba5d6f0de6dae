"""The writer's recent-message index (heron.uplink.store.RecentIndex) on both databases: two
writers on one database (as two server processes are) never make two messages of one frame nor
two receptions of one station, whichever of them each reception reaches; a failed transaction
leaves nothing remembered; a deleted device stops being delivered at once; a station credential
the ingest let in from its cache is refused at once when renewed or disabled."""

# ruff: noqa: F811 - the tests take the imported `radio` fixture as a parameter

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.messages.models import Message, Reception
from heron.network.sigfox.radio import NETWORK as SIGFOX
from heron.runtime.context import AppContext
from heron.stations.models import BaseStation, UndeliveredFrames
from heron.uplink.store import HeardFrame
from heron.uplink.writer import UplinkWriter
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Radio, frame, radio, send  # noqa: F401 - radio is a fixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WINDOW, HORIZON = timedelta(seconds=5), timedelta(seconds=60)


def station_ids(db: Database) -> list[int]:
    with db.read() as s:
        return list(s.scalars(select(BaseStation.id).order_by(BaseStation.id)))


def heard(station_id: int, seq: int, device: str = "1001") -> HeardFrame:
    return HeardFrame(
        station_id=station_id,
        device=device,
        seq_number=seq,
        frame_type="DATA",
        data="0a0b",
        ack_required=False,
        time=utcnow(),
        rssi=-110.0 - station_id,
    )


def totals(db: Database) -> tuple[list[tuple[int, int]], int]:
    """(seq, receptions column) of every message, and the reception rows."""
    with db.read() as s:
        messages = [(m.seq_number, m.receptions) for m in s.scalars(select(Message).order_by(Message.seq_number))]
        return messages, int(s.scalar(select(func.count()).select_from(Reception)) or 0)


@pytest.fixture
def writers(ctx: AppContext) -> Iterator[tuple[UplinkWriter, UplinkWriter]]:
    """Two writers with their own engines and indexes: two processes, as far as the index knows."""
    other = Database(ctx.db.url)
    yield (
        UplinkWriter(ctx.db, dedup_window=WINDOW, horizon=HORIZON),
        UplinkWriter(other, dedup_window=WINDOW, horizon=HORIZON),
    )
    other.dispose()


def test_two_writers_share_frames_without_duplicates(
    ctx: AppContext, radio: Radio, writers: tuple[UplinkWriter, UplinkWriter]
) -> None:
    a, b = writers
    s0, s1, s2 = station_ids(ctx.db)
    assert len(a.store_now([heard(s0, 7)], network=SIGFOX).new) == 1  # a makes the message and remembers it
    assert b.store_now([heard(s1, 7)], network=SIGFOX).joined == 1  # b joins it from the database
    # a's memory of the message lacks s1: its reception count tells it to look again.
    assert a.store_now([heard(s1, 7)], network=SIGFOX).duplicates == 1
    assert totals(ctx.db) == ([(7, 2)], 2)
    # b makes the next frame's message: the device row is no longer as a left it.
    assert len(b.store_now([heard(s0, 8)], network=SIGFOX).new) == 1
    result = a.store_now([heard(s2, 8), heard(s0, 8)], network=SIGFOX)
    assert (result.new, result.joined, result.duplicates) == ([], 1, 1)
    assert b.store_now([heard(s2, 8)], network=SIGFOX).duplicates == 1
    assert totals(ctx.db) == ([(7, 2), (8, 2)], 4)


def test_two_writers_racing_on_the_same_frames_make_one_message_each(
    ctx: AppContext, radio: Radio, writers: tuple[UplinkWriter, UplinkWriter]
) -> None:
    s0, s1, s2 = station_ids(ctx.db)
    frames = 60
    errors: list[BaseException] = []

    def run(writer: UplinkWriter, stations: tuple[int, ...]) -> None:
        try:
            for seq in range(frames):
                # Each reception reaches both writers: the other writer's copy is a duplicate.
                writer.store_now(
                    [heard(s, seq, device) for s in stations for device in ("1001", "1002")], network=SIGFOX
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w, st)) for w, st in zip(writers, ((s0, s1), (s1, s2)), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    messages, receptions = totals(ctx.db)
    assert len(messages) == 2 * frames
    assert all(count == 3 for _seq, count in messages)
    assert receptions == 3 * 2 * frames


def test_a_failed_transaction_leaves_nothing_remembered(
    ctx: AppContext, radio: Radio, writers: tuple[UplinkWriter, UplinkWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = writers
    s0, s1, _s2 = station_ids(ctx.db)
    a.store_now([heard(s0, 1)], network=SIGFOX)

    def fail(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("outbox down")

    monkeypatch.setattr("heron.uplink.handoff.enqueue_messages", fail)
    with pytest.raises(RuntimeError):
        a.store_now([heard(s0, 2), heard(s1, 1)], network=SIGFOX)  # rolled back
    assert a.index.devices == {}
    monkeypatch.undo()
    result = a.store_now([heard(s0, 2), heard(s1, 1)], network=SIGFOX)
    assert (len(result.new), result.joined) == (1, 1)
    assert totals(ctx.db) == ([(1, 2), (2, 1)], 3)


def test_a_device_deleted_after_ingest_stops_being_delivered_at_once(
    client: TestClient, ctx: AppContext, tenants: Tenants, radio: Radio
) -> None:
    """Devices are read from the database in every batch (not cached): the next frame after the
    deletion is refused, though the writer remembers the device's messages."""
    send(client, radio.stations[0], frame(device="1002", seq=1))
    assert client.app.state.ctx.uplinks.index.devices  # type: ignore[attr-defined] # the writer remembers it
    assert client.delete("/api/v2/devices/1002", headers=tenants.a_admin.headers).status_code == 204
    send(client, radio.stations[0], frame(device="1002", seq=2))
    send(client, radio.stations[1], frame(device="1002", seq=1))  # a late reception of a stored frame
    with ctx.db.read() as s:
        assert [m.seq_number for m in s.scalars(select(Message))] == [1]
        assert s.scalar(select(func.count()).select_from(Reception)) == 1
        refused = s.scalar(select(func.sum(UndeliveredFrames.frames)).where(UndeliveredFrames.device == "1002"))
    assert refused == 2


@pytest.mark.parametrize("change", ["renew", "disable"])
def test_a_cached_station_credential_is_refused_at_once_when_renewed_or_disabled(
    client: TestClient, ctx: AppContext, tenants: Tenants, radio: Radio, change: str
) -> None:
    north = radio.stations[0]
    send(client, north, frame(seq=1))
    send(client, north, frame(seq=2))  # let in from the cache, checked again by the writer
    if change == "renew":
        r = client.put(f"/api/v2/base-stations/{north.id}/renew-credential", headers=tenants.root_admin.headers)
        assert r.status_code == 200
    else:
        r = client.put(f"/api/v2/base-stations/{north.id}", json={"enabled": False}, headers=tenants.root_admin.headers)
        assert r.status_code == 204
    r = client.post("/ingest/sigfox", json={"receptions": [frame(seq=3)]}, headers=north.auth)
    assert r.status_code == 401, r.text
    assert client.post("/ingest/sigfox", json={"receptions": [frame(seq=4)]}, headers=north.auth).status_code == 401
    assert [seq for seq, _count in totals(ctx.db)[0]] == [1, 2]
