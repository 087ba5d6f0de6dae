"""What a device's owner does to it beyond create/edit/delete, through HTTP on both databases: a
deleted device is gone from every device resource (404) but listed as deleted and restorable;
unsubscription ends the token at a time and the upkeep never renews it; disengage lets the next
frame through whatever its sequence number; restart, suspend and resume as bulk jobs (and
restart for a device type's or a contract's devices); certificates."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.registry import maintenance
from heron.stations.models import UndeliveredFrames
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Clock, Radio, clock, frame, messages_of, radio, send
from tests.registry.conftest import API, Api, contract_body, device_type_body
from tests.registry.test_bulk_jobs import errors_by_entity, tokens_in_use, wait_done

__all__ = ["clock", "radio"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PAC = "A1B2C3D4E5F60718"
DAY_MS = 86_400_000


def setup(api: Api, tenants: Tenants, max_tokens: int = 10, group: int | None = None) -> tuple[str, str]:
    group = tenants.customer_a if group is None else group
    cid = api.create("/contracts", contract_body(group, name=f"Plan {group}", maxTokens=max_tokens))
    dt = api.create("/device-types", device_type_body(group, name=f"Type {group}", contractId=cid))
    return cid, dt


def device(api: Api, dt: str, ident: str, **extra: Any) -> str:
    return api.create("/devices", {"id": ident, "name": f"Device {ident}", "pac": PAC, "deviceTypeId": dt} | extra)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- a deleted device is gone ----------------------------------------------------------------------
# Bodies and queries the device routes need to get past input validation (everything else takes
# none): the lookup, not the input, must answer.
ROUTE_INPUT: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/devices/{device_id}"): {"json": {"name": "x"}},
    ("PUT", "/devices/{device_id}/unsubscribe"): {"json": {"unsubscriptionTime": 4_102_444_800_000}},
    ("GET", "/devices/{device_id}/product-certificate"): {"params": {"pac": PAC}},
}
PATH_VALUES = {"year": "2026", "month": "3"}


def device_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/v2/devices/{device_id}, from its own
    OpenAPI document: a route added later is checked too."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    prefix = API + "/devices/{device_id}"
    return sorted(
        (method.upper(), path[len(API) :])
        for path, operations in paths.items()
        if path == prefix or path.startswith(prefix + "/")
        for method in operations
        if method in ("get", "put", "post", "delete", "patch")
    )


def test_deleted_device_answers_404_everywhere_but_the_deleted_list_and_restore(
    admin_a: Api, client: TestClient, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    device(admin_a, dt, "77FFF", productCertificate={"key": "P_0001_A"})
    assert admin_a.delete("/devices/77FFF").status_code == 204
    routes = device_routes(client)
    assert len(routes) >= 15, routes  # messages, metric, events, downlinks, callbacks-not-delivered, ...
    problems = []
    with unchanged(db):
        for method, template in routes:
            if template.endswith("/restore"):
                continue
            path = template.format(device_id="77FFF", **PATH_VALUES)
            extra = ROUTE_INPUT.get((method, template), {})
            r = client.request(method, API + path, headers=admin_a.cred.headers, **extra)
            unknown = client.request(
                method, API + template.format(device_id="ABC", **PATH_VALUES), headers=admin_a.cred.headers, **extra
            )
            if r.status_code != 404 or r.json() != unknown.json():
                problems.append(f"{method} {path}: {r.status_code} {r.text[:200]} (unknown id: {unknown.text[:100]})")
    assert not problems, "\n".join(problems)
    deleted = admin_a.get("/devices?lifecycle=DELETED").json()["data"]
    assert [(d["id"], d["state"], d["lifecycle"]) for d in deleted] == [("77FFF", 5, "DELETED")]
    assert admin_a.get("/devices?id=77FFF").json()["data"] == []
    assert admin_a.post("/devices/77FFF/restore", None).status_code == 204
    got = admin_a.get("/devices/77FFF").json()
    assert got["state"] == 0 and got["lifecycle"] == "ACTIVE" and got["contract"]["id"] == cid
    assert admin_a.get("/devices/77FFF/certificate/product").json()["key"] == "P_0001_A"
    assert_message(admin_a.post("/devices/77FFF/restore", None), 409)  # not deleted


# -- unsubscribe -----------------------------------------------------------------------------------
def test_unsubscribe_ends_the_token_at_that_time_and_the_upkeep_does_not_renew_it(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    device(admin_a, dt, "1", automaticRenewal=True)
    before = admin_a.get("/devices/1").json()
    assert "unsubscriptionTime" not in before and "unsubscriptionTime" not in before["token"]
    at = now_ms() + DAY_MS
    assert admin_a.put("/devices/1/unsubscribe", {"unsubscriptionTime": at}).status_code == 204
    got = admin_a.get("/devices/1").json()
    assert got["unsubscriptionTime"] == at and got["token"] == got["token"] | {
        "state": 0,
        "end": at,
        "unsubscriptionTime": at,
    }
    assert got["automaticRenewal"] is True  # the setting stays; this token just ends
    with db.write() as s:  # not due yet
        assert maintenance.expire_tokens(s, utcnow()) == (0, 0)
    with db.write() as s:  # due: given back, not renewed, although automatic renewal is on
        assert maintenance.expire_tokens(s, datetime.fromtimestamp(at / 1000, UTC) + timedelta(seconds=1)) == (0, 1)
    ended = admin_a.get("/devices/1").json()
    assert ended["token"]["state"] == 1 and "contract" not in ended
    assert ended["unsubscriptionTime"] == at
    assert tokens_in_use(db, cid) == (0, 0)
    assert_message(admin_a.put("/devices/1/unsubscribe", {"unsubscriptionTime": at}), 409)  # no token left


def test_unsubscribe_at_a_past_time_ends_the_token_now(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt = setup(admin_a, tenants)
    device(admin_a, dt, "2")
    assert admin_a.put("/devices/2/unsubscribe", {"unsubscriptionTime": 1_600_000_000_000}).status_code == 204
    got = admin_a.get("/devices/2").json()
    assert got["token"]["state"] == 1 and "contract" not in got and got["unsubscriptionTime"] == 1_600_000_000_000
    assert got["automaticRenewalStatus"] == 3  # ENDED
    assert tokens_in_use(db, cid) == (0, 0)


def test_unsubscribe_refuses_bad_input_and_foreign_devices(
    admin_a: Api, reader_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    _cid, dt = setup(admin_a, tenants)
    device(admin_a, dt, "3")
    with unchanged(db):
        assert_invalid(admin_a.put("/devices/3/unsubscribe", {}), "unsubscriptionTime")
        assert_invalid(admin_a.put("/devices/3/unsubscribe", {"unsubscriptionTime": -5}), "unsubscriptionTime")
        assert_invalid(admin_a.put("/devices/3/unsubscribe", {"unsubscriptionTime": "soon"}), "unsubscriptionTime")
        assert_invalid(admin_a.put("/devices/3/unsubscribe", {"unsubscriptionTime": 1, "x": 1}), "x")
        assert_message(reader_a.put("/devices/3/unsubscribe", {"unsubscriptionTime": now_ms()}), 403)
        assert_message(admin_b.put("/devices/3/unsubscribe", {"unsubscriptionTime": now_ms()}), 404)


def test_bulk_unsubscribe_sets_the_same_unsubscription(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt = setup(admin_a, tenants)
    for ident in ("A", "B"):
        device(admin_a, dt, ident)
    at = now_ms() + DAY_MS
    r = admin_a.post("/devices/bulk/unsubscribe", {"data": [{"id": "A", "unsubscriptionTime": at}, {"id": "B"}]})
    assert r.status_code == 201, r.text
    assert wait_done(admin_a, r.json()["jobId"], "/devices/bulk/unsubscribe/")["status"]["nbSuccess"] == 2
    a, b = admin_a.get("/devices/A").json(), admin_a.get("/devices/B").json()
    assert a["unsubscriptionTime"] == at and a["token"]["end"] == at and a["automaticRenewal"] is True
    assert b["token"]["state"] == 1 and b["unsubscriptionTime"] is not None
    assert tokens_in_use(db, cid) == (1, 1)


# -- disengage -------------------------------------------------------------------------------------
def test_disengage_lets_the_next_frame_through_whatever_its_sequence_number(
    client: TestClient, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    station = radio.stations[0]
    admin = Api(client, tenants.a_admin)
    send(client, station, frame(seq=100))
    clock.now += timedelta(minutes=2)  # past the dedup horizon
    send(client, station, frame(seq=100))  # the last number again: a stale repeat, dropped
    send(client, station, frame(seq=90))  # backward: stored out of order, the device keeps 100
    assert [m["seqNumber"] for m in messages_of(client, tenants)] == [90, 100]
    assert admin.get("/devices/1001").json()["sequenceNumber"] == 100

    assert admin.post("/devices/1001/disengage", None).status_code == 204
    assert "sequenceNumber" not in admin.get("/devices/1001").json()
    clock.now += timedelta(minutes=2)
    send(client, station, frame(seq=100))  # the repeat is taken now
    newest = messages_of(client, tenants)[0]
    assert newest["seqNumber"] == 100 and newest["lostMessages"] == 0 and len(messages_of(client, tenants)) == 3
    assert admin.post("/devices/1001/disengage", None).status_code == 204
    clock.now += timedelta(minutes=2)
    send(client, station, frame(seq=3))  # far behind 100: a new start, no frames lost
    newest = messages_of(client, tenants)[0]
    assert newest["seqNumber"] == 3 and newest["lostMessages"] == 0
    assert admin.get("/devices/1001").json()["sequenceNumber"] == 3
    send(client, station, frame(seq=5))  # the check is engaged again: one frame lost
    assert messages_of(client, tenants)[0]["lostMessages"] == 1


def test_disengage_needs_write_rights_on_a_live_device(
    client: TestClient, tenants: Tenants, radio: Radio, db: Database
) -> None:
    with unchanged(db):
        assert_message(Api(client, tenants.a_reader).post("/devices/1001/disengage", None), 403)
        assert_message(Api(client, tenants.b_admin).post("/devices/1001/disengage", None), 404)
        assert_message(Api(client, tenants.a_admin).post("/devices/FFFF/disengage", None), 404)


# -- suspend, resume, restart ----------------------------------------------------------------------
def undelivered(db: Database, device: str) -> dict[str, int]:
    with db.read() as s:
        rows = s.execute(
            select(UndeliveredFrames.reason, UndeliveredFrames.frames).where(UndeliveredFrames.device == device)
        )
        return {reason: n for reason, n in rows}


def run(api: Api, action: str, ids: list[Any], path: str = "/devices/bulk/", **query: str) -> dict[str, Any]:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    r = api.post(f"/devices/bulk/{action}{suffix}", {"data": ids})
    assert r.status_code == 201 and set(r.json()) == {"jobId"}, r.text
    status = wait_done(api, r.json()["jobId"], f"{path}{action}/")
    assert set(status) == {"jobDone", "status"} and set(status["status"]) == {
        "total",
        "nbSuccess",
        "nbErrors",
        "errors",
    }
    return status


def test_a_suspended_device_is_shown_suspended_and_its_frames_are_not_stored_until_resumed(
    client: TestClient, tenants: Tenants, radio: Radio, db: Database
) -> None:
    admin = Api(client, tenants.a_admin)
    station = radio.stations[0]
    status = run(admin, "suspend", ["1001", "1002", "FFFF", 7])
    assert status["status"]["total"] == 4 and status["status"]["nbSuccess"] == 2 and status["status"]["nbErrors"] == 2
    assert errors_by_entity(status)["FFFF"] == "Unknown device"
    assert [admin.get(f"/devices/{d}").json()["state"] for d in ("1001", "1002", "1003")] == [6, 6, 0]
    send(client, station, frame(device="1001", seq=1), frame(device="1003", seq=1))
    assert messages_of(client, tenants, "1001") == [] and len(messages_of(client, tenants, "1003")) == 1
    assert undelivered(db, "1001") == {"SUSPENDED": 1}
    status = run(admin, "resume", ["1001"])
    assert status["status"]["nbSuccess"] == 1 and status["status"]["errors"] == []
    assert admin.get("/devices/1001").json()["state"] == 0
    send(client, station, frame(device="1001", seq=2))
    assert [m["seqNumber"] for m in messages_of(client, tenants, "1001")] == [2]


def test_bulk_actions_never_touch_foreign_devices_or_devices_outside_the_group_given(
    admin_a: Api, admin_b: Api, tenants: Tenants, db: Database
) -> None:
    _cid, dt_a = setup(admin_a, tenants)
    _cid, dt_site = setup(admin_a, tenants, group=tenants.site_a)
    _cid, dt_b = setup(admin_b, tenants, group=tenants.customer_b)
    device(admin_a, dt_a, "A1")
    device(admin_a, dt_site, "51")
    device(admin_b, dt_b, "B1")
    status = run(admin_a, "suspend", ["A1", "51", "B1"], groupId=str(tenants.site_a))
    assert errors_by_entity(status) == {"A1": "Unknown device", "B1": "Unknown device"}
    assert [admin_a.get(f"/devices/{d}").json()["state"] for d in ("A1", "51")] == [0, 6]
    assert admin_b.get("/devices/B1").json()["state"] == 0
    assert errors_by_entity(run(admin_b, "resume", ["51"])) == {"51": "Unknown device"}
    with unchanged(db):
        assert_invalid(
            admin_a.post(f"/devices/bulk/suspend?groupId={tenants.customer_b}", {"data": ["A1"]}), "groupId", "query"
        )
        assert_invalid(admin_a.post("/devices/bulk/suspend?groupId=x", {"data": ["A1"]}), "groupId", "query")
        assert_invalid(admin_a.post("/devices/bulk/restart", {"data": []}), "data")
        assert_invalid(admin_a.post("/devices/bulk/restart", {"ids": ["A1"]}), "ids")
        assert_message(Api(admin_a.client, tenants.a_reader).post("/devices/bulk/resume", {"data": ["A1"]}), 403)
    r = admin_a.post("/devices/bulk/restart", {"data": ["A1"]})
    assert_message(admin_b.get(f"/devices/bulk/restart/{r.json()['jobId']}"), 404)
    assert_message(admin_a.get(f"/devices/bulk/suspend/{r.json()['jobId']}"), 404)  # not a suspend job


def test_restart_gives_a_device_whose_token_ended_a_new_one(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt = setup(admin_a, tenants, max_tokens=3)
    for ident in ("1", "2", "3"):
        device(admin_a, dt, ident)
    device(admin_a, dt, "4", activable=False)
    for ident in ("1", "2"):
        assert (
            admin_a.put(f"/devices/{ident}/unsubscribe", {"unsubscriptionTime": 1_600_000_000_000}).status_code == 204
        )
    device(admin_a, dt, "5")  # takes one of the tokens given back: one is left for "1" and "2"
    assert tokens_in_use(db, cid) == (2, 2)
    status = run(admin_a, "restart", ["1", "2", "3", "4"])
    errors = errors_by_entity(status)
    assert status["status"]["nbSuccess"] == 2 and set(errors) == {"2", "4"}, status  # "3" was running already
    assert "no token left" in errors["2"] and "not activable" in errors["4"]
    one = admin_a.get("/devices/1").json()
    assert one["token"]["state"] == 0 and one["contract"]["id"] == cid and "unsubscriptionTime" not in one
    assert one["token"]["end"] > now_ms() + 300 * DAY_MS
    assert tokens_in_use(db, cid) == (3, 3)


def test_restart_of_a_device_type_or_a_contract_restarts_its_devices(
    admin_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup(admin_a, tenants)
    for ident in ("1", "2"):
        device(admin_a, dt, ident)
        admin_a.put(f"/devices/{ident}/unsubscribe", {"unsubscriptionTime": 1_600_000_000_000})
    r = admin_a.post(f"/device-types/{dt}/bulk/restart", {})
    assert r.status_code == 201, r.text
    status = wait_done(admin_a, r.json()["jobId"], "/device-types/bulk/restart/")
    assert status["status"] == {"total": 2, "nbSuccess": 2, "nbErrors": 0, "errors": []}
    assert tokens_in_use(db, cid) == (2, 2)
    admin_a.put("/devices/2/unsubscribe", {"unsubscriptionTime": 1_600_000_000_000})
    r = admin_a.post(f"/contract-infos/{cid}/bulk/restart", {})
    assert r.status_code == 201, r.text
    status = wait_done(admin_a, r.json()["jobId"], "/contract-infos/bulk/restart/")
    assert status["status"]["total"] == 2 and status["status"]["nbSuccess"] == 2
    assert tokens_in_use(db, cid) == (2, 2)
    with unchanged(db):
        assert_message(admin_b.post(f"/device-types/{dt}/bulk/restart", {}), 404)
        assert_message(admin_b.post(f"/contract-infos/{cid}/bulk/restart", {}), 404)
        assert_message(admin_b.get(f"/device-types/bulk/restart/{r.json()['jobId']}"), 404)


# -- certificates ----------------------------------------------------------------------------------
def test_certificates_where_set_and_404_naming_what_is_missing(admin_a: Api, admin_b: Api, tenants: Tenants) -> None:
    _cid, dt = setup(admin_a, tenants)
    device(admin_a, dt, "C1", productCertificate={"key": "P_0001_A"})
    device(admin_a, dt, "C2")
    product = admin_a.get("/devices/C1/certificate/product")
    assert product.status_code == 200 and product.json() == {"key": "P_0001_A", "name": "P_0001_A"}
    assert admin_a.get(f"/devices/C1/product-certificate?pac={PAC.lower()}").json()["key"] == "P_0001_A"
    r = admin_a.get("/devices/C1/certificate/modem")
    assert_message(r, 404)
    assert "modem certificate" in r.json()["message"]
    r = admin_a.get("/devices/C2/certificate/product")
    assert_message(r, 404)
    assert "product certificate" in r.json()["message"]
    assert_message(admin_a.get("/devices/C1/product-certificate?pac=0000000000000000"), 404)  # wrong PAC
    assert_invalid(admin_a.get("/devices/C1/product-certificate"), "pac", "query")
    assert_invalid(admin_a.get("/devices/C1/product-certificate?pac=12"), "pac", "query")
    assert_message(admin_b.get("/devices/C1/certificate/product"), 404)
