"""Group tree: create, rename, move, delete, subtree queries and visibility."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.db.engine import Database
from heron.tenancy.models import Group
from tests.conftest import Tenants


def _create(client: TestClient, headers: dict[str, str], parent: int, name: str) -> str:
    r = client.post(
        "/api/v2/groups",
        json={"name": name, "description": "", "type": 2, "timezone": "UTC", "parentId": str(parent)},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_group_object_has_sigfox_shape_and_visible_path(client: TestClient, tenants: Tenants) -> None:
    r = client.get(f"/api/v2/groups/{tenants.site_a}", headers=tenants.a_admin.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == str(tenants.site_a)
    assert body["name"] == "Site A1"
    assert body["leaf"] is True
    # Ancestors nearest first, restricted to what the caller can see (not the operator or root).
    assert [g["id"] for g in body["path"]] == [str(tenants.customer_a)]
    assert body["createdBy"] == "system"
    assert isinstance(body["creationTime"], int)


def test_both_slash_forms_answer_directly(client: TestClient, tenants: Tenants) -> None:
    for path in ("/api/v2/groups", "/api/v2/groups/"):
        r = client.get(path, headers=tenants.root_admin.headers, follow_redirects=False)
        assert r.status_code == 200
    r = client.get(f"/api/v2/groups/{tenants.site_a}/", headers=tenants.a_admin.headers, follow_redirects=False)
    assert r.status_code == 200


def test_list_deep_subtree_with_total_excludes_other_tenants(client: TestClient, tenants: Tenants) -> None:
    r = client.get(
        f"/api/v2/groups?parentIds={tenants.operator}&deep=true&withTotal=true", headers=tenants.root_admin.headers
    )
    assert r.status_code == 200
    ids = [g["id"] for g in r.json()["data"]]
    assert ids == [str(tenants.customer_a), str(tenants.site_a), str(tenants.customer_b)]
    assert r.json()["total"] == 3
    r = client.get("/api/v2/groups?withTotal=true", headers=tenants.a_admin.headers)
    assert [g["id"] for g in r.json()["data"]] == [str(tenants.customer_a), str(tenants.site_a)]
    assert r.json()["total"] == 2


def test_paging_next_is_absolute_and_complete(client: TestClient, tenants: Tenants) -> None:
    r = client.get("/api/v2/groups?limit=1&name=customer", headers=tenants.root_admin.headers)
    body = r.json()
    assert [g["name"] for g in body["data"]] == ["Customer A"]
    nxt = body["paging"]["next"]
    assert nxt.startswith("http://testserver/api/v2/groups?")
    assert "name=customer" in nxt and "offset=1" in nxt
    r2 = client.get(nxt, headers=tenants.root_admin.headers)
    assert [g["name"] for g in r2.json()["data"]] == ["Customer B"]
    assert r2.json()["paging"] == {}


def test_rename_and_move_subtree_rewrites_paths(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.root_admin.headers
    deep = _create(client, h, tenants.site_a, "Deep child")
    r = client.put(
        f"/api/v2/groups/{tenants.site_a}", json={"name": "Site moved", "parentId": str(tenants.customer_b)}, headers=h
    )
    assert r.status_code == 204, r.text
    with db.read() as s:
        site = s.get(Group, tenants.site_a)
        child = s.get(Group, int(deep))
        assert site is not None and child is not None
        assert site.name == "Site moved"
        assert site.path == f"/{tenants.root}/{tenants.operator}/{tenants.customer_b}/{tenants.site_a}/"
        assert child.path == site.path + f"{deep}/"
        assert child.depth == site.depth + 1 == 4
    # Customer A's admin no longer sees the moved subtree; Customer B's does.
    assert client.get(f"/api/v2/groups/{deep}", headers=tenants.a_admin.headers).status_code == 404
    assert client.get(f"/api/v2/groups/{deep}", headers=tenants.b_admin.headers).status_code == 200


def test_move_under_own_subtree_is_refused(client: TestClient, tenants: Tenants, db: Database) -> None:
    r = client.put(
        f"/api/v2/groups/{tenants.customer_a}",
        json={"parentId": str(tenants.site_a)},
        headers=tenants.root_admin.headers,
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "parentId"
    with db.read() as s:
        assert s.scalar(select(Group.parent_id).where(Group.id == tenants.customer_a)) == tenants.operator


def test_delete_only_empty_groups(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.root_admin.headers
    r = client.delete(f"/api/v2/groups/{tenants.customer_a}", headers=h)
    assert r.status_code == 409
    assert "subgroups" in r.json()["message"]
    leaf = _create(client, h, tenants.customer_b, "Empty leaf")
    assert client.delete(f"/api/v2/groups/{leaf}", headers=h).status_code == 204
    assert client.get(f"/api/v2/groups/{leaf}", headers=h).status_code == 404
    # A group holding an API user is not empty either.
    r = client.delete(f"/api/v2/groups/{tenants.site_a}", headers=h)
    assert r.status_code == 204  # site A holds nothing
    r = client.delete(f"/api/v2/groups/{tenants.customer_b}", headers=h)
    assert r.status_code == 409 and "API users" in r.json()["message"]


def test_root_group_cannot_be_deleted(client: TestClient, tenants: Tenants) -> None:
    r = client.delete(f"/api/v2/groups/{tenants.root}", headers=tenants.root_admin.headers)
    assert r.status_code == 409


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "x" * 65])
def test_bad_timezone_is_refused(client: TestClient, tenants: Tenants, tz: str) -> None:
    r = client.post(
        "/api/v2/groups",
        json={"name": "Bad tz", "description": "", "type": 2, "timezone": tz, "parentId": str(tenants.customer_a)},
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "timezone"
