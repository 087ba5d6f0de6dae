"""The uplink writer's memory of recent messages (heron.uplink.store.RecentIndex) is bounded
(issue 13, item 12): under a kilobyte per device heard within the dedup horizon, never more
than `max_devices` devices, the least recently heard leaving first. What it holds is checked
against the database before use (tests/uplink/test_store_concurrency.py), so forgetting is
always safe. No database here: the index alone."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from bench.recent_index import measure

from heron.db.base import utcnow
from heron.uplink.store import RecentIndex, _Device, _Open, _remember

# 1,000,000 active devices in under 1 GiB (docs/ARCHITECTURE.md, "Memory of the uplink writer");
# measured 952 on CPython 3.11 (slotted records), 1,088 with a dataclass per message.
BYTES_PER_DEVICE = 1000


def test_an_active_device_costs_the_writer_under_a_kilobyte() -> None:
    assert measure(20_000) < BYTES_PER_DEVICE


def _hear(index: RecentIndex, ids: range, now: datetime) -> None:
    """A batch hearing `ids`, each with one new message from two stations."""
    batch = {str(i): _Device(i, 1, i % 4096, now) for i in ids}
    recent = {(i, i % 4096): _Open(10 * i, now, now, {1: (-120.0, "RC1"), 2: (None, "RC1")}) for i in ids}
    _remember(index, batch, recent, set(ids), [], now)
    index._sweep(now - timedelta(seconds=30))


def test_over_its_bound_the_index_forgets_the_least_recently_heard_devices() -> None:
    index, start = RecentIndex(max_devices=1000), utcnow()
    _hear(index, range(0, 600), start)
    _hear(index, range(600, 1200), start + timedelta(seconds=1))
    # 1,200 > 1,000: the 200 over and a tenth of the bound more go, the oldest first.
    assert list(index.devices) == list(range(300, 1200))
    _hear(index, range(300, 301), start + timedelta(seconds=2))  # heard again: now the most recent
    _hear(index, range(1200, 1500), start + timedelta(seconds=3))
    assert len(index.devices) <= 1000
    assert 300 in index.devices and 301 not in index.devices
    assert list(index.devices)[-301:] == [300, *range(1200, 1500)]


def test_devices_not_heard_within_the_horizon_are_forgotten_at_the_sweep() -> None:
    index, start = RecentIndex(), utcnow()
    _hear(index, range(0, 100), start)
    _hear(index, range(100, 150), start + timedelta(seconds=20))
    index._batches = RecentIndex.SWEEP_EVERY - 1  # the next batch sweeps
    _hear(index, range(150, 160), start + timedelta(seconds=40))  # the horizon is 30 s
    assert list(index.devices) == list(range(100, 160))
    known = index.devices[120]
    assert (known.last_seen, known.seq, known.touched) == (start + timedelta(seconds=20), 120, known.last_seen)
    [(seq, message)] = known.messages.items()
    assert (seq, message.id, message.arrived, message.time) == (120, 1200, known.last_seen, known.last_seen)
    assert message.stations == {1: (-120.0, "RC1"), 2: (None, "RC1")}


def test_the_writer_remembers_at_most_the_configured_number_of_devices(tmp_path: Path) -> None:
    from heron.bootstrap import prepare
    from heron.config import Settings
    from heron.runtime.context import _uplinks
    from heron.uplink.writer import UplinkWriter

    settings = Settings(data_dir=tmp_path, uplink_recent_devices=1_234)
    writer = _uplinks(settings, prepare(settings, announce_password=False))
    assert isinstance(writer, UplinkWriter)
    assert writer.index.max_devices == 1_234
