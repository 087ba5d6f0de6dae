"""LoRaWAN device profiles: regional defaults and rules, use by device types, visibility."""

from __future__ import annotations

from typing import Any

import pytest

from heron.db.engine import Database
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.registry.conftest import Api, device_type_body, profile_body

APP_EUI = "70b3d57ed0000001"


def test_eu868_profile_takes_the_regional_rx2_defaults_and_no_sub_band(admin_a: Api, tenants: Tenants) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    got = admin_a.get(f"/device-profiles/{pid}").json()
    assert {k: got[k] for k in ("region", "macVersion", "regParamsRevision", "deviceClass", "rx1Delay")} == {
        "region": "EU868",
        "macVersion": "1.0.3",
        "regParamsRevision": "A",
        "deviceClass": "A",
        "rx1Delay": 1,
    }
    assert (got["rx2DataRate"], got["rx2Frequency"], got["adrEnabled"]) == (0, 869.525, True) and "subBand" not in got
    assert got["group"]["id"] == str(tenants.customer_a)


def test_us915_profile_takes_dr8_at_923_3_mhz_and_keeps_its_sub_band(admin_a: Api, tenants: Tenants) -> None:
    body = profile_body(tenants.customer_a, region="US915", macVersion="1.0.2", subBand=2, deviceClass="C")
    got = admin_a.get(f"/device-profiles/{admin_a.create('/device-profiles', body)}").json()
    assert (got["rx2DataRate"], got["rx2Frequency"], got["subBand"]) == (8, 923.3, 2)
    assert (got["regParamsRevision"], got["deviceClass"]) == ("B", "C")


US = {"region": "US915", "subBand": 1}
BAD_PROFILES: list[tuple[dict[str, Any], str]] = [
    ({"region": "AS923"}, "region"),
    ({"macVersion": "1.2"}, "macVersion"),
    ({"deviceClass": "D"}, "deviceClass"),
    ({"rx1Delay": 0}, "rx1Delay"),
    ({"rx1Delay": 16}, "rx1Delay"),
    ({"rx2DataRate": 8}, "rx2DataRate"),
    ({"rx2Frequency": 915.0}, "rx2Frequency"),
    ({"subBand": 2}, "subBand"),
    ({"regParamsRevision": "RP002-1.0.3"}, "regParamsRevision"),
    ({"region": "US915"}, "subBand"),
    (US | {"subBand": 9}, "subBand"),
    (US | {"subBand": 0}, "subBand"),
    (US | {"rx2DataRate": 0}, "rx2DataRate"),
    (US | {"rx2Frequency": 923.5}, "rx2Frequency"),
    (US | {"rx2Frequency": 869.525}, "rx2Frequency"),
    ({"name": ""}, "name"),
    ({"rx2Frequency": "fast"}, "rx2Frequency"),
]


@pytest.mark.parametrize(("extra", "field"), BAD_PROFILES, ids=[f"{f}:{e}" for e, f in BAD_PROFILES])
def test_profile_breaking_a_regional_rule_is_refused_naming_the_field(
    admin_a: Api, db: Database, tenants: Tenants, extra: dict[str, Any], field: str
) -> None:
    with unchanged(db):
        assert_invalid(admin_a.post("/device-profiles", profile_body(tenants.customer_a, **extra)), field)


def test_profile_update_rechecks_the_whole_profile(admin_a: Api, db: Database, tenants: Tenants) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    with unchanged(db):
        assert_invalid(admin_a.put(f"/device-profiles/{pid}", {"region": "US915"}), "subBand")
        assert_invalid(admin_a.put(f"/device-profiles/{pid}", {"subBand": 3}), "subBand")
        assert_invalid(admin_a.put(f"/device-profiles/{pid}", {"rx2DataRate": 9}), "rx2DataRate")
        assert_invalid(admin_a.put(f"/device-profiles/{pid}", {"region": None}), "region")
    assert admin_a.put(f"/device-profiles/{pid}", {"region": "US915", "subBand": 2}).status_code == 204
    got = admin_a.get(f"/device-profiles/{pid}").json()
    assert (got["region"], got["rx2DataRate"], got["rx2Frequency"], got["subBand"]) == ("US915", 8, 923.3, 2)
    assert admin_a.put(f"/device-profiles/{pid}", {"region": "EU868", "subBand": None}).status_code == 204
    got = admin_a.get(f"/device-profiles/{pid}").json()
    assert (got["region"], got["rx2DataRate"], got["rx2Frequency"]) == ("EU868", 0, 869.525) and "subBand" not in got
    assert got["lastEditedBy"] == f"api_user:{tenants.a_admin.id}"


def test_profile_in_use_cannot_be_deleted_and_the_409_names_the_device_type(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    body = device_type_body(tenants.site_a, name="Water meters", network="LORAWAN", appEui=APP_EUI, profId=pid)
    dt = admin_a.create("/device-types", body)
    with unchanged(db):
        r = admin_a.delete(f"/device-profiles/{pid}")
        assert_message(r, 409)
        assert "Water meters" in r.json()["message"]
    assert admin_a.delete(f"/device-types/{dt}").status_code == 204
    assert admin_a.delete(f"/device-profiles/{pid}").status_code == 204
    assert admin_a.get(f"/device-profiles/{pid}").status_code == 404


def test_sibling_never_sees_a_profile(admin_a: Api, admin_b: Api, db: Database, tenants: Tenants) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    with unchanged(db):
        assert_message(admin_b.get(f"/device-profiles/{pid}"), 404)
        assert_message(admin_b.put(f"/device-profiles/{pid}", {"name": "Mine"}), 404)
        assert_message(admin_b.delete(f"/device-profiles/{pid}"), 404)
        assert admin_b.get("/device-profiles").json()["data"] == []
        body = device_type_body(tenants.customer_b, network="LORAWAN", appEui=APP_EUI, profId=pid)
        assert_invalid(admin_b.post("/device-types", body), "profId")
    assert [p["id"] for p in admin_a.get("/device-profiles?region=EU868").json()["data"]] == [pid]
    assert admin_a.get("/device-profiles?region=US915").json()["data"] == []


def test_reader_sees_but_cannot_change_a_profile(admin_a: Api, reader_a: Api, db: Database, tenants: Tenants) -> None:
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    assert reader_a.get(f"/device-profiles/{pid}").status_code == 200
    with unchanged(db):
        assert_message(reader_a.put(f"/device-profiles/{pid}", {"name": "Mine"}), 403)
        assert_message(reader_a.post("/device-profiles", profile_body(tenants.customer_a)), 403)


def test_group_holding_a_profile_is_not_empty(admin_a: Api, db: Database, tenants: Tenants) -> None:
    admin_a.create("/device-profiles", profile_body(tenants.site_a))
    with unchanged(db):
        r = admin_a.delete(f"/groups/{tenants.site_a}")
        assert_message(r, 409)
        assert "device profiles" in r.json()["message"]
