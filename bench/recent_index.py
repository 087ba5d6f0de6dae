"""Bytes per active device of the uplink writer's `RecentIndex` (heron.uplink.store): the
structure the writer keeps of every device heard within the dedup horizon. Fills an index the way
`store_frames` does (a new message per device, heard by 1 to 3 stations, in batches of 5,000) and
measures it with tracemalloc. `python -m bench recent_index` (HERON_BENCH_DEVICES, default 100,000)."""

from __future__ import annotations

import os
import random
import tracemalloc
from datetime import timedelta

from heron.db.base import utcnow
from heron.uplink.store import RecentIndex, _Device, _Open, _remember

BATCH = 5_000


def fill(index: RecentIndex, devices: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = utcnow()
    for first in range(0, devices, BATCH):
        now = start + timedelta(milliseconds=first)  # one clock reading per batch, as the writer
        batch = {str(i): _Device(i, 1, rng.randrange(4096), now, changed=True) for i in range(first, first + BATCH)}
        recent: dict[tuple[int, int], _Open] = {}
        for dev in batch.values():
            picked = rng.sample(range(1, 50), rng.randint(1, 3))
            heard: dict[int, tuple[float | None, str]] = {s: (round(rng.uniform(-140, -90), 2), "RC1") for s in picked}
            heard_at = now - timedelta(microseconds=rng.randrange(1_000_000))  # the station's time
            recent[(dev.id, dev.seq or 0)] = _Open(rng.randrange(1 << 40), now, heard_at, heard)
        # Devices the index did not know, learnt with their new message, as after a batch.
        _remember(index, batch, recent, {d.id for d in batch.values()}, [], now)


def measure(devices: int) -> float:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = RecentIndex(max_devices=devices + 1)
    fill(index, devices)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(index.devices) == devices
    return used / devices


def main() -> None:
    devices = int(os.environ.get("HERON_BENCH_DEVICES", "50000"))
    per = measure(devices)
    print(f"recent index: {per:,.0f} bytes per active device ({devices:,} devices, tracemalloc)")
    print(f"  1,000,000 active devices: {per * 1_000_000 / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
