"""New series of 10,000 Sigfox devices from a CSV file, over HTTP through the job engine, on
SQLite, 1 % of the lines bad: timed from the upload until the job's status shows it done, then
checked (successes, per-row errors, tokensInUse, a PAC that decrypts). Printed beside the floor:
the same rows as one bare `executemany` insert into the same table in the same run."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from bench.common import drop_floor_rows, heron_server, insert_floor, meters_customer, target, temp_dir
from heron.bootstrap import prepare
from heron.config import Settings
from heron.registry import devices
from heron.registry.models import Device
from heron.runtime.context import build_context
from heron.tenancy import api_users
from heron.tenancy.access import SYSTEM

ROWS = 10_000
PAC = "A1B2C3D4E5F60718"


def _series() -> tuple[bytes, int]:
    lines, bad = ["id;pac"], 0
    for i in range(ROWS):
        if i % 100 == 99:
            lines.append(f"{0x100000 + i:X};NOTAPAC")  # 1 % bad rows
            bad += 1
        else:
            lines.append(f"{0x100000 + i:X};{PAC}")
    return ("\n".join(lines) + "\n").encode(), bad


def _floor(db_file: str, device_type_id: int, group_id: int) -> float:
    """The same number of rows as one bare executemany into `devices` (then removed)."""
    identifiers = [f"F{i:07X}" for i in range(ROWS)]
    conn, elapsed = insert_floor(db_file, "SIGFOX", identifiers, device_type_id, group_id, "pac")
    drop_floor_rows(conn)
    return elapsed


def main() -> None:
    data_dir = temp_dir("heron-bench-bulk-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    ctx = build_context(settings, prepare(settings, announce_password=False))
    with ctx.db.write() as session:
        customer = meters_customer(session, max_tokens=20_000, operator=False)
        _view, secret = api_users.create(
            session, SYSTEM, group_id=customer.group_id, name="bench", timezone="UTC", profile_ids=["ADMIN"]
        )
        dt_id, contract_id, group_id = customer.device_type_id, customer.contract_id, customer.group_id
    db_file = settings.resolved_database_url.removeprefix("sqlite:///")
    ctx.db.dispose()
    body, bad = _series()
    headers = {"authorization": secret}
    with heron_server(data_dir) as base, httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        http.get("/api/v2/devices/bulk/0000000000000000")  # warm the worker
        start = time.perf_counter()
        r = http.post(
            "/api/v2/devices/bulk/series/new",
            params={"deviceTypeId": str(dt_id), "prefix": "Meter-"},
            files={"file": ("series.csv", body, "text/csv")},
        )
        r.raise_for_status()
        job_id = r.json()["jobId"]
        submitted = time.perf_counter() - start
        while True:
            status = http.get(f"/api/v2/devices/bulk/{job_id}").json()
            if status["jobDone"]:
                break
            time.sleep(0.02)  # a client polls; polling more often takes time from the job it waits for
        elapsed = time.perf_counter() - start
        tokens = http.get(f"/api/v2/contracts/{contract_id}").json()["tokensInUse"]
        job = http.get(f"/api/v2/jobs/{job_id}").json()
        waited, ran = job["startTime"] - job["creationTime"], job["endTime"] - job["startTime"]
        sample = http.get(f"/api/v2/devices/{0x100000:X}").json()
    ok = status["status"]["success"]
    errors = status["status"]["errors"]
    assert ok == ROWS - bad and len(errors) == bad, (ok, len(errors))
    assert all("line" in e["message"] and "PAC" in e["message"] for e in errors), errors[:3]
    assert tokens == ok, (tokens, ok)
    assert sample["pac"] == PAC and sample["name"] == "Meter-1", sample
    ctx = build_context(settings, prepare(settings, announce_password=False))
    with ctx.db.read() as session:
        one = session.scalar(select(Device).where(Device.identifier == f"{0x100000 + 5:X}"))
        assert one is not None and devices.secrets_of(ctx.keyring, one)["pac"] == PAC
    ctx.db.dispose()
    floor = _floor(db_file, dt_id, group_id)
    print(
        f"New series of {ROWS:,} devices (CSV upload, {bad} bad lines): upload answered in {submitted * 1000:.0f} ms, "
        f"job DONE_SUC after {elapsed * 1000:.0f} ms (claimed {waited} ms after submission, ran {ran} ms); "
        f"{ok:,} registered with tokens, {len(errors)} row errors"
    )
    print(
        f"floor: the same {ROWS:,} rows as one bare executemany: {floor * 1000:.0f} ms "
        f"(Heron / floor: {elapsed / floor:.1f}x)"
    )
    target(f"New series of {ROWS:,} (HTTP + job engine)", elapsed, 0.5, "s")


if __name__ == "__main__":
    main()
