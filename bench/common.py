"""Helpers shared by the benchmarks: percentiles, a throwaway Heron server, target lines."""

from __future__ import annotations

import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from heron.network.sigfox import simulator as simulate
from heron.runtime.background import fast_event_loop


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def describe_ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50) * 1000:.2f} ms, p95 {percentile(values, 95) * 1000:.2f} ms, "
        f"p99 {percentile(values, 99) * 1000:.2f} ms, mean {statistics.fmean(values) * 1000:.2f} ms (n={len(values)})"
    )


def target(label: str, value: float, limit: float, unit: str, higher_is_better: bool = False) -> None:
    ok = value >= limit if higher_is_better else value < limit
    rel = ">=" if higher_is_better else "<"
    print(f"  {label}: {value:,.3f} {unit}   target {rel} {limit:,} {unit}   {'MET' if ok else 'MISSED'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def heron_server(data_dir: Path, workers: int = 1, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`heron serve` on a free loopback port with SQLite in `data_dir`; yields the base URL."""
    port = free_port()
    env = {
        **os.environ,
        "HERON_DATA_DIR": str(data_dir),
        "HERON_HTTP_PORT": str(port),
        "HERON_WORKERS": str(workers),
        "HERON_ACCESS_LOG": "false",
        "HERON_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "heron.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("heron serve did not start: " + (data_dir / "server.log").read_text()[-2000:])
            time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def insert_floor(
    db_file: str, network: str, identifiers: list[str], device_type_id: int, group_id: int, key_column: str
) -> tuple[sqlite3.Connection, float]:
    """The floor of a registration benchmark: the same devices (`registry.bulk.new_row` rows with
    a 70-character stand-in for the sealed key, `created_by` "bench") as one bare sqlite3
    executemany INSERT into `devices` of the non-NULL columns, committed. Returns the open connection (the caller may
    time more on it) and the seconds; `drop_floor_rows` removes them."""
    from heron.registry.bulk import new_row

    now = datetime.now(UTC)
    rows = []
    for identifier in identifiers:
        row = new_row(
            network=network,
            identifier=identifier,
            device_type_id=device_type_id,
            group_id=group_id,
            automatic_renewal=True,
            created_by="bench",
            now=now,
        )
        rows.append(row | {"created_at": now.isoformat(), key_column: "x" * 70})
    # Only the columns with values, as Heron's own insert binds them (heron.db.bulk_insert):
    # binding a None costs sqlite3 five times an int, so a floor binding them would flatter Heron.
    columns = [c for c in rows[0] if rows[0][c] is not None]
    sql = f"INSERT INTO devices ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    values = [tuple(r[c] for c in columns) for r in rows]
    conn = sqlite3.connect(db_file)
    start = time.perf_counter()
    conn.executemany(sql, values)
    conn.commit()
    return conn, time.perf_counter() - start


def drop_floor_rows(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM devices WHERE created_by = 'bench'")
    conn.commit()
    conn.close()


def group_row(gid: int, parent: int, path: str, depth: int, now: datetime) -> dict[str, Any]:
    """A `groups` row for a benchmark's tree, built without the service (one executemany)."""
    name = f"Group {gid}"
    return {
        "id": gid,
        "parent_id": parent,
        "path": path,
        "depth": depth,
        "name": name,
        "name_ci": name.lower(),
        "description": "",
        "type": 2,
        "timezone": "UTC",
        "created_at": now,
        "created_by": "bench",
    }


def token_holding_rows(
    identifiers: list[str], device_type_id: int, group_id: int, contract_id: int, now: datetime
) -> list[dict[str, Any]]:
    """ACTIVE Sigfox devices holding a token on the contract, as `registry.bulk.new_row` rows for
    `insert_devices`; the PAC is a 70-character stand-in (the ingest never reads it)."""
    from heron.registry import bulk

    return [
        bulk.new_row(
            network=bulk.SIGFOX,
            identifier=ident,
            device_type_id=device_type_id,
            group_id=group_id,
            automatic_renewal=True,
            created_by="bench",
            now=now,
        )
        | {"lifecycle": bulk.ACTIVE, "token_state": bulk.TOKEN_OK, "contract_id": contract_id, "pac": "x" * 70}
        for ident in identifiers
    ]


# -- a customer with meters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Customer:
    operator_id: int  # the customer group's parent: an "Operator" group, or the root
    group_id: int
    contract_id: int
    device_type_id: int


def meters_customer(
    session: Any, *, max_tokens: int, operator: bool = True, network: str = "SIGFOX", **fields: Any
) -> Customer:
    """A "Customer" group (under an "Operator" group, or the root), its contract "Plan" of
    `max_tokens` and its device type "Meters" on that contract (with `fields` beside)."""
    from heron.registry import contracts, device_types
    from heron.tenancy import groups
    from heron.tenancy.access import SYSTEM

    root = groups.get_root(session)
    assert root is not None
    parent = groups.create(session, SYSTEM, parent_id=root.id, name="Operator").id if operator else root.id
    group = groups.create(session, SYSTEM, parent_id=parent, name="Customer")
    contract = contracts.create(session, SYSTEM, group_id=group.id, name="Plan", max_tokens=max_tokens)
    dt = device_types.create(
        session,
        SYSTEM,
        group_id=group.id,
        network=network,
        fields=device_types.DeviceTypeFields(name="Meters", contract_id=contract.contract.id, **fields),
    )
    return Customer(parent, group.id, contract.contract.id, dt.device_type.id)


# -- stations ------------------------------------------------------------------------------------------
def create_stations(session: Any, operator_group_id: int, count: int) -> list[tuple[simulate.StationCredential, int]]:
    """`count` base stations of the operator group (ids 5E000, 5E001, ...): each one's credential
    for the simulator, and its database id."""
    from heron.network.sigfox import stations
    from heron.network.sigfox.stations import StationFields
    from heron.tenancy.access import SYSTEM

    out = []
    for i in range(count):
        view, secret = stations.create(
            session,
            SYSTEM,
            group_id=operator_group_id,
            identifier=f"{0x5E000 + i:X}",
            fields=StationFields(name=f"Station {i}", lat=45.0 + i / 10, lng=4.0),
        )
        out.append((simulate.StationCredential(view.station.identifier, secret), view.station.id))
    return out


# -- the load generator, in a process of its own ------------------------------------------------------
def run_load(plan: simulate.Plan, timeout: float) -> dict[str, Any]:
    """Run a `heron.network.sigfox.simulator` plan in a separate process (`python -m bench.common load`, the plan
    on stdin, its stats as JSON on stdout), so it does not share the benchmark's interpreter."""
    import json
    from dataclasses import asdict

    out = subprocess.run(
        [sys.executable, "-m", "bench.common", "load"],
        input=json.dumps(asdict(plan)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _load_main() -> None:
    import asyncio
    import json

    raw = json.loads(sys.stdin.read())
    raw["stations"] = [simulate.StationCredential(**s) for s in raw["stations"]]
    raw["heard_by"] = tuple(raw["heard_by"])
    with asyncio.Runner(loop_factory=fast_event_loop()) as runner:
        stats = runner.run(simulate.run(simulate.Plan(**raw)))
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        _load_main()
