"""/api/v2/users: people who sign in to the GUI, their roles, and who may change them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.db.engine import Database
from heron.errors import Forbidden, InvalidInput
from heron.tenancy import users
from heron.tenancy.models import AuditEvent, User, UserRole
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Tenants, make_user

API = "/api/v2/users"
PASSWORD = "a long enough password"


def _body(email: str, roles: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"firstName": "Ada", "lastName": "Lovelace", "email": email, "userRoles": roles, **extra}


def _create(client: TestClient, headers: dict[str, str], email: str, roles: list[dict[str, Any]], **extra: Any) -> str:
    r = client.post(API, json=_body(email, roles, **extra), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _role(group: int, *profiles: str) -> dict[str, Any]:
    return {"groupId": str(group), "profileIds": list(profiles)}


def _roles_in_db(db: Database, user_id: str) -> set[tuple[int, str]]:
    with db.read() as s:
        rows = s.execute(select(UserRole.group_id, UserRole.profile_id).where(UserRole.user_id == int(user_id)))
        return {(g, p) for g, p in rows}


def _sign_in(client: TestClient, email: str, password: str) -> int:
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    r = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": match.group(1)},
        follow_redirects=False,
    )
    return r.status_code


# -- create -----------------------------------------------------------------------------------


def test_create_with_profile_ids_roles(client: TestClient, tenants: Tenants, db: Database) -> None:
    uid = _create(
        client,
        tenants.a_admin.headers,
        "ada@example.com",
        [_role(tenants.customer_a, "OBSERVER", "CALLBACK_MANAGER"), _role(tenants.site_a, "DEVICE_MANAGER_W")],
        timezone="Europe/London",
    )
    assert _roles_in_db(db, uid) == {
        (tenants.customer_a, "OBSERVER"),
        (tenants.customer_a, "CALLBACK_MANAGER"),
        (tenants.site_a, "DEVICE_MANAGER_W"),
    }
    body = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()
    assert body["id"] == uid
    assert (body["firstName"], body["lastName"], body["email"]) == ("Ada", "Lovelace", "ada@example.com")
    assert body["timezone"] == "Europe/London"
    assert body["locked"] is False
    assert isinstance(body["creationTime"], int)
    assert body["createdBy"] == f"api_user:{tenants.a_admin.id}"
    got = {(r["group"]["id"], r["profile"]["id"]) for r in body["userRoles"]}
    assert got == {
        (str(tenants.customer_a), "OBSERVER"),
        (str(tenants.customer_a), "CALLBACK_MANAGER"),
        (str(tenants.site_a), "DEVICE_MANAGER_W"),
    }


def test_create_with_sigfox_single_profile_id_roles(client: TestClient, tenants: Tenants, db: Database) -> None:
    roles = [
        {"groupId": str(tenants.customer_a), "profileId": "OBSERVER"},
        {"groupId": str(tenants.site_a), "profileId": "DEVICE_MANAGER_R"},
    ]
    uid = _create(client, tenants.a_admin.headers, "sigfox.form@example.com", roles)
    assert _roles_in_db(db, uid) == {(tenants.customer_a, "OBSERVER"), (tenants.site_a, "DEVICE_MANAGER_R")}


def test_create_defaults_timezone_to_utc_and_stores_email_lowercase(client: TestClient, tenants: Tenants) -> None:
    uid = _create(client, tenants.a_admin.headers, "  Grace.Hopper@Example.COM ", [_role(tenants.site_a, "OBSERVER")])
    body = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()
    assert body["email"] == "grace.hopper@example.com"
    assert body["timezone"] == "UTC"


def test_duplicate_email_is_a_conflict_whatever_the_case(client: TestClient, tenants: Tenants, db: Database) -> None:
    _create(client, tenants.a_admin.headers, "dup@example.com", [_role(tenants.customer_a, "OBSERVER")])
    for email in ("dup@example.com", "DUP@example.com"):
        r = client.post(
            API, json=_body(email, [_role(tenants.customer_a, "OBSERVER")]), headers=tenants.a_admin.headers
        )
        assert r.status_code == 409, r.text
        assert "message" in r.json()
    # The first administrator's email is taken too, even for another tenant's admin.
    r = client.post(
        API, json=_body("admin@example.com", [_role(tenants.customer_b, "OBSERVER")]), headers=tenants.b_admin.headers
    )
    assert r.status_code == 409
    with db.read() as s:
        assert len(list(s.scalars(select(User.id).where(User.email == "dup@example.com")))) == 1


def test_invalid_input_names_the_field(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    cases: list[tuple[dict[str, Any], str]] = [
        (_body("not-an-email", [_role(tenants.customer_a, "OBSERVER")]), "email"),
        (_body("tz@example.com", [_role(tenants.customer_a, "OBSERVER")], timezone="Mars/Base"), "timezone"),
        (_body("roles@example.com", [_role(tenants.customer_a, "NOPE")]), "profileIds"),
        (_body("nofirst@example.com", [_role(tenants.customer_a, "OBSERVER")], shoeSize=42), "shoeSize"),
    ]
    for body, field in cases:
        r = client.post(API, json=body, headers=h)
        assert r.status_code == 400, r.text
        assert field in r.json()["errors"][0]["field"], r.json()
    r = client.post(API, json=_body("empty@example.com", []), headers=h)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"].startswith("userRoles")


def test_password_is_stored_as_an_argon2_hash_only(client: TestClient, tenants: Tenants, db: Database) -> None:
    uid = _create(
        client,
        tenants.a_admin.headers,
        "hashed@example.com",
        [_role(tenants.customer_a, "OBSERVER")],
        password=PASSWORD,
    )
    with db.read() as s:
        user = s.get(User, int(uid))
        assert user is not None
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        stored = [str(getattr(user, c.key)) for c in User.__table__.columns]
        details = list(s.scalars(select(AuditEvent.details)))
    assert not any(PASSWORD in v for v in stored)
    assert not any(PASSWORD in d for d in details)
    r = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers)
    assert PASSWORD not in r.text and "argon2" not in r.text
    assert _sign_in(client, "hashed@example.com", PASSWORD) == 303


def test_the_first_administrator_password_is_argon2_hashed(db: Database) -> None:
    with db.read() as s:
        digest = s.scalar(select(User.password_hash).where(User.email == ADMIN_EMAIL))
    assert digest is not None and digest.startswith("$argon2id$")
    assert ADMIN_PASSWORD not in digest


def test_short_password_is_refused(client: TestClient, tenants: Tenants) -> None:
    r = client.post(
        API,
        json=_body("short@example.com", [_role(tenants.customer_a, "OBSERVER")], password="short"),
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "password"


# -- list ---------------------------------------------------------------------------------------


def _ids(client: TestClient, headers: dict[str, str], query: str = "") -> list[str]:
    r = client.get(f"{API}{query}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "paging" in body
    return [u["id"] for u in body["data"]]


def test_list_filters_by_group_deep_text_and_profile(client: TestClient, tenants: Tenants) -> None:
    h = tenants.root_admin.headers
    on_a = _create(client, h, "alice@example.com", [_role(tenants.customer_a, "OBSERVER")], firstName="Alice")
    on_site = _create(client, h, "bob@example.com", [_role(tenants.site_a, "DEVICE_MANAGER_W")], lastName="Builder")
    on_b = _create(client, h, "carol@example.com", [_role(tenants.customer_b, "OBSERVER")])

    assert _ids(client, h, f"?groupIds={tenants.customer_a}") == [on_a]
    assert _ids(client, h, f"?groupIds={tenants.customer_a}&deep=true") == [on_a, on_site]
    assert _ids(client, h, f"?groupIds={tenants.customer_a}&deep=True") == [on_a, on_site]
    assert _ids(client, h, f"?groupIds={tenants.customer_a},{tenants.customer_b}") == [on_a, on_b]
    assert _ids(client, h, f"?groupIds={tenants.customer_a}&groupIds={tenants.customer_b}") == [on_a, on_b]
    assert _ids(client, h, "?text=ALICE") == [on_a]
    assert _ids(client, h, "?text=builder") == [on_site]
    assert _ids(client, h, "?text=carol@") == [on_b]
    assert _ids(client, h, "?profileId=DEVICE_MANAGER_W") == [on_site]
    assert _ids(client, h, "?profileId=OBSERVER") == [on_a, on_b]
    assert _ids(client, h, f"?profileId=OBSERVER&groupIds={tenants.customer_b}") == [on_b]


def test_other_tenants_users_are_never_listed(client: TestClient, tenants: Tenants) -> None:
    h = tenants.root_admin.headers
    on_a = _create(client, h, "a1@example.com", [_role(tenants.customer_a, "OBSERVER")])
    on_site = _create(client, h, "a2@example.com", [_role(tenants.site_a, "OBSERVER")])
    on_b = _create(client, h, "b1@example.com", [_role(tenants.customer_b, "OBSERVER")])
    admin_ids = _ids(client, h)
    assert {on_a, on_site, on_b} <= set(admin_ids)
    assert _ids(client, tenants.a_admin.headers) == [on_a, on_site]
    assert _ids(client, tenants.b_admin.headers) == [on_b]
    assert _ids(client, tenants.b_admin.headers, "?text=a1") == []
    assert _ids(client, tenants.b_admin.headers, f"?groupIds={tenants.customer_b}&deep=true") == [on_b]
    # Naming another tenant's group in a filter reveals nothing either.
    r = client.get(f"{API}?groupIds={tenants.customer_a}", headers=tenants.b_admin.headers)
    assert r.status_code == 404
    assert client.get(f"{API}/{on_a}", headers=tenants.b_admin.headers).status_code == 404
    # The first administrator (a role on the root) is invisible to customers.
    assert client.get(f"{API}/{admin_ids[0]}", headers=tenants.a_admin.headers).status_code == 404


def test_list_pages_with_limit_and_offset(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    created = [_create(client, h, f"p{i}@example.com", [_role(tenants.customer_a, "OBSERVER")]) for i in range(3)]
    r = client.get(f"{API}?limit=2", headers=h)
    body = r.json()
    assert [u["id"] for u in body["data"]] == created[:2]
    r2 = client.get(body["paging"]["next"], headers=h)
    assert [u["id"] for u in r2.json()["data"]] == created[2:]
    assert r2.json()["paging"] == {}


def test_reader_without_user_rights_sees_no_users(client: TestClient, tenants: Tenants) -> None:
    _create(client, tenants.a_admin.headers, "hidden@example.com", [_role(tenants.customer_a, "OBSERVER")])
    assert _ids(client, tenants.a_reader.headers) == []
    r = client.post(
        API, json=_body("x@example.com", [_role(tenants.customer_a, "OBSERVER")]), headers=tenants.a_reader.headers
    )
    assert r.status_code == 403


# -- update -------------------------------------------------------------------------------------


def test_put_is_a_partial_update(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "partial@example.com", [_role(tenants.customer_a, "OBSERVER")], timezone="Europe/Paris")
    r = client.put(f"{API}/{uid}", json={"firstName": "Augusta"}, headers=h)
    assert r.status_code == 204, r.text
    body = client.get(f"{API}/{uid}", headers=h).json()
    assert (body["firstName"], body["lastName"], body["timezone"]) == ("Augusta", "Lovelace", "Europe/Paris")
    assert body["lastEditedBy"] == f"api_user:{tenants.a_admin.id}"
    assert isinstance(body["lastEditionTime"], int)
    assert _roles_in_db(db, uid) == {(tenants.customer_a, "OBSERVER")}
    r = client.put(
        f"{API}/{uid}",
        json={"timezone": "Asia/Tokyo", "userRoles": [_role(tenants.site_a, "DEVICE_MANAGER_R")]},
        headers=h,
    )
    assert r.status_code == 204
    body = client.get(f"{API}/{uid}", headers=h).json()
    assert (body["firstName"], body["timezone"]) == ("Augusta", "Asia/Tokyo")
    assert _roles_in_db(db, uid) == {(tenants.site_a, "DEVICE_MANAGER_R")}
    r = client.put(f"{API}/{uid}", json={"email": "changed@example.com"}, headers=h)
    assert r.status_code == 400  # the email is the sign-in name: not a field of the update


def test_locked_user_cannot_sign_in_and_unlocking_restores_it(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "lockme@example.com", [_role(tenants.customer_a, "OBSERVER")], password=PASSWORD)
    assert _sign_in(client, "lockme@example.com", PASSWORD) == 303
    client.cookies.clear()
    assert client.put(f"{API}/{uid}", json={"locked": True}, headers=h).status_code == 204
    assert client.get(f"{API}/{uid}", headers=h).json()["locked"] is True
    assert _sign_in(client, "lockme@example.com", PASSWORD) == 401
    assert "heron_session" not in client.cookies
    assert client.put(f"{API}/{uid}", json={"locked": False}, headers=h).status_code == 204
    assert _sign_in(client, "lockme@example.com", PASSWORD) == 303


def test_locking_ends_the_users_open_sessions(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "session@example.com", [_role(tenants.customer_a, "OBSERVER")], password=PASSWORD)
    assert _sign_in(client, "session@example.com", PASSWORD) == 303
    assert client.get("/", follow_redirects=False).status_code == 200
    assert client.put(f"{API}/{uid}", json={"locked": True}, headers=h).status_code == 204
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/v2/groups").status_code == 401


# -- delete -------------------------------------------------------------------------------------


def test_delete_removes_the_user_and_roles(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.a_admin.headers
    uid = _create(client, h, "gone@example.com", [_role(tenants.customer_a, "OBSERVER")], password=PASSWORD)
    assert client.delete(f"{API}/{uid}", headers=h).status_code == 204
    assert client.get(f"{API}/{uid}", headers=h).status_code == 404
    assert client.delete(f"{API}/{uid}", headers=h).status_code == 404
    assert _roles_in_db(db, uid) == set()
    assert _sign_in(client, "gone@example.com", PASSWORD) == 401
    # The email is free again.
    _create(client, h, "gone@example.com", [_role(tenants.customer_a, "OBSERVER")])


def test_other_tenant_cannot_change_or_delete_a_user(client: TestClient, tenants: Tenants, db: Database) -> None:
    uid = _create(client, tenants.a_admin.headers, "mine@example.com", [_role(tenants.customer_a, "OBSERVER")])
    assert client.put(f"{API}/{uid}", json={"firstName": "X"}, headers=tenants.b_admin.headers).status_code == 404
    assert client.delete(f"{API}/{uid}", headers=tenants.b_admin.headers).status_code == 404
    with db.read() as s:
        user = s.get(User, int(uid))
        assert user is not None and user.first_name == "Ada"


# -- no escalation ------------------------------------------------------------------------------


def test_cannot_grant_roles_above_or_beside_own_group(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.a_admin.headers
    for group in (tenants.operator, tenants.root, tenants.customer_b):
        r = client.post(API, json=_body(f"esc{group}@example.com", [_role(group, "OBSERVER")]), headers=h)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["field"] == "userRoles[0].groupId"
    # Mixed with an allowed role, the whole request is refused.
    r = client.post(
        API,
        json=_body("mixed@example.com", [_role(tenants.customer_a, "ADMIN"), _role(tenants.operator, "OBSERVER")]),
        headers=h,
    )
    assert r.status_code == 400
    with db.read() as s:
        assert s.scalar(select(User.id).where(User.email.like("%esc%"))) is None
        assert s.scalar(select(User.id).where(User.email == "mixed@example.com")) is None
    # Raising an existing user of its own tenant to the operator group is refused as well.
    uid = _create(client, h, "raise@example.com", [_role(tenants.customer_a, "OBSERVER")])
    r = client.put(f"{API}/{uid}", json={"userRoles": [_role(tenants.operator, "ADMIN")]}, headers=h)
    assert r.status_code == 400
    assert _roles_in_db(db, uid) == {(tenants.customer_a, "OBSERVER")}


def test_grants_need_user_rights_on_the_group(client: TestClient, tenants: Tenants) -> None:
    # A site admin (API user on Site A1) can administer its site's users only.
    r = client.post(
        "/api/v2/api-users",
        json={"groupId": str(tenants.site_a), "name": "site", "timezone": "UTC", "profileIds": ["ADMIN"]},
        headers=tenants.a_admin.headers,
    )
    site = r.json()
    site_h = {"authorization": site["accessToken"]}
    _create(client, site_h, "site.user@example.com", [_role(tenants.site_a, "ADMIN")])
    r = client.post(API, json=_body("up@example.com", [_role(tenants.customer_a, "OBSERVER")]), headers=site_h)
    assert r.status_code == 400


def test_customer_admin_cannot_modify_a_user_with_a_role_above_them(
    client: TestClient, tenants: Tenants, db: Database
) -> None:
    operator_person = _create(
        client,
        tenants.root_admin.headers,
        "operator.person@example.com",
        [_role(tenants.operator, "OBSERVER"), _role(tenants.customer_a, "ADMIN")],
        password=PASSWORD,
    )
    a = tenants.a_admin.headers
    # Visible to the customer admin (a role in its group) ...
    assert client.get(f"{API}/{operator_person}", headers=a).status_code == 200
    assert operator_person in _ids(client, a)
    # ... but not theirs to change, lock, re-role or delete.
    for body in (
        {"firstName": "Mallory"},
        {"locked": True},
        {"password": "taken over by a customer"},
        {"userRoles": [_role(tenants.customer_a, "OBSERVER")]},
    ):
        r = client.put(f"{API}/{operator_person}", json=body, headers=a)
        assert r.status_code == 403, (body, r.text)
    assert client.delete(f"{API}/{operator_person}", headers=a).status_code == 403
    with db.read() as s:
        user = s.get(User, int(operator_person))
        assert user is not None
        assert (user.first_name, user.disabled) == ("Ada", False)
    assert _roles_in_db(db, operator_person) == {(tenants.operator, "OBSERVER"), (tenants.customer_a, "ADMIN")}
    assert _sign_in(client, "operator.person@example.com", PASSWORD) == 303
    # The operator's own administrator may.
    assert (
        client.put(f"{API}/{operator_person}", json={"firstName": "Op"}, headers=tenants.root_admin.headers).status_code
        == 204
    )


def test_gui_session_reads_users_but_cannot_write_them(client: TestClient, tenants: Tenants) -> None:
    # A person who administers Customer A, signed in to the GUI, reads users with the session;
    # writes need an API credential or a CSRF form, so the session cannot create users at all.
    _create(
        client,
        tenants.root_admin.headers,
        "cust.admin@example.com",
        [_role(tenants.customer_a, "ADMIN")],
        password=PASSWORD,
    )
    assert _sign_in(client, "cust.admin@example.com", PASSWORD) == 303
    listed = client.get(API)
    assert listed.status_code == 200
    assert {u["email"] for u in listed.json()["data"]} == {"cust.admin@example.com"}
    r = client.post(API, json=_body("via.session@example.com", [_role(tenants.operator, "ADMIN")]))
    assert r.status_code == 401


def test_person_seeing_a_parent_group_cannot_grant_on_it(client: TestClient, tenants: Tenants, db: Database) -> None:
    """A person holding OBSERVER on the operator and ADMIN on Customer A (a user actor may hold
    roles on several groups, unlike an API user) grants nothing on the operator."""
    uid = _create(
        client,
        tenants.root_admin.headers,
        "two.roles@example.com",
        [_role(tenants.operator, "OBSERVER"), _role(tenants.customer_a, "ADMIN")],
    )
    with db.write() as s:
        person = s.get(User, int(uid))
        assert person is not None
        actor = users.actor_for(s, person)
        # It sees the operator's subtree, Customer B included (403: it lacks the right there) ...
        for group in (tenants.operator, tenants.customer_b):
            with pytest.raises(Forbidden):
                users.create(
                    s,
                    actor,
                    email=f"up{group}@example.com",
                    first_name="U",
                    last_name="P",
                    roles=[users.RoleGrant(group, ("OBSERVER",))],
                )
        # ... and does not see the root at all (400: no such group).
        with pytest.raises(InvalidInput):
            make_user(s, "root@example.com", (tenants.root, "OBSERVER"), actor=actor, first_name="R")
        # Inside its subtree it may.
        created = make_user(s, "inside@example.com", (tenants.site_a, "ADMIN"), actor=actor, first_name="I")
        assert created.created_by == f"user:{uid}"


def test_text_filter_matches_percent_and_underscore_literally(client: TestClient, tenants: Tenants) -> None:
    h = tenants.root_admin.headers
    for email, first in (("pct@example.com", "100%"), ("under@example.com", "a_b"), ("plain@example.com", "axb")):
        r = client.post(
            "/api/v2/users",
            json={
                "firstName": first,
                "lastName": "L",
                "email": email,
                "userRoles": [{"groupId": str(tenants.customer_a), "profileIds": ["OBSERVER"]}],
            },
            headers=h,
        )
        assert r.status_code == 201, r.text
    assert [u["email"] for u in client.get("/api/v2/users?text=a_b", headers=h).json()["data"]] == ["under@example.com"]
    assert [u["email"] for u in client.get("/api/v2/users?text=%25", headers=h).json()["data"]] == ["pct@example.com"]
