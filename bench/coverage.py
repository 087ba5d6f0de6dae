"""The service prediction grid (`GET /api/v2/coverages/global/grid`): 100 base stations over
a 1 x 1 degree region (~111 x 79 km, every station within reach of most of it) and a 100 x 100
grid over it (10,000 points), timed in-process (the numpy computation: margins of the four
device classes and redundancy) and through HTTP (one `heron serve` worker on SQLite: reading
the stations, computing, serialising ~200 kB of JSON). Target: under 100 ms.

`python -m bench coverage` or `python -m bench.coverage`."""

from __future__ import annotations

import time

import httpx
import numpy as np

from bench.common import describe_ms, heron_server, percentile, target, temp_dir
from heron.bootstrap import prepare
from heron.config import Settings
from heron.coverage.compute import Grid, LinkField, Model, Sites
from heron.network.sigfox import coverage, stations
from heron.tenancy import api_users, groups
from heron.tenancy.access import SYSTEM

STATIONS = 100
SIDE = 100  # grid points per side: 10,000 points
BOX = (3.5, 44.5, 4.5, 45.5)  # minLng, minLat, maxLng, maxLat
STEP = (BOX[2] - BOX[0]) / (SIDE - 1)
IN_PROCESS_RUNS, HTTP_RUNS = 50, 30
TARGET_MS = 100.0


def _positions() -> list[tuple[float, float, float | None, float | None]]:
    rng = np.random.default_rng(12)
    return [
        (
            float(rng.uniform(BOX[1], BOX[3])),
            float(rng.uniform(BOX[0], BOX[2])),
            float(rng.choice([15.0, 30.0, 45.0, 60.0])) if i % 2 else None,  # half take the default
            float(rng.uniform(2.0, 8.0)) if i % 3 else None,
        )
        for i in range(STATIONS)
    ]


def _in_process() -> list[float]:
    sites = Sites.of(
        [
            (lat, lng, h, g, coverage.ZONE_FREQUENCY_MHZ["RC1"], coverage.SENSITIVITY_DBM)
            for lat, lng, h, g in _positions()
        ]
    )
    grid = Grid(*BOX, STEP)
    assert grid.rows * grid.cols == SIDE * SIDE, (grid.rows, grid.cols)
    times = []
    for _ in range(IN_PROCESS_RUNS):
        start = time.perf_counter()
        field = LinkField(sites, Model())
        result = coverage.grid(field, grid, 0, coverage.SITUATIONS["INDOOR"])
        times.append(time.perf_counter() - start)
    covered = float((result.margins[0] > 0).mean())
    mean_redundancy = float(result.redundancy.mean())
    print(
        f"  {STATIONS} stations x {grid.rows * grid.cols:,} points: {covered:.0%} of the points covered (0U outdoor),"
    )
    print(f"  mean redundancy {mean_redundancy:.2f} (0U indoor, capped at 3)")
    return times


def _over_http() -> tuple[list[float], int]:
    data_dir = temp_dir("heron-bench-coverage-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    prepared = prepare(settings, announce_password=False)
    with prepared.db.write() as session:
        root = groups.get_root(session)
        assert root is not None
        operator = groups.create(session, SYSTEM, parent_id=root.id, name="Operator")
        customer = groups.create(session, SYSTEM, parent_id=root.id, name="Customer")
        for i, (lat, lng, height, gain) in enumerate(_positions()):
            fields = stations.StationFields(
                name=f"Station {i}", lat=lat, lng=lng, antenna_height=height, antenna_gain=gain
            )
            stations.create(session, SYSTEM, group_id=operator.id, identifier=f"{0xC0000 + i:X}", fields=fields)
        _view, secret = api_users.create(
            session, SYSTEM, group_id=customer.id, name="bench", timezone="UTC", profile_ids=["OBSERVER"]
        )
    prepared.db.dispose()
    params = {"bbox": ",".join(str(v) for v in BOX), "step": str(STEP)}
    times = []
    with heron_server(data_dir) as base, httpx.Client(base_url=base, headers={"authorization": secret}) as http:
        for _ in range(5):  # warm-up: imports, connections
            http.get("/api/v2/coverages/global/grid", params=params).raise_for_status()
        for _ in range(HTTP_RUNS):
            start = time.perf_counter()
            r = http.get("/api/v2/coverages/global/grid", params=params)
            times.append(time.perf_counter() - start)
            r.raise_for_status()
    body = r.json()
    assert body["cols"] * body["rows"] == SIDE * SIDE and len(body["redundancy"]) == SIDE * SIDE
    return times, len(r.content)


def main() -> None:
    print(f"service prediction grid: Okumura-Hata ({Model().environment}), 4 device classes + redundancy")
    local = _in_process()
    print(f"  in-process: {describe_ms(local)}")
    remote, size = _over_http()
    print(f"  over HTTP ({size / 1000:.0f} kB of JSON): {describe_ms(remote)}")
    target("in-process grid, median", percentile(local, 50) * 1000, TARGET_MS, "ms")
    target("in-process grid, p95", percentile(local, 95) * 1000, TARGET_MS, "ms")
    target("HTTP grid, median", percentile(remote, 50) * 1000, TARGET_MS, "ms")
    target("HTTP grid, p95", percentile(remote, 95) * 1000, TARGET_MS, "ms")


if __name__ == "__main__":
    main()
