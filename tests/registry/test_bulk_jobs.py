"""Native bulk operations (`/api/v2/devices/bulk...`) and the series operations from files, run by
the real job runner of the app (and a second runner for the concurrency test), on both databases."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.engine import Database
from heron.errors import NotFound
from heron.jobs import queries
from heron.jobs.engine import JobRunner
from heron.jobs.models import Job
from heron.registry import bulk_jobs, devices
from heron.registry.bulk import insert_devices, new_row
from heron.registry.models import Contract, ContractAllocation, Device, DeviceType
from heron.runtime.context import AppContext
from heron.tenancy.access import Actor, Role
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.api.test_device_export import run_cli
from tests.conftest import Tenants
from tests.registry.conftest import API, Api, contract_body, device_type_body

PAC = "A1B2C3D4E5F60718"


def wait_done(api: Api, job_id: str, path: str = "/devices/bulk/") -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = api.get(path + job_id)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["jobDone"]:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def setup(
    api: Api, tenants: Tenants, max_tokens: int = 100, name: str = "Plan A", group: int | None = None
) -> tuple[str, str]:
    group = tenants.customer_a if group is None else group
    cid = api.create("/contracts", contract_body(group, name=name, maxTokens=max_tokens))
    dt = api.create("/device-types", device_type_body(group, name=f"DT {name}", contractId=cid))
    return cid, dt


def tokens_in_use(db: Database, cid: str) -> tuple[int, int]:
    """(the contract's counter, the devices actually holding a token on it)."""
    with db.read() as s:
        contract = s.get(Contract, int(cid))
        assert contract is not None
        holding = s.scalar(select(func.count()).where(Device.contract_id == int(cid))) or 0
        return contract.tokens_in_use, holding


def create(api: Api, dt: str, rows: list[Any], **extra: Any) -> dict[str, Any]:
    r = api.post("/devices/bulk", {"deviceTypeId": dt, "data": rows} | extra)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["total"] == len(rows) and isinstance(body["jobId"], str)
    return wait_done(api, body["jobId"])


def errors_by_entity(status: dict[str, Any]) -> dict[str, str]:
    errs = status["status"]["errors"]
    assert all(e["type"] == 0 for e in errs)
    return {e.get("entity"): e["message"] for e in errs}  # a row that names no device has no entity


# -- create ---------------------------------------------------------------------------------------
def test_bulk_create_registers_valid_rows_and_reports_each_bad_one(
    admin_a: Api, db: Database, ctx: AppContext, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    admin_a.create("/devices", {"id": "BEEF", "name": "old", "pac": PAC, "deviceTypeId": dt})
    rows: list[Any] = [{"id": f"{0x1000 + i:X}", "pac": PAC, "lat": 45.0, "lng": 7.5} for i in range(20)]
    rows += [
        {"id": "XYZ", "pac": PAC},  # not hex
        {"id": "2000", "pac": "1234"},  # short PAC
        {"id": "2001", "pac": PAC, "lat": 91},  # out of range
        {"id": "beef", "pac": PAC},  # exists already
        {"id": "00001000", "pac": PAC},  # the first row again, in another spelling
        {"id": "2002", "pac": PAC, "name": "named", "activable": False},
        "not an object",
    ]
    status = create(admin_a, dt, rows, prefix="Meter-", productCertificate={"key": "P_0001_A"})
    assert status["total"] == 27 and status["status"]["success"] == 21
    errors = errors_by_entity(status)
    assert set(errors) >= {"XYZ", "2000", "2001", "BEEF", "1000"}, errors
    assert "PAC" in errors["2000"] and "lat" in errors["2001"] and "already exists" in errors["BEEF"]
    assert "1 to 8 hex digits" in errors["XYZ"]
    assert len(status["status"]["errors"]) == 6
    one = admin_a.get("/devices/1005").json()
    assert one["name"] == "Meter-6" and one["pac"] == PAC and one["productCertificate"] == {"key": "P_0001_A"}
    assert one["location"] == {"lat": 45.0, "lng": 7.5} and one["token"]["state"] == 0
    named = admin_a.get("/devices/2002").json()
    assert named["name"] == "Meter-named" and named["activable"] is False and "contract" not in named
    assert tokens_in_use(db, cid) == (21, 21)  # 20 + BEEF; 2002 is not activable
    with db.read() as s:
        d = s.scalar(select(Device).where(Device.identifier == "1000"))
        assert d is not None
        assert devices.secrets_of(ctx.keyring, d)["pac"] == PAC


def test_bulk_create_beyond_the_contract_fails_the_extra_rows_naming_it_and_writes_nothing_for_them(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants, max_tokens=5, name="Tiny")
    status = create(admin_a, dt, [{"id": f"{i + 1:X}", "pac": PAC} for i in range(8)])
    assert status["status"]["success"] == 5
    errors = errors_by_entity(status)
    assert sorted(errors) == ["6", "7", "8"] and all("'Tiny'" in m for m in errors.values())
    assert admin_a.get("/devices/6").status_code == 404
    assert tokens_in_use(db, cid) == (5, 5)


def test_bulk_calls_check_rights_and_input(
    admin_a: Api, reader_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    _cid, dt = setup(admin_a, tenants)
    with unchanged(db):
        assert_invalid(admin_a.post("/devices/bulk", {"deviceTypeId": dt, "data": []}), "data")
        assert_invalid(admin_a.post("/devices/bulk", {"deviceTypeId": "999", "data": [{"id": "1"}]}), "deviceTypeId")
        assert_invalid(admin_b.post("/devices/bulk", {"deviceTypeId": dt, "data": [{"id": "1"}]}), "deviceTypeId")
        assert_message(reader_a.post("/devices/bulk", {"deviceTypeId": dt, "data": [{"id": "1", "pac": PAC}]}), 403)
        assert_invalid(admin_a.post("/devices/bulk/transfer", {"data": [{"id": "1"}]}), "deviceTypeId")
        # A row field Heron does not know is refused before anything is stored (a NAK or AppKey
        # in a row would otherwise sit in the job's stored input in clear).
        nak_row = {"id": "1", "pac": PAC, "nak": "00112233445566778899AABBCCDDEEFF"}
        assert_invalid(admin_a.post("/devices/bulk", {"deviceTypeId": dt, "data": [nak_row]}), "data[0].nak")
        edit_rows = [{"id": "1"}, {"id": "2", "appKey": "00" * 16}]
        assert_invalid(admin_a.put("/devices/bulk", {"data": edit_rows}), "data[1].appKey")
        assert_message(admin_a.get("/devices/bulk/0123456789abcdef"), 404)
        for bad in ("abc", "0123456789ABCDEF", "0123456789abcdef0", "%00"):
            assert_invalid(admin_a.get(f"/devices/bulk/{bad}"), "jobId", "path")
            assert_invalid(admin_a.get(f"/devices/bulk/unsubscribe/{bad}"), "jobId", "path")
    status = create(admin_a, dt, [{"id": "1", "pac": PAC}])
    job = admin_a.post("/devices/bulk/delete", {"data": ["1"]}).json()["jobId"]
    wait_done(admin_a, job)
    assert_message(admin_b.get(f"/devices/bulk/{job}"), 404)
    assert status["status"]["success"] == 1


# -- edit, transfer, replace, unsubscribe, delete ---------------------------------------------------
def test_bulk_edit_changes_only_writable_devices_and_takes_tokens_for_newly_activable_ones(
    admin_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    create(admin_a, dt, [{"id": f"{i + 1:X}", "pac": PAC, "activable": i != 0} for i in range(3)])
    _cid_b, dt_b = setup(admin_b, tenants, name="B", group=tenants.customer_b)
    create(admin_b, dt_b, [{"id": "B0B", "pac": PAC}])
    rows = [
        {"id": "1", "name": "first", "activable": True, "lat": 10.0, "lng": 20.0},
        {"id": "2", "productCertificate": {"key": "P_9"}, "automaticRenewal": False},
        {"id": "3", "lat": 100},
        {"id": "B0B", "name": "stolen"},
        {"id": "77", "name": "ghost"},
    ]
    r = admin_a.put("/devices/bulk", {"data": rows})
    assert r.status_code == 201, r.text
    status = wait_done(admin_a, r.json()["jobId"])
    assert status["status"]["success"] == 2
    errors = errors_by_entity(status)
    assert errors["B0B"] == errors["77"] == "Unknown device" and "lat" in errors["3"]
    one, two = admin_a.get("/devices/1").json(), admin_a.get("/devices/2").json()
    assert one["name"] == "first" and one["location"]["lat"] == 10.0 and one["contract"]["id"] == cid
    assert two["productCertificate"] == {"key": "P_9"} and two["automaticRenewal"] is False
    assert admin_b.get("/devices/B0B").json()["name"] != "stolen"
    assert tokens_in_use(db, cid) == (3, 3)


def test_bulk_transfer_moves_devices_and_their_tokens_exactly(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid1, dt1 = setup(admin_a, tenants, name="One", group=tenants.site_a)  # not usable in Customer A
    cid2, dt2 = setup(admin_a, tenants, max_tokens=2, name="Two")
    create(admin_a, dt1, [{"id": f"{i + 1:X}", "pac": PAC} for i in range(4)])
    data = [{"id": "1"}, {"id": "2"}, {"id": "3", "activable": False}, {"id": "4"}, {"id": "99"}]
    r = admin_a.post("/devices/bulk/transfer", {"deviceTypeId": dt2, "data": data})
    assert r.status_code == 200, r.text
    status = wait_done(admin_a, r.json()["jobId"])
    errors = errors_by_entity(status)
    # Contract One is not usable by Two's device type: 1, 2 and 3 give their token back; 1 and 2
    # take one on Two (max 2); 3 holds a token so it wants one too but none is left; 4 as well.
    assert errors["99"] == "Unknown device"
    assert "'Two'" in errors["3"] and "'Two'" in errors["4"], errors
    assert status["status"]["success"] == 2
    for ident, dt, contract in (("1", dt2, cid2), ("2", dt2, cid2), ("3", dt1, cid1), ("4", dt1, cid1)):
        body = admin_a.get(f"/devices/{ident}").json()
        assert (body["deviceType"]["id"], body["contract"]["id"]) == (dt, contract), (ident, body)
    assert tokens_in_use(db, cid1) == (2, 2)
    assert tokens_in_use(db, cid2) == (2, 2)


def test_transfer_within_a_contract_keeps_the_token_and_its_end(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt1 = setup(admin_a, tenants, max_tokens=1, name="Shared")
    dt2 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="Other", contractId=cid))
    create(admin_a, dt1, [{"id": "A1", "pac": PAC}])
    end = admin_a.get("/devices/A1").json()["token"]["end"]
    job = admin_a.post("/devices/bulk/transfer", {"deviceTypeId": dt2, "data": [{"id": "A1"}]}).json()["jobId"]
    assert wait_done(admin_a, job)["status"]["success"] == 1
    body = admin_a.get("/devices/A1").json()
    assert body["deviceType"]["id"] == dt2 and body["contract"]["id"] == cid and body["token"]["end"] == end
    assert tokens_in_use(db, cid) == (1, 1)


def test_a_kept_token_leaves_the_old_device_types_quota_and_stays_on_the_contract(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt1 = setup(admin_a, tenants, max_tokens=10, name="Quota")
    dt2 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="Other", contractId=cid))
    r = admin_a.put(f"/contracts/{cid}/allocations", {"allocations": [{"deviceTypeId": dt1, "maxTokens": 3}]})
    assert r.status_code == 204, r.text
    create(admin_a, dt1, [{"id": f"{i + 1:X}", "pac": PAC} for i in range(3)])
    job = admin_a.post("/devices/bulk/transfer", {"deviceTypeId": dt2, "data": [{"id": "1"}, {"id": "2"}]})
    assert wait_done(admin_a, job.json()["jobId"])["status"]["success"] == 2
    with db.read() as s:
        alloc = s.scalar(select(ContractAllocation).where(ContractAllocation.contract_id == int(cid)))
        assert alloc is not None and alloc.tokens_in_use == 1  # only device 3 still draws on it
    assert tokens_in_use(db, cid) == (3, 3)
    # The quota has room again: two more devices of the first device type get tokens.
    assert create(admin_a, dt1, [{"id": "A", "pac": PAC}, {"id": "B", "pac": PAC}])["status"]["success"] == 2
    assert tokens_in_use(db, cid) == (5, 5)
    assert admin_a.delete("/devices/1").status_code == 204
    assert tokens_in_use(db, cid) == (4, 4)


def test_bulk_replace_gives_the_device_its_new_id_keeping_name_settings_and_token(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    create(
        admin_a, dt, [{"id": "10", "pac": PAC, "name": "kitchen"}, {"id": "11", "pac": PAC}, {"id": "12", "pac": PAC}]
    )
    pairs = [
        {"deviceId": "10", "targetDeviceId": "A10"},
        {"deviceId": "11", "targetDeviceId": "12"},  # the target exists
        {"deviceId": "12", "targetDeviceId": "zz"},
    ]
    r = admin_a.post("/devices/bulk/replace", {"data": pairs})
    assert r.status_code == 200, r.text
    status = wait_done(admin_a, r.json()["jobId"])
    errors = errors_by_entity(status)
    assert status["status"]["success"] == 1 and "already exists" in errors["11"] and "targetDeviceId" in errors["12"]
    assert admin_a.get("/devices/10").status_code == 404
    moved = admin_a.get("/devices/A10").json()
    assert moved["name"] == "kitchen" and moved["contract"]["id"] == cid and "pac" not in moved
    assert tokens_in_use(db, cid) == (3, 3)


def test_bulk_unsubscribe_ends_tokens_now_or_at_the_given_time(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt = setup(admin_a, tenants)
    create(admin_a, dt, [{"id": f"{i + 1:X}", "pac": PAC} for i in range(3)])
    later = int(time.time() * 1000) + 86_400_000
    data = [{"id": "1", "unsubscriptionTime": 1_600_000_000_000}, {"id": "2", "unsubscriptionTime": later}, {"id": "9"}]
    r = admin_a.post("/devices/bulk/unsubscribe", {"data": data})
    assert r.status_code == 201 and set(r.json()) == {"jobId"}, r.text
    status = wait_done(admin_a, r.json()["jobId"], "/devices/bulk/unsubscribe/")
    assert status["status"]["total"] == 3 and status["status"]["nbSuccess"] == 2 and status["status"]["nbErrors"] == 1
    assert status["status"]["errors"] == [{"entity": "9", "message": "Unknown device", "type": 0}]
    assert "contract" not in admin_a.get("/devices/1").json()
    two = admin_a.get("/devices/2").json()
    assert two["token"]["end"] == later and two["unsubscriptionTime"] == later
    assert tokens_in_use(db, cid) == (2, 2)


# -- series operations from files -----------------------------------------------------------------
def series(api: Api, client: TestClient, operation: str, text: bytes, as_file: bool = True, **query: Any) -> Any:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
    url = f"{API}/devices/bulk/series/{operation}"
    if as_file:
        return client.post(url, params=params, files={"file": ("ids.csv", text, "text/csv")}, headers=api.cred.headers)
    headers = api.cred.headers | {"content-type": "text/plain"}
    return client.post(url, params=params, content=text, headers=headers)


def test_new_edit_transfer_replace_and_delete_series_from_files(
    admin_a: Api, client: TestClient, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    _cid2, dt2 = setup(admin_a, tenants, name="Dest")
    lines = [f"{0xA000 + i:08X};{PAC}" for i in range(99)] + ["GGGG;" + PAC]
    r = series(admin_a, client, "new", ("id;pac\n" + "\n".join(lines)).encode(), deviceTypeId=dt, prefix="S-")
    assert r.status_code == 200, r.text
    status = wait_done(admin_a, r.json()["jobId"])
    assert status["total"] == 100 and status["status"]["success"] == 99
    assert status["status"]["errors"][0]["message"].startswith("line 101: ")
    assert admin_a.get("/devices/A000").json()["name"] == "S-1"
    r = series(admin_a, client, "edit", b"id;name;lat\nA000;renamed;12.5\nA001;;91\n")
    status = wait_done(admin_a, r.json()["jobId"])
    assert status["status"]["success"] == 1 and "line 3" in status["status"]["errors"][0]["message"]
    assert admin_a.get("/devices/A000").json()["name"] == "renamed"
    r = series(admin_a, client, "transfer", b"A000\nA001\n", as_file=False, deviceTypeId=dt2, keepHistory=True)
    assert wait_done(admin_a, r.json()["jobId"])["status"]["success"] == 2
    assert admin_a.get("/devices/A001").json()["deviceType"]["id"] == dt2
    r = series(admin_a, client, "replace", b"A002;B002\n")
    assert wait_done(admin_a, r.json()["jobId"])["status"]["success"] == 1
    r = series(admin_a, client, "delete", b"0000B002\nA003\nA003\n")
    status = wait_done(admin_a, r.json()["jobId"])
    assert status["status"]["success"] == 2 and "duplicate" in status["status"]["errors"][0]["message"]
    assert admin_a.get("/devices/A003").status_code == 404  # gone, listed as deleted and restorable
    deleted = admin_a.get("/devices?lifecycle=DELETED").json()["data"]
    assert {(d["id"], d["state"]) for d in deleted} == {("A003", 5), ("B002", 5)}
    r = admin_a.post("/devices/A003/restore", None)
    assert r.status_code == 204, r.text
    # 99 created; the two transferred keep theirs (Plan A is usable in Dest's group too); two
    # deleted give theirs back; the restored one takes one again.
    assert tokens_in_use(db, cid) == (98, 98)


def test_an_exported_name_holding_separators_and_quotes_round_trips_through_an_edit_series(
    admin_a: Api, client: TestClient, db: Database, tenants: Tenants
) -> None:
    """The export writes CSV with quoted names; the edit series reads it back as it was written."""
    _cid, dt = setup(admin_a, tenants)
    r = series(admin_a, client, "new", f"id;pac\nA000;{PAC}\n".encode(), deviceTypeId=dt)
    assert wait_done(admin_a, r.json()["jobId"])["status"]["success"] == 1
    name = 'Meter; "north", 1'
    assert admin_a.put("/devices/A000", {"name": name}).status_code == 204
    exported = client.get(f"{API}/devices/export?columns=id,name,lat", headers=admin_a.cred.headers)
    assert exported.status_code == 200, exported.text
    assert admin_a.put("/devices/A000", {"name": "renamed meanwhile"}).status_code == 204
    r = series(admin_a, client, "edit", exported.content)
    assert r.status_code == 200, r.text
    assert wait_done(admin_a, r.json()["jobId"])["status"]["success"] == 1
    assert admin_a.get("/devices/A000").json()["name"] == name


def test_series_refuses_unusable_files_whole(admin_a: Api, client: TestClient, db: Database, tenants: Tenants) -> None:
    _cid, dt = setup(admin_a, tenants)
    with unchanged(db):
        assert_invalid(series(admin_a, client, "new", b"", deviceTypeId=dt), "file")
        assert_invalid(series(admin_a, client, "new", b"\x00\x01\x02binary", deviceTypeId=dt), "file")
        assert_invalid(series(admin_a, client, "new", b"1;" + PAC.encode()), "deviceTypeId", "query")
        assert series(admin_a, client, "explode", b"1").status_code == 400


# -- tokens under concurrent jobs ------------------------------------------------------------------
def test_concurrent_jobs_on_two_device_types_sharing_a_contract_count_tokens_exactly(
    admin_a: Api, ctx: AppContext, db: Database, tenants: Tenants
) -> None:
    max_tokens, quota, per_job = 700, 300, 500
    cid = admin_a.create("/contracts", contract_body(tenants.customer_a, name="Shared", maxTokens=max_tokens))
    dt1 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="T1", contractId=cid))
    dt2 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="T2", contractId=cid))
    r = admin_a.put(f"/contracts/{cid}/allocations", {"allocations": [{"deviceTypeId": dt1, "maxTokens": quota}]})
    assert r.status_code == 204, r.text
    # A second runner in this process, so the two jobs (different device types, so no shared
    # lock) really run at the same time, in batches of their own.
    other = JobRunner(db, idle_poll=0.01)
    other.start()
    try:
        jobs = []
        for n, dt in enumerate((dt1, dt2)):
            rows = [{"id": f"{n + 1:X}{i:04X}", "pac": PAC} for i in range(per_job)]
            r = admin_a.post("/devices/bulk", {"deviceTypeId": dt, "data": rows})
            jobs.append(r.json()["jobId"])
        done = [wait_done(admin_a, j) for j in jobs]
    finally:
        other.stop()
    successes = sum(d["status"]["success"] for d in done)
    with db.read() as s:
        contract = s.get(Contract, int(cid))
        alloc = s.scalar(select(ContractAllocation).where(ContractAllocation.contract_id == int(cid)))
        holding = s.scalar(select(func.count()).where(Device.contract_id == int(cid)))
        holding_dt1 = s.scalar(select(func.count()).where(Device.device_type_id == int(dt1)))
        total = s.scalar(select(func.count()).select_from(Device))
    assert contract is not None and alloc is not None
    assert contract.tokens_in_use == holding == successes == total == max_tokens
    assert alloc.tokens_in_use == holding_dt1 == quota
    assert done[0]["status"]["success"] == quota


def test_two_runners_never_run_two_jobs_of_one_device_type_at_once(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    """The second job on the same device type waits (QUEUED) for the first; both finish."""
    _cid, dt = setup(admin_a, tenants, max_tokens=0)
    other = JobRunner(db, idle_poll=0.01)
    other.start()
    seen_states: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with db.read() as s:
                running = s.scalar(select(func.count()).where(Job.state == "RUNNING")) or 0
                seen_states.add("two running" if running > 1 else "ok")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        jobs = [
            admin_a.post(
                "/devices/bulk", {"deviceTypeId": dt, "data": [{"id": f"{n}{i:04X}", "pac": PAC} for i in range(3000)]}
            ).json()["jobId"]
            for n in (1, 2)
        ]
        done = [wait_done(admin_a, j) for j in jobs]
    finally:
        stop.set()
        watcher.join()
        other.stop()
    assert [d["status"]["success"] for d in done] == [3000, 3000]
    assert "two running" not in seen_states


# -- /api/v2/jobs ---------------------------------------------------------------------------------
def test_jobs_api_lists_and_shows_jobs_of_the_callers_groups_only(
    admin_a: Api, reader_a: Api, admin_b: Api, tenants: Tenants
) -> None:
    _cid, dt = setup(admin_a, tenants)
    create(admin_a, dt, [{"id": "1", "pac": PAC}, {"id": "Z", "pac": PAC}])
    r = admin_a.get("/jobs?kind=devices.create&state=DONE_SUC")
    assert r.status_code == 200, r.text
    (job,) = r.json()["data"]
    assert job["kind"] == "devices.create" and job["state"] == "DONE_SUC" and job["pctDone"] == 100
    assert job["total"] == 2 and job["errors"] == 1 and job["stats"] == {"success": 1, "errors": 1}
    assert job["group"] == {"id": str(tenants.customer_a)} and job["endTime"] >= job["creationTime"]
    one = reader_a.get(f"/jobs/{job['id']}").json()
    assert [m["entity"] for m in one["messages"]] == ["Z"] and "PAC" not in one["messages"][0]["message"]
    assert admin_b.get("/jobs").json()["data"] == []
    assert_message(admin_b.get(f"/jobs/{job['id']}"), 404)
    assert_invalid(admin_a.get("/jobs?kind=devices.explode"), "kind", "query")
    assert_invalid(admin_a.get("/jobs?state=DONE"), "state", "query")
    assert_invalid(admin_a.get("/jobs/not-a-job"), "jobId", "path")
    assert admin_a.get("/jobs?state=RUNNING").json()["data"] == []


# -- heron devices import -------------------------------------------------------------------------
def test_cli_import_registers_a_series_file_and_reports_bad_lines(
    admin_a: Api, db: Database, tenants: Tenants, database_url: str, tmp_path: Path
) -> None:
    cid, dt = setup(admin_a, tenants)
    series_file = tmp_path / "series.csv"
    series_file.write_text("id;pac\n" + "\n".join(f"{0xC00 + i:X};{PAC}" for i in range(40)) + "\nC28;short\n")
    data_dir = tmp_path / "cli-var"
    done = run_cli(database_url, data_dir, "devices", "import", str(series_file), "--device-type", dt, "--prefix", "C-")
    assert done.returncode == 3, done.stderr
    assert "40 registered, 1 failed" in done.stderr and "41/41" in done.stderr and "line 42" in done.stderr
    assert admin_a.get("/devices/C27").json()["name"] == "C-40"
    assert tokens_in_use(db, cid) == (40, 40)
    again = run_cli(database_url, data_dir, "devices", "import", str(series_file), "--device-type", dt, "--json")
    result = json.loads(again.stdout)
    assert again.returncode == 3 and result["success"] == 0 and len(result["errors"]) == 41
    assert result["errors"][0] == {"entity": "C00", "message": "device C00 already exists"}
    for bad in (["--device-type", "999"], ["--device-type", dt, "--prefix", "x" * 41]):
        refused = run_cli(database_url, data_dir, "devices", "import", str(series_file), *bad)
        assert refused.returncode == 2 and "error:" in refused.stderr, refused.stderr
    missing = run_cli(database_url, data_dir, "devices", "import", str(tmp_path / "nope.csv"), "--device-type", dt)
    assert missing.returncode == 2 and "file" in missing.stderr


def test_series_files_over_50_mb_are_refused_naming_the_file(
    admin_a: Api, client: TestClient, db: Database, tenants: Tenants
) -> None:
    _cid, dt = setup(admin_a, tenants)
    line = f"1;{PAC}\n".encode()
    huge = line * (50 * 1024 * 1024 // len(line) + 1)
    with unchanged(db):
        assert_invalid(series(admin_a, client, "new", huge, deviceTypeId=dt), "file")
        assert_invalid(series(admin_a, client, "new", huge, as_file=False, deviceTypeId=dt), "file")


def test_bulk_rows_store_values_exactly_as_the_orm_does(admin_a: Api, db: Database, tenants: Tenants) -> None:
    """The bulk insert bypasses the ORM: what it stores must be the ORM's, byte for byte (a whole
    second, whose text form differs if a driver adapter formats it, included)."""
    _cid, dt = setup(admin_a, tenants)
    when = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    with db.write() as s:
        group = s.scalar(select(DeviceType.group_id).where(DeviceType.id == int(dt)))
        assert group is not None
        fields = {
            "device_type_id": int(dt),
            "group_id": group,
            "automatic_renewal": True,
            "created_by": "t",
            "now": when,
        }
        insert_devices(s, [new_row(network="SIGFOX", identifier="B1", **fields) | {"token_end_at": when}])
        s.add(Device(**(new_row(network="SIGFOX", identifier="O1", **fields) | {"token_end_at": when})))
    with db.read() as s:
        raw = s.connection().exec_driver_sql(
            "SELECT created_at, token_end_at, prototype, activable FROM devices WHERE identifier IN ('B1', 'O1')"
        )
        bulk_row, orm_row = [tuple(r) for r in raw]
    assert bulk_row == orm_row


def test_a_job_over_two_sibling_groups_stays_readable_by_its_submitter(db: Database, tenants: Tenants) -> None:
    """Filed at the groups' common parent (which the submitter may not read), the job is still
    the submitter's to read, and nobody else's there."""
    two_customers = Actor(
        "user",
        99,
        "ops@example.com",
        tuple(
            Role(g, path, frozenset({"DEVICE_MANAGER_W"}))
            for g, path in (
                (tenants.customer_a, f"/{tenants.root}/{tenants.operator}/{tenants.customer_a}/"),
                (tenants.customer_b, f"/{tenants.root}/{tenants.operator}/{tenants.customer_b}/"),
            )
        ),
    )
    with db.write() as s:
        job = bulk_jobs.submit_on_devices(s, two_customers, bulk_jobs.DELETE, [{"id": "1"}, {"id": "2"}])
        job_id = job.req_id
    with db.read() as s:
        assert bulk_jobs.get_job(s, two_customers, job_id).req_id == job_id
        assert [j.req_id for j in queries.list_jobs(s, two_customers)] == [job_id]
        other = Actor("user", 98, "x@example.com", two_customers.roles[:1])
        assert queries.list_jobs(s, other) == []
        with pytest.raises(NotFound):
            bulk_jobs.get_job(s, other, job_id)
