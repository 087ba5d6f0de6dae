"""Station ingest latency while heavy requests run in the same API process (issue 13, item 6).

`heron serve` on SQLite with one API process; 1,000,000 devices (made set-based: one template
row copied by one INSERT ... SELECT over a counter), 3 stations. The ingest load is
`heron.network.sigfox.simulator` in a process of its own at a steady rate (one frame a post, far below the
ceiling, so its latency is the server's answer time, not a queue): first alone, then while the
bench process keeps heavy requests running in the same API process, back to back, for the whole
window: 100,000-row `POST /api/v2/devices/bulk` calls, CSV exports of the 1,000,000 devices,
then both at once; two rounds of these four windows. Printed: the ingest p99 of each window,
each kind's mean and its growth over the mean alone (target, with both: under 50 ms).

The job runner is off (HERON_RUN_JOBS=false): the bulk jobs stay queued, so what is measured is
the requests themselves (parsing, checking and storing 100,000 rows; rendering and sending the
CSV), not the job engine's later batches. HERON_BENCH_SECONDS shortens each window."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from typing import Any

import httpx
from sqlalchemy import Table, text

from bench.common import create_stations, heron_server, meters_customer, run_load, target, temp_dir, token_holding_rows
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.base import utcnow
from heron.network.sigfox import simulator as simulate
from heron.registry import bulk
from heron.registry.models import Device
from heron.tenancy import api_users
from heron.tenancy.access import SYSTEM

SECONDS = min(float(os.environ.get("HERON_BENCH_SECONDS", "10")), 10.0)
EXPORTED = 1_000_000
BULK_ROWS = 100_000
INGEST_DEVICES = 2_000
RATE = 100.0  # frames/s, one frame a post: a steady load, far from saturation
STATIONS = 3
FILLER_FIRST, INGEST_FIRST, BULK_FIRST = 0x1000000, 0x3000000, 0x4000000
PAC = "A1B2C3D4E5F60718"


def _setup(settings: Settings) -> tuple[list[simulate.StationCredential], str, int]:
    prepared = prepare(settings, announce_password=False)
    now = utcnow()
    with prepared.db.write() as session:
        customer = meters_customer(session, max_tokens=EXPORTED + INGEST_DEVICES)
        creds = [c for c, _ in create_stations(session, customer.operator_id, STATIONS)]
        ids = simulate.device_ids(INGEST_FIRST, INGEST_DEVICES)
        dt_id = customer.device_type_id
        bulk.insert_devices(session, token_holding_rows(ids, dt_id, customer.group_id, customer.contract_id, now))
        _view, secret = api_users.create(
            session, SYSTEM, group_id=customer.group_id, name="bench", timezone="UTC", profile_ids=["ADMIN"]
        )
    _fill(prepared.db.engine, ids[0], EXPORTED - INGEST_DEVICES)
    prepared.db.dispose()
    return creds, secret, dt_id


def _fill(engine: Any, template: str, count: int) -> None:
    """`count` copies of the device `template` with ids FILLER_FIRST, FILLER_FIRST + 1, ...:
    one INSERT ... SELECT over a recursive counter (SQLite), no row built in Python."""
    table: Table = Device.__table__  # type: ignore[assignment]
    columns = [c.name for c in table.columns if c.name != "id"]
    made = {
        "identifier": "printf('%X', :first + n.i)",
        "sort_key": "substr('0000000000000000' || printf('%X', :first + n.i), -16)",
    }
    picked = ", ".join(made.get(c, f"t.{c}") for c in columns)
    sql = (
        f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count) "
        f"INSERT INTO devices ({', '.join(columns)}) SELECT {picked} FROM devices t, n WHERE t.identifier = :template"
    )
    with engine.begin() as conn:
        conn.execute(text(sql), {"first": FILLER_FIRST, "count": count, "template": template})


def _plan(url: str, creds: list[simulate.StationCredential], seconds: float) -> simulate.Plan:
    return simulate.Plan(
        url=url,
        stations=creds,
        devices=simulate.device_ids(INGEST_FIRST, INGEST_DEVICES),
        rate=RATE,
        duration=seconds,
        heard_by=(1, 1),
        clients_per_station=2,
        batch=1,
        seed=1,
    )


def _p99(stats: dict[str, Any]) -> float:
    return float(stats["latencyMs"]["p99"])


class _Heavy:
    """The heavy requests, back to back in threads of the bench process until `stop`."""

    def __init__(self, base: str, secret: str, dt_id: int, kinds: tuple[str, ...], first: int) -> None:
        self.base, self.headers, self.dt_id, self.first = base, {"authorization": secret}, dt_id, first
        self.stop = threading.Event()
        self.bulk_times: list[float] = []
        self.export_times: list[float] = []
        self.threads = [threading.Thread(target=getattr(self, f"_{kind}")) for kind in kinds]

    def __enter__(self) -> _Heavy:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _bulk(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=300) as http:
            n = 0
            while not self.stop.is_set():
                first = self.first + n * BULK_ROWS  # fresh ids; 0x400000 per window holds 41 requests
                rows = [{"id": f"{first + i:X}", "pac": PAC} for i in range(BULK_ROWS)]
                body = json.dumps({"deviceTypeId": str(self.dt_id), "data": rows}).encode()
                t0 = time.perf_counter()
                r = http.post("/api/v2/devices/bulk", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200 and r.json()["total"] == BULK_ROWS, r.text[:300]
                self.bulk_times.append(time.perf_counter() - t0)
                n += 1

    def _export(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=300) as http:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                lines = 0
                with http.stream("GET", "/api/v2/devices/export") as r:
                    assert r.status_code == 200
                    for block in r.iter_bytes():
                        lines += block.count(b"\n")
                        if self.stop.is_set():
                            break
                    else:
                        assert lines - 1 == EXPORTED, lines
                        self.export_times.append(time.perf_counter() - t0)

    def describe(self) -> str:
        bulks = ", ".join(f"{t:.1f}" for t in self.bulk_times)
        exports = ", ".join(f"{t:.1f}" for t in self.export_times)
        return f"bulk requests answered in (s): {bulks or '-'}; whole exports (s): {exports or '-'}"


def main() -> None:
    data_dir = temp_dir("heron-bench-heavy-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    creds, secret, dt_id = _setup(settings)
    print(f"set-up: {EXPORTED:,} devices (set-based), {STATIONS} stations in {time.perf_counter() - t0:.1f} s")
    print(
        f"SQLite, heron serve with one API process (job runner off); ingest: "
        f"heron.network.sigfox.simulator in its own process, "
        f"{RATE:.0f} posts/s (one frame each) for {SECONDS:.0f} s per run; heavy: {BULK_ROWS:,}-row "
        f"POST /devices/bulk requests, CSV exports of {EXPORTED:,} devices, then both, back to back in threads; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    # Two rounds of (alone, bulk, export, both): on a shared machine one window's p99 moves by
    # hundreds of ms on its own, so each kind's figure is the mean of its two windows.
    runs: list[tuple[str, tuple[str, ...]]] = [("alone", ()), ("bulk requests", ("bulk",))]
    runs += [("exports", ("export",)), ("both", ("bulk", "export"))]
    p99s: dict[str, list[float]] = {label: [] for label, _ in runs}
    with heron_server(data_dir, workers=1, extra_env={"HERON_RUN_JOBS": "false"}) as base:
        run_load(_plan(base, creds, 3.0), 120)  # warm-up
        for n in range(2 * len(runs)):
            label, kinds = runs[n % len(runs)]
            with _Heavy(base, secret, dt_id, kinds, BULK_FIRST + n * 0x400000) as heavy:
                p99s[label].append(_p99(run_load(_plan(base, creds, SECONDS), SECONDS + 120)))
            print(f"  ingest {label}: p99 {p99s[label][-1]:.1f} ms" + (f"; {heavy.describe()}" if kinds else ""))
    alone = statistics.fmean(p99s["alone"])
    for label, values in p99s.items():
        mean = statistics.fmean(values)
        print(f"  {label}: mean p99 {mean:.1f} ms" + (f", growth {mean - alone:+.1f} ms" if label != "alone" else ""))
    grown = statistics.fmean(p99s["both"]) - alone
    target("ingest p99 growth under a bulk request and an export", grown, 50, "ms")


if __name__ == "__main__":
    main()
