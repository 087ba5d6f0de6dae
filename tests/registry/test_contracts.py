"""Contracts: management, allocation to subgroups and device types, and the read view."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.engine import Database
from heron.registry.models import Contract, ContractAllocation
from heron.tenancy.models import AuditEvent
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.registry.conftest import Api, contract_body, device_type_body

INFO_FIELDS = {
    "id",
    "contractId",
    "name",
    "bidir",
    "maxUplinkFrames",
    "maxDownlinkFrames",
    "maxTokens",
    "tokenDuration",
    "tokensInUse",
    "startTime",
    "endTime",
    "group",
}


def test_operator_creates_a_contract_and_reads_it_in_both_views(root: Api, tenants: Tenants) -> None:
    body = contract_body(tenants.operator, contractId="BSS-42", endTime=1_800_000_000_000, geolocation=True)
    cid = root.create("/contracts", body)
    info = root.get(f"/contract-infos/{cid}").json()
    assert set(info) >= INFO_FIELDS
    assert info["contractId"] == "BSS-42" and info["name"] == "Contract" and info["bidir"] is True
    assert (info["maxTokens"], info["tokensInUse"], info["tokenDuration"]) == (100, 0, 12)
    assert (info["maxUplinkFrames"], info["maxDownlinkFrames"]) == (140, 4)
    assert (info["startTime"], info["endTime"]) == (1_700_000_000_000, 1_800_000_000_000)
    assert info["group"]["id"] == str(tenants.operator)
    assert info["options"] == [{"id": "geolocation", "parameters": {"level": 1}}]
    managed = root.get(f"/contracts/{cid}").json()
    assert managed["timezone"] == "Europe/Paris" and managed["allocations"] == []
    assert managed["createdBy"] == f"api_user:{tenants.root_admin.id}"


def test_contract_without_external_id_shows_its_own_id_and_the_group_timezone(root: Api, tenants: Tenants) -> None:
    body = contract_body(tenants.operator)
    del body["timezone"], body["startTime"]
    cid = root.create("/contracts", body)
    info = root.get(f"/contract-infos/{cid}").json()
    assert info["contractId"] == cid and "endTime" not in info and info["startTime"] > 1_700_000_000_000
    assert root.get(f"/contracts/{cid}").json()["timezone"] == "UTC"


def test_contract_update_is_partial_and_null_unsets_end_time(root: Api, db: Database, tenants: Tenants) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator, endTime=1_800_000_000_000))
    assert root.put(f"/contracts/{cid}", {"name": "Renamed", "maxTokens": 5}).status_code == 204
    assert root.put(f"/contracts/{cid}", {"endTime": None}).status_code == 204
    got = root.get(f"/contracts/{cid}").json()
    assert (got["name"], got["maxTokens"], got["maxUplinkFrames"]) == ("Renamed", 5, 140) and "endTime" not in got
    with db.read() as s:
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.object_type == "contract", AuditEvent.object_id == cid)
        ).all()
    assert actions == ["create", "update", "update"]


def test_invalid_contract_fields_are_refused_naming_the_field(root: Api, db: Database, tenants: Tenants) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator))
    cases = [
        (contract_body(tenants.operator, endTime=1_600_000_000_000), "endTime"),
        (contract_body(tenants.operator, timezone="Mars/Olympus"), "timezone"),
        (contract_body(tenants.operator, maxTokens=-1), "maxTokens"),
        (contract_body(tenants.operator, maxUplinkFrames=-5), "maxUplinkFrames"),
        (contract_body(tenants.operator, tokenDuration=5000), "tokenDuration"),
        (contract_body(tenants.operator, startTime=-1), "startTime"),
        (contract_body(tenants.operator, name="  "), "name"),
        (contract_body("abc"), "groupId"),
        (contract_body(999999), "groupId"),
    ]
    with unchanged(db):
        for body, field in cases:
            assert_invalid(root.post("/contracts", body), field)
        assert_invalid(root.put(f"/contracts/{cid}", {"endTime": 1_000}), "endTime")
        assert_invalid(root.put(f"/contracts/{cid}", {"name": None}), "name")


def test_allocation_shows_the_contract_to_the_customer_with_its_quota(
    root: Api, reader_a: Api, admin_b: Api, tenants: Tenants
) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator, name="Shared"))
    assert reader_a.get(f"/contract-infos/{cid}").status_code == 404
    r = root.put(
        f"/contracts/{cid}/allocations", {"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 10}]}
    )
    assert r.status_code == 204, r.text
    seen = reader_a.get(f"/contract-infos/{cid}").json()
    assert seen["group"]["id"] == str(tenants.customer_a) and seen["maxTokens"] == 10
    assert [c["id"] for c in reader_a.get("/contract-infos").json()["data"]] == [cid]
    assert admin_b.get(f"/contract-infos/{cid}").status_code == 404
    assert admin_b.get("/contract-infos").json()["data"] == []
    allocations = root.get(f"/contracts/{cid}").json()["allocations"]
    assert allocations == [
        {
            "group": {"id": str(tenants.customer_a), "name": "Customer A", "type": 8, "level": 2},
            "maxTokens": 10,
            "tokensInUse": 0,
        }
    ]


def test_allocation_outside_the_owner_subtree_or_above_its_tokens_is_refused(
    root: Api, db: Database, tenants: Tenants
) -> None:
    cid = root.create("/contracts", contract_body(tenants.customer_a, maxTokens=50))
    with unchanged(db):
        for target, field in [
            (tenants.customer_b, "allocations[0].groupId"),
            (tenants.root, "allocations[0].groupId"),
            (tenants.customer_a, "allocations[0].groupId"),
            (999999, "allocations[0].groupId"),
        ]:
            r = root.put(f"/contracts/{cid}/allocations", {"allocations": [{"groupId": str(target), "maxTokens": 1}]})
            assert_invalid(r, field)
        too_many = {"allocations": [{"groupId": str(tenants.site_a), "maxTokens": 51}]}
        assert_invalid(root.put(f"/contracts/{cid}/allocations", too_many), "allocations[0].maxTokens")
        both = {"allocations": [{"groupId": str(tenants.site_a), "deviceTypeId": "1", "maxTokens": 1}]}
        assert_invalid(root.put(f"/contracts/{cid}/allocations", both), "allocations[0]")
        twice = {"allocations": [{"groupId": str(tenants.site_a), "maxTokens": 1}] * 2}
        assert_invalid(root.put(f"/contracts/{cid}/allocations", twice), "allocations[1]")


def test_allocation_to_a_device_type_in_the_subtree_is_stored(root: Api, db: Database, tenants: Tenants) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator))
    dt = root.create("/device-types", device_type_body(tenants.site_a))
    r = root.put(f"/contracts/{cid}/allocations", {"allocations": [{"deviceTypeId": dt, "maxTokens": 7}]})
    assert r.status_code == 204, r.text
    assert root.get(f"/contracts/{cid}").json()["allocations"][0]["deviceType"] == {"id": dt, "name": "Trackers"}
    assert root.put(f"/contracts/{cid}/allocations", {"allocations": []}).status_code == 204
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ContractAllocation)) == 0


def test_contract_used_by_a_device_type_cannot_be_deleted_and_the_409_names_it(
    root: Api, db: Database, tenants: Tenants
) -> None:
    cid = root.create("/contracts", contract_body(tenants.customer_a))
    root.create("/device-types", device_type_body(tenants.customer_a, name="Meters", contractId=cid))
    with unchanged(db):
        r = root.delete(f"/contracts/{cid}")
        assert_message(r, 409)
        assert "Meters" in r.json()["message"]


def test_removing_the_allocation_a_device_type_relies_on_is_refused(
    root: Api, admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator))
    alloc = {"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 10}]}
    assert root.put(f"/contracts/{cid}/allocations", alloc).status_code == 204
    admin_a.create("/device-types", device_type_body(tenants.site_a, name="Relying", contractId=cid))
    with unchanged(db):
        r = root.put(f"/contracts/{cid}/allocations", {"allocations": []})
        assert_message(r, 409)
        assert "Relying" in r.json()["message"]


def test_unused_contract_is_deleted_with_its_allocations(root: Api, db: Database, tenants: Tenants) -> None:
    cid = root.create("/contracts", contract_body(tenants.operator))
    alloc = {"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 10}]}
    assert root.put(f"/contracts/{cid}/allocations", alloc).status_code == 204
    assert root.delete(f"/contracts/{cid}").status_code == 204
    assert root.get(f"/contracts/{cid}").status_code == 404
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Contract)) == 0
        assert s.scalar(select(func.count()).select_from(ContractAllocation)) == 0


def test_sibling_and_reader_cannot_manage_a_customer_contract(
    admin_a: Api, reader_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    cid = admin_a.create("/contracts", contract_body(tenants.customer_a))
    with unchanged(db):
        for path in (f"/contracts/{cid}", f"/contract-infos/{cid}"):
            assert_message(admin_b.get(path), 404)
        assert_message(admin_b.put(f"/contracts/{cid}", {"name": "Mine"}), 404)
        assert_message(admin_b.delete(f"/contracts/{cid}"), 404)
        assert admin_b.get("/contracts").json()["data"] == []
        assert_message(reader_a.get(f"/contracts/{cid}"), 403)
        assert_message(reader_a.put(f"/contracts/{cid}", {"name": "Mine"}), 403)
        assert reader_a.get(f"/contract-infos/{cid}").status_code == 200
        assert_invalid(admin_b.post("/contracts", contract_body(tenants.customer_a)), "groupId")


def test_contract_infos_filter_by_group_and_name(root: Api, reader_a: Api, tenants: Tenants) -> None:
    own = root.create("/contracts", contract_body(tenants.site_a, name="Site plan"))
    up = root.create("/contracts", contract_body(tenants.operator, name="Operator plan"))
    root.put(f"/contracts/{up}/allocations", {"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 3}]})
    a = str(tenants.customer_a)
    assert [c["id"] for c in reader_a.get(f"/contract-infos?groupId={a}").json()["data"]] == [up]
    assert {c["id"] for c in reader_a.get(f"/contract-infos?groupId={a}&deep=true").json()["data"]} == {own, up}
    assert [c["id"] for c in reader_a.get("/contract-infos?name=SITE").json()["data"]] == [own]
    assert [c["id"] for c in root.get(f"/contracts?groupIds={tenants.operator}").json()["data"]] == [up]


def test_group_holding_a_contract_or_an_allocation_is_not_empty(
    root: Api, client: TestClient, db: Database, tenants: Tenants
) -> None:
    cid = root.create("/contracts", contract_body(tenants.site_a))
    with unchanged(db):
        r = root.delete(f"/groups/{tenants.site_a}")
        assert_message(r, 409)
        assert "contracts" in r.json()["message"]
    root.delete(f"/contracts/{cid}")
    up = root.create("/contracts", contract_body(tenants.operator))
    root.put(f"/contracts/{up}/allocations", {"allocations": [{"groupId": str(tenants.site_a), "maxTokens": 3}]})
    r = root.delete(f"/groups/{tenants.site_a}")
    assert_message(r, 409)
    assert "contract allocations" in r.json()["message"]
