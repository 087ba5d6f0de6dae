"""Senet onboarding over HTTP on SQLite, through the job engine, 1 % of the rows bad: `register`
10,000 devices, then `activate` the same 10,000, each timed from the POST until `status` shows
DONE_SUC; then checked (tokensInUse, AppKeys that decrypt, the per-row error messages).
Printed beside the floor: the same rows as one bare `executemany` insert into `devices` in the
same run (and, for activation, one bare executemany UPDATE of the same rows)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from sqlalchemy import select

from bench.common import drop_floor_rows, heron_server, insert_floor, meters_customer, target, temp_dir
from heron.bootstrap import prepare
from heron.config import Settings
from heron.registry import registration_tokens
from heron.registry.models import Device
from heron.runtime.context import build_context
from heron.tenancy import api_users
from heron.tenancy.access import SYSTEM

ROWS = 10_000
APP_EUI = "70B3D57ED00000E0"
SENET = "/rest/integration/device"


def _eui(i: int) -> str:
    return f"00A0{i:012X}"


def _key(i: int) -> str:
    return f"{i:08X}" * 4


def _rows() -> tuple[list[dict[str, Any]], set[str]]:
    """10,000 register rows; every 100th has an AppKey one digit short (1 % bad)."""
    rows, bad = [], set()
    for i in range(ROWS):
        row: dict[str, Any] = {"devEui": _eui(i), "appKey": _key(i), "lat": 42.35, "lng": -71.05}
        if i % 100 == 99:
            row["appKey"] = _key(i)[:-1]
            bad.add(_eui(i))
        rows.append(row)
    return rows, bad


def _floors(db_file: str, device_type_id: int, group_id: int) -> tuple[float, float]:
    """The same rows as one bare sqlite3 executemany INSERT into `devices`, and one bare
    executemany UPDATE of them (then deleted)."""
    identifiers = [f"00F0{i:012X}" for i in range(ROWS)]
    conn, insert = insert_floor(db_file, "LORAWAN", identifiers, device_type_id, group_id, "app_key")
    start = time.perf_counter()
    conn.executemany(
        "UPDATE devices SET lifecycle = 'ACTIVE', token_state = 'OK', contract_id = NULL, updated_by = 'bench' "
        "WHERE network = 'LORAWAN' AND identifier = ?",
        [(identifier,) for identifier in identifiers],
    )
    conn.commit()
    updated = time.perf_counter() - start
    drop_floor_rows(conn)
    return insert, updated


def _run(http: httpx.Client, path: str, params: dict[str, str], body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """POST, then poll `status` until the task is done: (seconds, final status)."""
    content = json.dumps(body).encode()  # encoded before the clock starts, as a client would have it
    start = time.perf_counter()
    r = http.post(f"{SENET}/{path}", params=params, content=content, headers={"content-type": "application/json"})
    r.raise_for_status()
    print(f"  {path}: answered statusUrl after {time.perf_counter() - start:.3f} s")
    req_id = r.json()["statusUrl"].split("reqId=")[1]
    while True:
        status: dict[str, Any] = http.get(f"{SENET}/status", params={"reqId": req_id}).json()
        if status["state"] in ("DONE_SUC", "DONE_FAIL"):
            return time.perf_counter() - start, status
        time.sleep(0.02)  # a client polls; polling more often takes time from the job it waits for


def main() -> None:
    data_dir = temp_dir("heron-bench-senet-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    prepared = prepare(settings, announce_password=False)
    ctx = build_context(settings, prepared)
    with ctx.db.write() as session:
        customer = meters_customer(session, max_tokens=20_000, operator=False, network="LORAWAN", app_eui=APP_EUI)
        _view, secret = api_users.create(
            session, SYSTEM, group_id=customer.group_id, name="bench", timezone="UTC", profile_ids=["ADMIN"]
        )
        token = registration_tokens.create(session, SYSTEM, group_id=customer.group_id, issued_to="bench").code
        dt_id, contract_id, group_id = customer.device_type_id, customer.contract_id, customer.group_id
    db_file = settings.resolved_database_url.removeprefix("sqlite:///")
    rows, bad = _rows()
    headers = {"authorization": secret}
    with heron_server(data_dir) as base, httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        http.get(f"{SENET}/status", params={"reqId": "DevMgmtJobReq:0000000000000000"})  # warm the worker
        register_s, registered = _run(http, "register", {"appEui": APP_EUI, "token": token}, {"data": rows})
        activate_rows = [{"devEui": r["devEui"]} for r in rows]
        activate_s, activated = _run(http, "activate", {"appEui": APP_EUI}, {"data": activate_rows})
        tokens = http.get(f"/api/v2/contracts/{contract_id}").json()["tokensInUse"]
    insert_floor, update_floor = _floors(db_file, dt_id, group_id)

    good = ROWS - len(bad)
    assert registered["state"] == activated["state"] == "DONE_SUC", (registered["state"], activated["state"])
    assert registered["result"]["stats"] == {"registered": good, "updated": 0, "notChanged": 0, "errors": len(bad)}
    assert activated["result"]["stats"] == {"activated": good, "updated": 0, "notChanged": 0, "errors": len(bad)}
    assert len(registered["result"]["msgs"]) == len(activated["result"]["msgs"]) == len(bad)
    assert all("AppKey" in m and "32 hex digits" in m for m in registered["result"]["msgs"])
    assert all("has not been registered" in m for m in activated["result"]["msgs"])
    assert tokens == good, (tokens, good)
    with prepared.db.read() as session:
        lorawan = select(Device.identifier, Device.app_key).where(Device.network == "LORAWAN")
        sealed = {eui: key for eui, key in session.execute(lorawan) if key is not None}
    assert len(sealed) == good
    sample = [i for i in range(0, ROWS, 97) if _eui(i) not in bad]
    for i in sample:
        assert prepared.keyring.decrypt(sealed[_eui(i)], "devices.app_key").decode() == _key(i)
    ctx.db.dispose()

    print(f"SQLite, {ROWS:,} rows ({len(bad)} bad), over HTTP through the job engine, timed until status DONE_SUC")
    print(f"  checked: {good:,} registered and activated, tokensInUse {tokens:,}, {len(bad)} row messages each,")
    print(f"           {len(sample)} AppKeys decrypted to the registered value")
    print(f"  floor: bare sqlite3 executemany INSERT of the same rows: {insert_floor * 1000:.0f} ms;")
    print(f"         bare executemany UPDATE of them: {update_floor * 1000:.0f} ms")
    target(f"register {ROWS:,} (floor {insert_floor:.3f} s)", register_s, 0.5, "s")
    target(f"activate {ROWS:,} (floor {insert_floor:.3f} s; bare UPDATE {update_floor:.3f} s)", activate_s, 0.5, "s")
