"""Device types: Sigfox and LoRaWAN settings, contracts they may use, lists and visibility."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from heron.db.engine import Database
from heron.registry.models import DeviceType
from heron.tenancy.models import AuditEvent
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.registry.conftest import Api, contract_body, device_type_body, profile_body

GET_FIELDS = {"id", "group", "contract", "creationTime", "createdBy"}


def test_sigfox_device_type_is_created_and_read_back_with_every_field(
    root: Api, admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid = admin_a.create("/contracts", contract_body(tenants.customer_a, name="Plan A"))
    body = device_type_body(
        tenants.customer_a,
        description="GPS trackers",
        contractId=cid,
        keepAlive=3600,
        alertEmail="ops@example.com",
        downlinkMode=0,
        downlinkDataString="{time}{tapId}",
        payloadType=3,
        payloadConfig="temp::uint:8",
        automaticRenewal=False,
    )
    dt = admin_a.create("/device-types", body)
    got = admin_a.get(f"/device-types/{dt}").json()
    assert set(got) >= GET_FIELDS
    assert got["contract"] == {"id": cid, "name": "Plan A"} and got["contracts"] == [{"id": cid, "name": "Plan A"}]
    assert (got["network"], got["keepAlive"], got["alertEmail"]) == ("SIGFOX", 3600, "ops@example.com")
    assert (got["downlinkMode"], got["downlinkDataString"]) == (0, "{time}{tapId}")
    assert (got["payloadType"], got["payloadConfig"], got["automaticRenewal"]) == (3, "temp::uint:8", False)
    assert got["group"]["id"] == str(tenants.customer_a) and got["createdBy"] == f"api_user:{tenants.a_admin.id}"
    assert not set(got) & {"appEui", "deviceProfile", "lastEditedBy", "lastEditionTime"}, "absent, never null"
    with db.read() as s:
        assert s.scalar(select(func.count()).where(AuditEvent.object_type == "device_type")) == 1


def test_defaults_are_downlink_none_raw_payload_and_no_keep_alive(admin_a: Api, tenants: Tenants) -> None:
    got = admin_a.get(f"/device-types/{admin_a.create('/device-types', device_type_body(tenants.customer_a))}").json()
    assert (got["downlinkMode"], got["payloadType"], got["keepAlive"]) == (2, 2, 0) and "contract" not in got


def test_lorawan_device_type_is_an_application_with_normalized_euis(admin_a: Api, tenants: Tenants) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    body = device_type_body(
        tenants.site_a, network="LORAWAN", appEui="70b3d57ed0000001", joinEui="00000000000100e0", profId=pid
    )
    got = admin_a.get(f"/device-types/{admin_a.create('/device-types', body)}").json()
    assert (got["network"], got["appEui"], got["joinEui"]) == ("LORAWAN", "70B3D57ED0000001", "00000000000100E0")
    assert got["deviceProfile"] == {"id": pid, "name": "EU class A"}


def test_an_app_eui_names_one_application_only(admin_a: Api, admin_b: Api, db: Database, tenants: Tenants) -> None:
    admin_a.create("/device-types", device_type_body(tenants.customer_a, network="LORAWAN", appEui="70B3D57ED0000001"))
    with unchanged(db):
        body = device_type_body(tenants.customer_b, network="LORAWAN", appEui="70b3d57ed0000001")
        assert_message(admin_b.post("/device-types", body), 409)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"keepAlive": 1799}, "keepAlive"),
    ({"keepAlive": -1}, "keepAlive"),
    ({"alertEmail": "not-an-email"}, "alertEmail"),
    ({"downlinkMode": 3}, "downlinkMode"),
    ({"downlinkMode": 7}, "downlinkMode"),
    ({"downlinkMode": 0}, "downlinkDataString"),
    ({"downlinkMode": 0, "downlinkDataString": "00112233445566"}, "downlinkDataString"),
    ({"downlinkMode": 0, "downlinkDataString": "{time}{tapId}{rssi}"}, "downlinkDataString"),
    ({"downlinkDataString": "{humidity}00000000"}, "downlinkDataString"),
    ({"payloadType": 4}, "payloadType"),
    ({"payloadType": 3}, "payloadConfig"),
    ({"payloadType": 3, "payloadConfig": "   "}, "payloadConfig"),
    ({"payloadType": 3, "payloadConfig": "door::bool:9"}, "payloadConfig"),
    ({"network": "NBIOT"}, "network"),
    ({"appEui": "70B3D57ED0000001"}, "appEui"),
    ({"profId": "1"}, "profId"),
    ({"network": "LORAWAN"}, "appEui"),
    ({"network": "LORAWAN", "appEui": "70B3D57ED00000"}, "appEui"),
    ({"network": "LORAWAN", "appEui": "70B3D57ED000000G"}, "appEui"),
    ({"network": "LORAWAN", "appEui": "70B3D57ED0000001", "joinEui": "x"}, "joinEui"),
    ({"network": "LORAWAN", "appEui": "70B3D57ED0000001", "profId": "999999"}, "profId"),
    ({"contractId": "999999"}, "contractId"),
    ({"contracts": [{"id": "999999"}]}, "contracts[0].id"),
    ({"contracts": [{"id": "x"}]}, "contracts[0].id"),
    ({"name": " "}, "name"),
]


@pytest.mark.parametrize(("extra", "field"), BAD, ids=[f"{f}:{e}" for e, f in BAD])
def test_invalid_device_type_is_refused_naming_the_field_and_nothing_changes(
    admin_a: Api, db: Database, tenants: Tenants, extra: dict[str, Any], field: str
) -> None:
    with unchanged(db):
        assert_invalid(admin_a.post("/device-types", device_type_body(tenants.customer_a, **extra)), field)


def test_managed_downlink_is_refused_saying_heron_does_not_offer_it(admin_a: Api, tenants: Tenants) -> None:
    r = admin_a.post("/device-types", device_type_body(tenants.customer_a, downlinkMode=3))
    assert_invalid(r, "downlinkMode")
    assert "Heron does not offer MANAGED" in r.json()["message"]


def test_update_rechecks_the_result_and_null_unsets_optional_fields(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    body = device_type_body(tenants.customer_a, alertEmail="a@example.com", downlinkMode=0, downlinkDataString="00" * 8)
    dt = admin_a.create("/device-types", body)
    with unchanged(db):
        assert_invalid(admin_a.put(f"/device-types/{dt}", {"downlinkDataString": None}), "downlinkDataString")
        assert_invalid(admin_a.put(f"/device-types/{dt}", {"keepAlive": 60}), "keepAlive")
        assert_invalid(admin_a.put(f"/device-types/{dt}", {"name": None}), "name")
        assert_invalid(admin_a.put(f"/device-types/{dt}", {"network": "LORAWAN"}), "network")
    r = admin_a.put(f"/device-types/{dt}", {"alertEmail": None, "downlinkMode": 1, "name": "Renamed", "keepAlive": 0})
    assert r.status_code == 204, r.text
    got = admin_a.get(f"/device-types/{dt}").json()
    assert "alertEmail" not in got and (got["downlinkMode"], got["name"], got["keepAlive"]) == (1, "Renamed", 0)
    assert got["lastEditedBy"] == f"api_user:{tenants.a_admin.id}" and got["lastEditionTime"] is not None


def test_sigfox_fields_heron_ignores_are_accepted(admin_a: Api, tenants: Tenants) -> None:
    body = device_type_body(tenants.customer_a, geolocPayloadConfigId="abc", fields="id,name")
    dt = admin_a.create("/device-types", body)
    assert admin_a.put(f"/device-types/{dt}", {"geolocPayloadConfigId": "x", "name": "Other"}).status_code == 204
    assert "geolocPayloadConfigId" not in admin_a.get(f"/device-types/{dt}").text


# -- which contracts a device type may use --------------------------------------------------------
def test_contract_owned_above_is_usable_only_once_allocated_down_to_the_group(
    root: Api, admin_a: Api, db: Database, tenants: Tenants
) -> None:
    up = root.create("/contracts", contract_body(tenants.operator, name="Operator plan"))
    with unchanged(db):
        assert_invalid(admin_a.post("/device-types", device_type_body(tenants.site_a, contractId=up)), "contractId")
    alloc = {"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 10}]}
    assert root.put(f"/contracts/{up}/allocations", alloc).status_code == 204
    dt = admin_a.create("/device-types", device_type_body(tenants.site_a, contractId=up))
    assert admin_a.get(f"/device-types/{dt}").json()["contract"] == {"id": up, "name": "Operator plan"}


def test_contract_allocated_to_a_device_type_becomes_usable_by_it(
    root: Api, admin_a: Api, db: Database, tenants: Tenants
) -> None:
    up = root.create("/contracts", contract_body(tenants.operator))
    dt = admin_a.create("/device-types", device_type_body(tenants.site_a))
    with unchanged(db):
        assert_invalid(admin_a.put(f"/device-types/{dt}", {"contracts": [{"id": up}]}), "contracts[0].id")
    alloc = {"allocations": [{"deviceTypeId": dt, "maxTokens": 5}]}
    assert root.put(f"/contracts/{up}/allocations", alloc).status_code == 204
    assert admin_a.put(f"/device-types/{dt}", {"contracts": [{"id": up}]}).status_code == 204
    got = admin_a.get(f"/device-types/{dt}").json()
    assert [c["id"] for c in got["contracts"]] == [up] and got["contract"]["id"] == up  # the first is the default


def test_contract_of_a_sibling_or_a_subgroup_is_not_usable(
    admin_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    site = admin_a.create("/contracts", contract_body(tenants.site_a))
    b = admin_b.create("/contracts", contract_body(tenants.customer_b))
    with unchanged(db):
        assert_invalid(admin_a.post("/device-types", device_type_body(tenants.customer_a, contractId=b)), "contractId")
        body = device_type_body(tenants.customer_a, contractId=site)
        assert_invalid(admin_a.post("/device-types", body), "contractId")


def test_default_contract_is_always_among_the_allowed_ones(admin_a: Api, tenants: Tenants) -> None:
    c1 = admin_a.create("/contracts", contract_body(tenants.customer_a, name="One"))
    c2 = admin_a.create("/contracts", contract_body(tenants.customer_a, name="Two"))
    dt = admin_a.create("/device-types", device_type_body(tenants.customer_a, contracts=[{"id": c1}]))
    assert admin_a.put(f"/device-types/{dt}", {"contractId": c2}).status_code == 204
    got = admin_a.get(f"/device-types/{dt}").json()
    assert got["contract"]["id"] == c2 and sorted(c["id"] for c in got["contracts"]) == sorted([c1, c2])
    listed = admin_a.get(f"/device-types?contractId={c1}").json()["data"]
    assert [d["id"] for d in listed] == [dt]


# -- lists and visibility -------------------------------------------------------------------------
def test_list_filters_by_name_group_depth_payload_type_and_network(admin_a: Api, tenants: Tenants) -> None:
    top = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="Top meters"))
    deep = admin_a.create("/device-types", device_type_body(tenants.site_a, name="Site trackers", payloadType=5))
    lora = admin_a.create(
        "/device-types", device_type_body(tenants.site_a, name="Lora", network="LORAWAN", appEui="70B3D57ED0000009")
    )

    def ids(query: str) -> list[str]:
        r = admin_a.get(f"/device-types?{query}")
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["data"]]

    a, site = tenants.customer_a, tenants.site_a
    assert ids("") == [top, deep, lora]
    assert ids(f"groupIds={a}") == [top]
    assert ids(f"groupIds={a}&deep=true") == [top, deep, lora]
    assert ids(f"groupIds={site}") == [deep, lora]
    assert ids("name=METERS") == [top]
    assert ids("payloadType=5") == [deep]
    assert ids("network=LORAWAN") == [lora]
    assert ids("limit=1&offset=1") == [deep]
    assert admin_a.get("/device-types?limit=1").json()["paging"]["next"].endswith("limit=1&offset=1")


def test_sibling_never_sees_nor_touches_a_device_type(
    admin_a: Api, admin_b: Api, db: Database, tenants: Tenants
) -> None:
    dt = admin_a.create("/device-types", device_type_body(tenants.customer_a))
    with unchanged(db):
        assert_message(admin_b.get(f"/device-types/{dt}"), 404)
        assert_message(admin_b.put(f"/device-types/{dt}", {"name": "Mine"}), 404)
        assert_message(admin_b.delete(f"/device-types/{dt}"), 404)
        assert admin_b.get("/device-types").json()["data"] == []
        assert_message(admin_b.get(f"/device-types?groupIds={tenants.customer_a}"), 404)
        assert_invalid(admin_b.post("/device-types", device_type_body(tenants.customer_a)), "groupId")


def test_reader_sees_but_cannot_change_a_device_type(
    admin_a: Api, reader_a: Api, db: Database, tenants: Tenants
) -> None:
    dt = admin_a.create("/device-types", device_type_body(tenants.customer_a))
    assert reader_a.get(f"/device-types/{dt}").status_code == 200
    with unchanged(db):
        assert_message(reader_a.put(f"/device-types/{dt}", {"name": "Mine"}), 403)
        assert_message(reader_a.delete(f"/device-types/{dt}"), 403)
        assert_message(reader_a.post("/device-types", device_type_body(tenants.customer_a)), 403)


def test_deleted_device_type_is_gone_and_its_group_can_be_emptied(admin_a: Api, db: Database, tenants: Tenants) -> None:
    dt = admin_a.create("/device-types", device_type_body(tenants.site_a))
    r = admin_a.delete(f"/groups/{tenants.site_a}")
    assert_message(r, 409)
    assert "device types" in r.json()["message"]
    assert admin_a.delete(f"/device-types/{dt}").status_code == 204
    assert admin_a.get(f"/device-types/{dt}").status_code == 404
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(DeviceType)) == 0
    assert admin_a.delete(f"/groups/{tenants.site_a}").status_code == 204
