"""`PUT /users/{id}/profiles` (Sigfox addUserRoles) and `DELETE /users/{id}/profiles/{profileId}`
through HTTP on both databases: roles added and removed, checked like the roles of a create."""

from __future__ import annotations

from fastapi.testclient import TestClient

from heron.db.engine import Database
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.tenancy.test_users import _create, _role, _roles_in_db

API = "/api/v2/users"


def roles_shown(client: TestClient, tenants: Tenants, uid: str) -> set[tuple[str, str]]:
    r = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    return {(role["group"]["id"], role["profile"]["id"]) for role in r.json()["userRoles"]}


def test_profiles_are_added_to_a_users_roles_and_removed_one_by_one(
    client: TestClient, tenants: Tenants, db: Database
) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "ada@example.com", [_role(tenants.customer_a, "OBSERVER")])
    body = {
        "userRoles": [
            {"groupId": str(tenants.site_a), "profileId": "DEVICE_MANAGER_R"},  # the document's form
            {"groupId": str(tenants.customer_a), "profileIds": ["OBSERVER", "DEVICE_MANAGER_W"]},  # api.md's
        ],
        "baseStations": "1A2B",  # Sigfox fields Heron does not implement: accepted, ignored
    }
    assert client.put(f"{API}/{uid}/profiles", json=body, headers=h).status_code == 204
    a, site = str(tenants.customer_a), str(tenants.site_a)
    assert roles_shown(client, tenants, uid) == {(a, "OBSERVER"), (a, "DEVICE_MANAGER_W"), (site, "DEVICE_MANAGER_R")}

    r = client.delete(f"{API}/{uid}/profiles/DEVICE_MANAGER_R?groupId={tenants.customer_a}", headers=h)
    assert_message(r, 404)  # held on the site, not on Customer A
    assert client.delete(f"{API}/{uid}/profiles/DEVICE_MANAGER_R", headers=h).status_code == 204
    r = client.delete(f"{API}/{uid}/profiles/OBSERVER?groupId={tenants.customer_a}", headers=h)
    assert r.status_code == 204
    assert roles_shown(client, tenants, uid) == {(a, "DEVICE_MANAGER_W")}
    with unchanged(db):
        assert_invalid(client.delete(f"{API}/{uid}/profiles/DEVICE_MANAGER_W", headers=h), "profileId", "path")
        assert_message(client.delete(f"{API}/{uid}/profiles/OBSERVER", headers=h), 404)
    assert _roles_in_db(db, uid) == {(tenants.customer_a, "DEVICE_MANAGER_W")}


def test_adding_profiles_is_checked_like_creating_roles(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "ada@example.com", [_role(tenants.customer_a, "OBSERVER")])
    with unchanged(db):
        for roles, field in (
            ([{"groupId": str(tenants.customer_b), "profileId": "OBSERVER"}], "userRoles[0].groupId"),
            ([{"groupId": str(tenants.customer_a), "profileId": "NOPE"}], "profileIds"),
            ([], "userRoles"),
        ):
            assert_invalid(client.put(f"{API}/{uid}/profiles", json={"userRoles": roles}, headers=h), field)
        operator = {"userRoles": [{"groupId": str(tenants.operator), "profileId": "OBSERVER"}]}
        assert_invalid(client.put(f"{API}/{uid}/profiles", json=operator, headers=h), "userRoles[0].groupId")
        admin = {"userRoles": [{"groupId": str(tenants.customer_a), "profileId": "ADMIN"}]}
        assert_message(client.put(f"{API}/{uid}/profiles", json=admin, headers=tenants.a_reader.headers), 404)
        assert_message(client.put(f"{API}/{uid}/profiles", json=admin, headers=tenants.b_admin.headers), 404)
        assert_message(client.delete(f"{API}/{uid}/profiles/OBSERVER", headers=tenants.b_admin.headers), 404)
        assert_invalid(client.delete(f"{API}/{uid}/profiles/OBSERVER?groupId=x", headers=h), "groupId", "query")
