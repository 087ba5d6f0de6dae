"""1,000,000 devices in a depth-5 group tree on SQLite, over HTTP from a real `heron serve`:
first page with exact total and a later page through the `pageId` cursor, for a mid-level group
holding ~10 % of the devices (`deep=true`) with a selective and an unselective filter on
lifecycle, comState and token state; then the CSV export of all 1,000,000 devices, timed, with
the server's peak memory (VmHWM). The floor is the bare `executemany` that inserted the rows."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from bench.common import describe_ms, group_row, heron_server, percentile, target, temp_dir
from heron.bootstrap import prepare
from heron.config import Settings
from heron.registry.models import Contract, DeviceType
from heron.tenancy import api_users, groups
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import Group

DEVICES = int(os.environ.get("HERON_BENCH_DEVICES", "1000000"))
FANOUT = (2, 5, 5, 5, 8)  # root > 2 > 10 > 50 > 250 > 2,000 leaf groups; a depth-2 group holds 10 %
REQUESTS = int(os.environ.get("HERON_BENCH_REQUESTS", "30"))
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores datetimes in SQLite


def build_tree(settings: Settings) -> tuple[list[int], int, int]:
    """Groups (executemany), one device type per leaf, one contract; returns (leaf ids, the
    mid-level group, the contract)."""
    db = prepare(settings, announce_password=False).db
    now = datetime.now(UTC)
    with db.write() as s:
        root = groups.get_root(s)
        assert root is not None
        rows: list[dict[str, Any]] = []
        frontier = [(root.id, root.path)]
        next_id = root.id + 1
        mid = 0
        for depth, fan in enumerate(FANOUT, start=1):
            new = []
            for parent, path in frontier:
                for _ in range(fan):
                    gid, next_id = next_id, next_id + 1
                    rows.append(group_row(gid, parent, f"{path}{gid}/", depth, now))
                    new.append((gid, f"{path}{gid}/"))
            if depth == 2:
                mid = new[len(new) // 2][0]
            frontier = new
        s.execute(insert(Group), rows)
        contract = s.execute(
            insert(Contract).returning(Contract.id),
            {
                "group_id": root.id,
                "name": "Bench contract",
                "name_ci": "bench contract",
                "max_tokens": 0,
                "max_uplink_frames": 140,
                "max_downlink_frames": 4,
                "token_duration": 12,
                "start_at": now,
                "timezone": "UTC",
                "tokens_in_use": 0,
                "created_at": now,
            },
        ).scalar_one()
        leaves = [gid for gid, _ in frontier]
        s.execute(
            insert(DeviceType),
            [
                {
                    "id": 10_000 + gid,
                    "group_id": gid,
                    "name": f"Type {gid}",
                    "name_ci": f"type {gid}",
                    "network": "SIGFOX",
                    "downlink_mode": 2,
                    "payload_type": 2,
                    "created_at": now,
                }
                for gid in leaves
            ],
        )
    db.dispose()
    return leaves, mid, contract


COLUMNS = (
    "network, identifier, sort_key, name, device_type_id, group_id, contract_id, token_state, token_end_at, "
    "prototype, activable, automatic_renewal, lifecycle, activated_at, last_seen_at, com_state, created_at"
)


def device_rows(leaves: list[int], contract: int) -> list[tuple[Any, ...]]:
    """Deterministic mix: lifecycle ACTIVE 85 % / REGISTERED 14 % / DEACTIVATED 1 %; comState
    OK 75 %, NOT_SEEN 15 %, WARN 8 %, KO 1 %, NO 1 %; token OK 98.5 %, else OFF_CONTRACT or NONE."""
    rnd = random.Random(42)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    created = (now - timedelta(days=400)).strftime(SQLITE_TIME)
    per_leaf = DEVICES // len(leaves)
    out: list[tuple[Any, ...]] = []
    serial = 0x100000
    for gid in leaves:
        for _ in range(per_leaf):
            serial += 1
            ident = f"{serial:X}"
            x = rnd.random()
            lifecycle = "ACTIVE" if x < 0.85 else "REGISTERED" if x < 0.99 else "DEACTIVATED"
            y = rnd.random()
            com = 1 if y < 0.75 else 5 if y < 0.90 else 2 if y < 0.98 else 3 if y < 0.99 else 0
            z = rnd.random()
            token = "OK" if z < 0.985 else "OFF_CONTRACT" if z < 0.995 else "NONE"
            seen = None if com == 5 else (now - timedelta(seconds=rnd.randrange(30 * 86400))).strftime(SQLITE_TIME)
            out.append(
                (
                    "SIGFOX",
                    ident,
                    ident.rjust(16, "0"),
                    f"Device {ident}",
                    10_000 + gid,
                    gid,
                    contract if token == "OK" else None,
                    token,
                    (now + timedelta(days=300)).strftime(SQLITE_TIME) if token == "OK" else None,
                    0,
                    1,
                    1,
                    lifecycle,
                    created,
                    seen,
                    com,
                    created,
                )
            )
    return out


def server_pid(port: str) -> int:
    """The `heron serve` process listening on `port` (one worker: the process itself)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"heron.cli" in cmd and b"serve" in cmd and f"HERON_HTTP_PORT={port}".encode() in env.split(b"\0"):
            return int(entry.name)
    raise RuntimeError("server process not found")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def stream_export(base: str, secret: str, client: httpx.Client) -> tuple[int, int, float, float]:
    """(lines, bytes, seconds, seconds to the first byte) of GET /devices/export, read by curl
    when installed (a client in C leaves the CPU to the server), else by httpx."""
    url = f"{base}/api/v2/devices/export"
    curl = shutil.which("curl")
    if curl is not None:
        t0 = time.perf_counter()
        done = subprocess.run(
            [curl, "-sS", "--fail", "-H", f"authorization: {secret}", "-o", "-", "-w", "%{time_starttransfer}", url],
            capture_output=True,
            check=True,
        )
        elapsed = time.perf_counter() - t0
        body, _, first = done.stdout.rpartition(b"\n")
        body += b"\n"
        return body.count(b"\n"), len(body), elapsed, float(first)
    t0 = time.perf_counter()
    lines = size = 0
    first_byte = 0.0
    with client.stream("GET", "/api/v2/devices/export") as r:
        assert r.status_code == 200, r.read()
        for block in r.iter_bytes():
            first_byte = first_byte or time.perf_counter() - t0
            size += len(block)
            lines += block.count(b"\n")
    return lines, size, time.perf_counter() - t0, first_byte


def timed_get(client: httpx.Client, url: str, n: int) -> tuple[list[float], dict[str, Any]]:
    times: list[float] = []
    body: dict[str, Any] = {}
    for i in range(n + 3):
        t0 = time.perf_counter()
        r = client.get(url)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        body = r.json()
        if i >= 3:  # warm-up
            times.append(elapsed)
    return times, body


def main() -> None:
    data_dir = temp_dir("heron-bench-devices-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    leaves, mid, contract = build_tree(settings)
    rows = device_rows(leaves, contract)
    print(f"built a depth-{len(FANOUT)} tree with {len(leaves):,} leaf groups and {len(rows):,} device rows in memory")
    print(f"  ({time.perf_counter() - t0:.1f} s to build the tree and the rows)")
    db_file = data_dir / "heron.db"
    conn = sqlite3.connect(db_file)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    marks = ",".join("?" * len(COLUMNS.split(",")))
    t0 = time.perf_counter()
    with conn:
        conn.executemany(f"INSERT INTO devices ({COLUMNS}) VALUES ({marks})", rows)
    floor = time.perf_counter() - t0
    conn.close()
    n = len(rows)
    del rows
    print(f"floor: bare sqlite3 executemany of {n:,} devices (every index in place): {floor:.1f} s")
    print(f"  ({floor / n * 1e6:.1f} us per row)")

    prepared = prepare(settings, announce_password=False)
    with prepared.db.write() as s:
        root = groups.get_root(s)
        assert root is not None
        _view, secret = api_users.create(
            s, SYSTEM, group_id=root.id, name="bench", timezone="UTC", profile_ids=["ADMIN"]
        )
    prepared.db.dispose()

    print(f"machine: {os.cpu_count()} cores, SQLite, one server worker; other test suites may share the cores")
    print(f"  load average before the requests: {os.getloadavg()[0]:.2f}")
    with (
        heron_server(data_dir, workers=1) as base,
        httpx.Client(base_url=base, headers={"authorization": secret}, timeout=120) as client,
    ):
        pid = server_pid(base.rsplit(":", 1)[1])
        cases = [
            ("lifecycle", "ACTIVE", "DEACTIVATED"),
            ("comState", "1", "3"),
            ("tokenState", "0", "1"),
        ]
        worst_first = worst_later = 0.0
        for field, unselective, selective in cases:
            for label, value in (("unselective", unselective), ("selective", selective)):
                query = f"groupIds={mid}&deep=true&{field}={value}"
                first, body = timed_get(client, f"/api/v2/devices?{query}&withTotal=true", REQUESTS)
                nxt = body["paging"]["next"]
                for _ in range(4):  # five pages in
                    nxt = client.get(nxt).json()["paging"].get("next", nxt)
                later, page = timed_get(client, nxt, REQUESTS)
                assert page["data"]
                p95_first, p95_later = percentile(first, 95) * 1000, percentile(later, 95) * 1000
                worst_first, worst_later = max(worst_first, p95_first), max(worst_later, p95_later)
                print(f"  {field}={value} ({label}, total {body['total']:,} of the group's ~{n // 10:,}):")
                print(f"    first page + exact total: {describe_ms(first)}")
                print(f"    6th page via pageId:      {describe_ms(later)}")
        page_floor_ms = floor / n * 100 * 1000
        print(f"  floor for the 100 rows of a page: {page_floor_ms:.2f} ms of executemany")
        target("worst p95 first page + exact total", worst_first, 100, "ms")
        target("worst p95 later page via cursor", worst_later, 100, "ms")

        before = vm_hwm_mb(pid)
        lines, size, export, first_byte = stream_export(base, secret, client)
        peak = vm_hwm_mb(pid)
        print(
            f"  export: {lines - 1:,} devices, {size / 1e6:.0f} MB of CSV in {export:.1f} s "
            f"(first byte after {first_byte:.2f} s; {export / floor:.2f} x the executemany floor)"
        )
        print(f"  server peak memory (VmHWM): {before:.0f} MB before the export, {peak:.0f} MB after")
        assert lines - 1 == n, (lines, n)
        target("export of all devices", export, 15, "s")
        target("server peak memory", peak, 250, "MB")
