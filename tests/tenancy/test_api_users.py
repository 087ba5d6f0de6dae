"""/api/v2/api-users: credentials shown once, stored hashed, revoked at once in every process,
last-used times coalesced, and no escalation."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from heron.api.app import create_app
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.engine import Database
from heron.runtime.context import AppContext, build_context
from heron.tenancy.models import ApiUser, ApiUserProfile, AuditEvent
from tests.conftest import Tenants

API = "/api/v2/api-users"


def _basic(login: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()}


def _create(
    client: TestClient,
    headers: dict[str, str],
    group_id: int,
    profiles: list[str],
    name: str = "integration",
) -> tuple[str, str]:
    r = client.post(
        API,
        json={"groupId": str(group_id), "name": name, "timezone": "Europe/Paris", "profileIds": profiles},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return body["id"], body["accessToken"]


@pytest.fixture
def second_worker(settings: Settings) -> Iterator[TestClient]:
    """Another worker process: its own context (engine, authenticator caches) on the same database."""
    other = build_context(settings, prepare(settings, announce_password=False))
    with TestClient(create_app(settings, other)) as c:
        yield c
    other.db.dispose()


class StatementCounter:
    """Counts the UPDATE statements sent on an engine (and every engine derived from it)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.updates: list[str] = []

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            self.updates.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self.db.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.db.engine, "before_cursor_execute", self._on_execute)


# -- create, read ----------------------------------------------------------------------------


def test_create_answers_201_with_id_and_a_128_bit_token(client: TestClient, tenants: Tenants) -> None:
    r = client.post(
        API,
        json={"groupId": str(tenants.customer_a), "name": "ingest", "timezone": "UTC", "profileIds": ["API_ONLY"]},
        headers=tenants.a_admin.basic,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "accessToken"}
    assert body["id"].isdigit()
    token = body["accessToken"]
    assert re.fullmatch(r"[0-9a-f]{32,}", token), token  # >= 128 random bits, hex like Sigfox tokens
    # The new credential works at once, with Basic auth and the bare-key header.
    assert client.get("/api/v2/groups", headers=_basic(body["id"], token)).status_code == 200
    assert client.get("/api/v2/groups", headers={"authorization": token}).status_code == 200


def test_tokens_are_random_per_credential(client: TestClient, tenants: Tenants) -> None:
    tokens = {_create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])[1] for _ in range(5)}
    assert len(tokens) == 5


def test_database_holds_only_the_sha256_of_the_secret(client: TestClient, tenants: Tenants, db: Database) -> None:
    uid, token = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"], name="hashed")
    with db.read() as s:
        row = s.get(ApiUser, int(uid))
        assert row is not None
        assert row.secret_hash == hashlib.sha256(token.encode()).hexdigest()
        stored_values = [str(getattr(row, c.key)) for c in ApiUser.__table__.columns]
        audit_details = list(s.scalars(select(AuditEvent.details)))
    assert not any(token in v for v in stored_values)
    assert not any(token in d for d in audit_details)


def test_get_never_returns_the_secret(client: TestClient, tenants: Tenants, db: Database) -> None:
    uid, token = _create(client, tenants.a_admin.headers, tenants.site_a, ["DEVICE_MANAGER_R"], name="reader")
    r = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == uid
    assert body["name"] == "reader"
    assert body["timezone"] == "Europe/Paris"
    assert body["group"]["id"] == str(tenants.site_a)
    assert [p["id"] for p in body["profiles"]] == ["DEVICE_MANAGER_R"]
    assert isinstance(body["creationTime"], int)
    assert body["createdBy"] == f"api_user:{tenants.a_admin.id}"
    assert "accessToken" not in body
    listed = client.get(API, headers=tenants.a_admin.headers)
    with db.read() as s:
        digest = s.scalar(select(ApiUser.secret_hash).where(ApiUser.id == int(uid)))
    assert digest is not None
    for text in (r.text, listed.text):
        assert token not in text
        assert digest not in text


def test_list_shows_only_own_subtree(client: TestClient, tenants: Tenants) -> None:
    r = client.get(API, headers=tenants.a_admin.headers)
    assert r.status_code == 200
    ids = {a["id"] for a in r.json()["data"]}
    assert ids == {tenants.a_admin.id, tenants.a_reader.id}
    r = client.get(API, headers=tenants.b_admin.headers)
    assert {a["id"] for a in r.json()["data"]} == {tenants.b_admin.id}
    # Another tenant's API user is indistinguishable from a missing one.
    assert client.get(f"{API}/{tenants.a_admin.id}", headers=tenants.b_admin.headers).status_code == 404


def test_list_filters_by_group_and_profile(client: TestClient, tenants: Tenants) -> None:
    site_user, _ = _create(client, tenants.root_admin.headers, tenants.site_a, ["CALLBACK_MANAGER"])
    h = tenants.root_admin.headers
    r = client.get(f"{API}?groupIds={tenants.site_a}", headers=h)
    assert [a["id"] for a in r.json()["data"]] == [site_user]
    r = client.get(f"{API}?profileId=OBSERVER", headers=h)
    assert [a["id"] for a in r.json()["data"]] == [tenants.a_reader.id]


def test_reader_without_api_user_rights_is_refused(client: TestClient, tenants: Tenants) -> None:
    r = client.post(
        API,
        json={"groupId": str(tenants.customer_a), "name": "x", "timezone": "UTC", "profileIds": ["OBSERVER"]},
        headers=tenants.a_reader.headers,
    )
    assert r.status_code == 403
    assert "message" in r.json()
    assert client.get(API, headers=tenants.a_reader.headers).json()["data"] == []


def test_unknown_body_field_is_refused_and_sigfox_fields_ignored(client: TestClient, tenants: Tenants) -> None:
    body = {"groupId": str(tenants.customer_a), "name": "x", "timezone": "UTC", "profileIds": ["API_ONLY"]}
    r = client.post(API, json={**body, "color": "red"}, headers=tenants.a_admin.headers)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "color"
    r = client.post(API, json={**body, "fields": "group"}, headers=tenants.a_admin.headers)
    assert r.status_code == 201


# -- update and profiles ---------------------------------------------------------------------


def test_put_is_a_partial_update(client: TestClient, tenants: Tenants) -> None:
    uid, _ = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"], name="before")
    r = client.put(f"{API}/{uid}", json={"name": "after"}, headers=tenants.a_admin.headers)
    assert r.status_code == 204, r.text
    body = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()
    assert body["name"] == "after"
    assert body["timezone"] == "Europe/Paris"
    assert [p["id"] for p in body["profiles"]] == ["API_ONLY"]
    assert body["lastEditedBy"] == f"api_user:{tenants.a_admin.id}"
    r = client.put(f"{API}/{uid}", json={"timezone": "Asia/Tokyo"}, headers=tenants.a_admin.headers)
    assert r.status_code == 204
    body = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()
    assert (body["name"], body["timezone"]) == ("after", "Asia/Tokyo")


def test_put_profiles_adds_and_delete_profile_removes(client: TestClient, tenants: Tenants, db: Database) -> None:
    h = tenants.a_admin.headers
    uid, _ = _create(client, h, tenants.customer_a, ["API_ONLY"])
    r = client.put(f"{API}/{uid}/profiles", json={"profileIds": ["CALLBACK_MANAGER"]}, headers=h)
    assert r.status_code == 204, r.text
    body = client.get(f"{API}/{uid}", headers=h).json()
    assert sorted(p["id"] for p in body["profiles"]) == ["API_ONLY", "CALLBACK_MANAGER"]
    r = client.delete(f"{API}/{uid}/profiles/API_ONLY", headers=h)
    assert r.status_code == 204
    with db.read() as s:
        held = list(s.scalars(select(ApiUserProfile.profile_id).where(ApiUserProfile.api_user_id == int(uid))))
    assert held == ["CALLBACK_MANAGER"]
    # The last profile cannot go; a profile it does not hold is 404.
    assert client.delete(f"{API}/{uid}/profiles/CALLBACK_MANAGER", headers=h).status_code == 400
    assert client.delete(f"{API}/{uid}/profiles/OBSERVER", headers=h).status_code == 404


def test_removed_profile_takes_effect_on_the_very_next_request(
    client: TestClient, tenants: Tenants, db: Database
) -> None:
    h = tenants.root_admin.headers
    uid, token = _create(client, h, tenants.customer_a, ["ADMIN", "OBSERVER"])
    mine = _basic(uid, token)
    # Warm this process's profile cache with the ADMIN rights.
    assert client.get(API, headers=mine).status_code == 200
    assert client.get(API, headers=mine).json()["data"] != []
    with db.read() as s:
        version_before = s.scalar(select(ApiUser.roles_version).where(ApiUser.id == int(uid)))
    assert client.delete(f"{API}/{uid}/profiles/ADMIN", headers=h).status_code == 204
    with db.read() as s:
        assert s.scalar(select(ApiUser.roles_version).where(ApiUser.id == int(uid))) == (version_before or 0) + 1
    r = client.post(
        API,
        json={"groupId": str(tenants.customer_a), "name": "x", "timezone": "UTC", "profileIds": ["OBSERVER"]},
        headers=mine,
    )
    assert r.status_code == 403
    assert client.get(API, headers=mine).json()["data"] == []
    # Adding it back also counts at once.
    assert client.put(f"{API}/{uid}/profiles", json={"profileIds": ["ADMIN"]}, headers=h).status_code == 204
    assert client.get(API, headers=mine).json()["data"] != []


# -- renewal and revocation --------------------------------------------------------------------


def test_renew_credential_returns_a_new_token_and_refuses_the_old_one(
    client: TestClient, tenants: Tenants, db: Database
) -> None:
    uid, old = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])
    assert client.get("/api/v2/groups", headers=_basic(uid, old)).status_code == 200
    r = client.put(f"{API}/{uid}/renew-credential", headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    new = r.json()["accessToken"]
    assert set(r.json()) == {"accessToken"}
    assert new != old and re.fullmatch(r"[0-9a-f]{32,}", new)
    refused = client.get("/api/v2/groups", headers=_basic(uid, old))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="heron"'
    assert client.get("/api/v2/groups", headers={"authorization": old}).status_code == 401
    assert client.get("/api/v2/groups", headers=_basic(uid, new)).status_code == 200
    with db.read() as s:
        row = s.get(ApiUser, int(uid))
        assert row is not None
        assert row.secret_hash == hashlib.sha256(new.encode()).hexdigest()
        assert row.credential_renewed_at is not None


def test_delete_revokes_immediately(client: TestClient, tenants: Tenants) -> None:
    uid, token = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])
    assert client.get("/api/v2/groups", headers=_basic(uid, token)).status_code == 200
    assert client.delete(f"{API}/{uid}", headers=tenants.a_admin.headers).status_code == 204
    assert client.get("/api/v2/groups", headers=_basic(uid, token)).status_code == 401
    assert client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).status_code == 404


def test_basic_login_must_match_the_secret_owner(client: TestClient, tenants: Tenants) -> None:
    r = client.get("/api/v2/groups", headers=_basic(tenants.a_reader.id, tenants.a_admin.secret))
    assert r.status_code == 401


def test_revocation_reaches_another_worker_on_its_next_request(
    client: TestClient, second_worker: TestClient, tenants: Tenants
) -> None:
    uid, token = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])
    mine = _basic(uid, token)
    assert second_worker.get("/api/v2/groups", headers=mine).status_code == 200
    assert client.delete(f"{API}/{uid}", headers=tenants.a_admin.headers).status_code == 204
    assert second_worker.get("/api/v2/groups", headers=mine).status_code == 401


def test_renewal_reaches_another_worker_on_its_next_request(
    client: TestClient, second_worker: TestClient, tenants: Tenants
) -> None:
    uid, old = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])
    assert second_worker.get("/api/v2/groups", headers=_basic(uid, old)).status_code == 200
    new = client.put(f"{API}/{uid}/renew-credential", headers=tenants.a_admin.headers).json()["accessToken"]
    assert second_worker.get("/api/v2/groups", headers=_basic(uid, old)).status_code == 401
    assert second_worker.get("/api/v2/groups", headers=_basic(uid, new)).status_code == 200


def test_removed_profile_reaches_another_worker_on_its_next_request(
    client: TestClient, second_worker: TestClient, tenants: Tenants
) -> None:
    uid, token = _create(client, tenants.root_admin.headers, tenants.customer_a, ["ADMIN", "OBSERVER"])
    mine = _basic(uid, token)
    assert second_worker.get(API, headers=mine).json()["data"] != []  # cached there with ADMIN
    assert client.delete(f"{API}/{uid}/profiles/ADMIN", headers=tenants.root_admin.headers).status_code == 204
    assert second_worker.get(API, headers=mine).json()["data"] == []
    assert second_worker.get("/api/v2/groups", headers=mine).status_code == 200  # OBSERVER still reads groups


# -- last-used time ----------------------------------------------------------------------------


def test_requests_do_not_write_and_flush_records_last_used_time(
    client: TestClient, ctx: AppContext, tenants: Tenants
) -> None:
    uid, token = _create(client, tenants.a_admin.headers, tenants.customer_a, ["API_ONLY"])
    ctx.authenticator.flush()  # whatever the setup left pending
    assert "lastUsedTime" not in client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()
    ctx.authenticator.flush()
    before_ms = int(time.time() * 1000)
    with StatementCounter(ctx.db) as counter:
        for _ in range(25):
            assert client.get("/api/v2/groups", headers=_basic(uid, token)).status_code == 200
    assert counter.updates == []
    with StatementCounter(ctx.db) as counter:
        flushed = ctx.authenticator.flush()
    assert flushed == 1
    assert len(counter.updates) == 1  # one statement for every pending credential
    used = client.get(f"{API}/{uid}", headers=tenants.a_admin.headers).json()["lastUsedTime"]
    assert isinstance(used, int)
    assert before_ms - 1000 <= used <= int(time.time() * 1000) + 1000


def test_flush_writes_one_statement_for_many_credentials(client: TestClient, ctx: AppContext, tenants: Tenants) -> None:
    ctx.authenticator.flush()
    for cred in (tenants.a_admin, tenants.a_reader, tenants.b_admin):
        assert client.get("/api/v2/groups", headers=cred.headers).status_code == 200
    with StatementCounter(ctx.db) as counter:
        assert ctx.authenticator.flush() == 3
    assert len(counter.updates) == 1
    assert ctx.authenticator.flush() == 0  # nothing pending: no write at all
    for cred in (tenants.a_reader, tenants.b_admin):
        r = client.get(f"{API}/{cred.id}", headers=tenants.root_admin.headers)
        assert isinstance(r.json()["lastUsedTime"], int)


def test_background_flusher_records_last_used_time_after_an_app_restart(settings: Settings, tenants: Tenants) -> None:
    fast = settings.model_copy(update={"api_user_last_used_flush_seconds": 0.05})
    context = build_context(fast, prepare(fast, announce_password=False))
    app = create_app(fast, context)
    try:
        with TestClient(app):
            pass  # a first life: the flusher starts and stops
        with TestClient(app) as c:
            assert c.get("/api/v2/groups", headers=tenants.a_reader.headers).status_code == 200
            deadline = time.monotonic() + 5
            used = None
            while used is None and time.monotonic() < deadline:
                time.sleep(0.05)
                with context.db.read() as s:
                    used = s.scalar(select(ApiUser.last_used_at).where(ApiUser.id == int(tenants.a_reader.id)))
            assert used is not None, "the background flusher did not run after the restart"
    finally:
        context.db.dispose()


# -- no escalation ---------------------------------------------------------------------------


def test_cannot_create_an_api_user_above_or_beside_own_group(client: TestClient, tenants: Tenants) -> None:
    for group in (tenants.operator, tenants.root, tenants.customer_b):
        r = client.post(
            API,
            json={"groupId": str(group), "name": "x", "timezone": "UTC", "profileIds": ["OBSERVER"]},
            headers=tenants.a_admin.headers,
        )
        assert r.status_code == 400, (group, r.text)
        assert r.json()["errors"][0]["field"] == "groupId"
    # Inside its subtree it may.
    _create(client, tenants.a_admin.headers, tenants.site_a, ["ADMIN"])


def test_granted_profiles_must_be_held_by_the_creator(client: TestClient, tenants: Tenants, db: Database) -> None:
    # An admin of Site A1 may hand out ADMIN on its site, but nothing on Customer A above it,
    # where it holds no rights at all.
    h = tenants.root_admin.headers
    uid, token = _create(client, h, tenants.site_a, ["ADMIN"])
    site_admin = _basic(uid, token)
    r = client.post(
        API,
        json={"groupId": str(tenants.customer_a), "name": "x", "timezone": "UTC", "profileIds": ["OBSERVER"]},
        headers=site_admin,
    )
    assert r.status_code == 400
    _create(client, site_admin, tenants.site_a, ["ADMIN"])
    # Raising an existing API user of a parent group is refused too.
    r = client.put(f"{API}/{tenants.a_reader.id}/profiles", json={"profileIds": ["ADMIN"]}, headers=site_admin)
    assert r.status_code == 404
    with db.read() as s:
        held = set(s.scalars(select(ApiUserProfile.profile_id).where(ApiUserProfile.api_user_id == int(uid))))
    assert held == {"ADMIN"}


def test_unknown_profile_is_refused(client: TestClient, tenants: Tenants) -> None:
    r = client.post(
        API,
        json={"groupId": str(tenants.customer_a), "name": "x", "timezone": "UTC", "profileIds": ["SUPERUSER"]},
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "profileIds"


def test_other_tenant_cannot_renew_or_revoke(client: TestClient, tenants: Tenants) -> None:
    for method, path in (
        ("PUT", f"{API}/{tenants.a_admin.id}/renew-credential"),
        ("DELETE", f"{API}/{tenants.a_admin.id}"),
        ("PUT", f"{API}/{tenants.a_admin.id}"),
    ):
        r = client.request(
            method, path, json={"name": "pwned"} if method == "PUT" else None, headers=tenants.b_admin.headers
        )
        assert r.status_code == 404, (method, path, r.text)
    assert client.get("/api/v2/groups", headers=tenants.a_admin.headers).status_code == 200


def test_reader_cannot_renew_its_own_credential(client: TestClient, tenants: Tenants) -> None:
    r = client.put(f"{API}/{tenants.a_reader.id}/renew-credential", headers=tenants.a_reader.headers)
    assert r.status_code in (403, 404)
    assert client.get("/api/v2/groups", headers=tenants.a_reader.headers).status_code == 200
