"""Operations: health and readiness, metrics, request ids and JSON logs, the audit log, and the
per-credential rate limit."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from heron.api.app import create_app
from heron.api.ratelimit import RateLimiter
from heron.db.engine import Database
from heron.observability import REGISTRY, JsonFormatter
from heron.runtime.context import AppContext
from heron.tenancy.auth import Authenticator
from tests.conftest import Tenants

GROUPS = "/api/v2/groups"
AUDIT = "/api/v2/audit-events"


def _app_with(ctx: AppContext, **updates: Any) -> FastAPI:
    """A fresh app on the same database and keys with some settings changed. The context carries
    the settings the request path reads (rate limit, public URL), so it gets the copy too."""
    settings = ctx.settings.model_copy(update=updates)
    return create_app(settings, dataclasses.replace(ctx, settings=settings, rate_limiter=RateLimiter()))


def _new_group(client: TestClient, headers: dict[str, str], parent: int, name: str) -> str:
    r = client.post(
        GROUPS,
        json={"name": name, "description": "", "type": 2, "timezone": "UTC", "parentId": str(parent)},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _events(client: TestClient, headers: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    r = client.get(f"{AUDIT}{query}", headers=headers)
    assert r.status_code == 200, r.text
    assert "paging" in r.json()
    data: list[dict[str, Any]] = r.json()["data"]
    return data


# -- health and readiness -------------------------------------------------------------------------


def test_health_answers_200_without_credentials(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_when_database_reachable_and_migrations_current(client: TestClient) -> None:
    r = client.get("/api/ready")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"


@pytest.mark.parametrize("revision", ["0000_older", None], ids=["older-revision", "no-revision"])
def test_not_ready_when_database_is_behind(client: TestClient, db: Database, revision: str | None) -> None:
    with db.write() as s:
        if revision is None:
            s.execute(text("DELETE FROM alembic_version"))
        else:
            s.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    r = client.get("/api/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert "migrations" in body
    assert client.get("/api/health").status_code == 200  # alive, just not ready


def test_not_ready_when_database_unreachable(ctx: AppContext, tmp_path: Path) -> None:
    if ctx.db.is_sqlite:
        (tmp_path / "a-directory").mkdir()
        url = f"sqlite:///{tmp_path / 'a-directory'}"  # a folder: SQLite cannot open it
    else:
        url = "postgresql+psycopg://heron@127.0.0.1:1/nowhere?connect_timeout=2"
    down = Database(url)
    broken = dataclasses.replace(ctx, db=down, authenticator=Authenticator(down))
    try:
        r = TestClient(create_app(ctx.settings, broken)).get("/api/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert "unreachable" in r.json()["database"]
    finally:
        down.dispose()


# -- metrics --------------------------------------------------------------------------------------


def _requests_total(route: str, method: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value("heron_http_requests_total", {"route": route, "method": method, "status": status})
        or 0.0
    )


def _samples(exposition: str, name: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith(name)
    ]


def test_metrics_count_requests_by_route_template_and_status(client: TestClient, tenants: Tenants) -> None:
    template = "/api/v2/groups/{group_id}"
    ok_before = _requests_total(template, "GET", "200")
    missing_before = _requests_total(template, "GET", "404")
    client.get(f"{GROUPS}/{tenants.site_a}", headers=tenants.a_admin.headers)
    client.get(f"{GROUPS}/{tenants.customer_a}/", headers=tenants.a_admin.headers)  # the slash form too
    client.get(f"{GROUPS}/{tenants.customer_b}", headers=tenants.a_admin.headers)  # another tenant's: 404
    assert _requests_total(template, "GET", "200") == ok_before + 2
    assert _requests_total(template, "GET", "404") == missing_before + 1

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    totals = {
        (labels["route"], labels["method"], labels["status"]): value
        for name, labels, value in _samples(r.text, "heron_http_requests_total")
        if name == "heron_http_requests_total"
    }
    assert totals[(template, "GET", "200")] >= 2
    assert totals[(template, "GET", "404")] >= 1
    # Ids never become label values: one series per template, whatever the id.
    assert not any(str(tenants.site_a) in route.split("/") for route, _, _ in totals)
    assert f"/api/v2/groups/{tenants.site_a}" not in r.text


def test_metrics_expose_latency_buckets_per_route(client: TestClient, tenants: Tenants) -> None:
    template = "/api/v2/groups/{group_id}"
    client.get(f"{GROUPS}/{tenants.site_a}", headers=tenants.a_admin.headers)
    samples = [
        (name, labels, value)
        for name, labels, value in _samples(client.get("/metrics").text, "heron_http_request_duration_seconds")
        if labels.get("route") == template
    ]
    buckets = [(labels["le"], value) for name, labels, value in samples if name.endswith("_bucket")]
    assert len(buckets) >= 5
    assert buckets[-1][0] == "+Inf"
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    count = next(value for name, _, value in samples if name.endswith("_count"))
    assert counts[-1] == count >= 1
    assert any(name.endswith("_sum") for name, _, _ in samples)


def test_unmatched_paths_share_one_series(client: TestClient) -> None:
    before = _requests_total("unmatched", "GET", "404")
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    assert _requests_total("unmatched", "GET", "404") == before + 2


# -- request ids and logs -------------------------------------------------------------------------


def test_every_response_carries_a_request_id(client: TestClient, tenants: Tenants) -> None:
    responses = [
        client.get("/api/health"),
        client.get(GROUPS, headers=tenants.a_admin.headers),
        client.get(GROUPS),  # 401
        client.get(f"{GROUPS}/{tenants.customer_b}", headers=tenants.a_admin.headers),  # 404
        client.post(GROUPS, json={"bogus": 1}, headers=tenants.a_admin.headers),  # 400
        client.patch(GROUPS, headers=tenants.a_admin.headers),  # 405
        client.get("/nowhere"),
        client.get("/login"),
        client.get("/metrics"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.request.url, r.status_code) for r in responses]
    assert len(set(ids)) == len(ids)  # fresh per request


def test_safe_incoming_request_id_is_echoed(client: TestClient) -> None:
    r = client.get("/api/health", headers={"X-Request-ID": "lb-7f3a.2_x"})
    assert r.headers["x-request-id"] == "lb-7f3a.2_x"


@pytest.mark.parametrize("incoming", ["has space", "x" * 65, "<script>", "a/b", ""])
def test_unsafe_incoming_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    r = client.get("/api/health", headers={"X-Request-ID": incoming})
    rid = r.headers["x-request-id"]
    assert rid != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", rid)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Heron's JSON log lines, formatted as they are emitted (while the request id is set)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("heron")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_access_log_is_json_with_the_request_id(ctx: AppContext, tenants: Tenants, json_log: io.StringIO) -> None:
    c = TestClient(_app_with(ctx, access_log=True))
    r = c.get(f"{GROUPS}/{tenants.site_a}", headers={**tenants.a_admin.headers, "X-Request-ID": "trace-abc-1"})
    assert r.status_code == 200
    generated = c.get("/api/health").headers["x-request-id"]
    lines = _log_lines(json_log)
    access = [line for line in lines if line["event"] == "http.request"]
    mine = [line for line in access if line.get("request_id") == "trace-abc-1"]
    assert len(mine) == 1, access
    entry = mine[0]
    assert entry["logger"] == "heron.access"
    assert entry["level"] == "info"
    assert entry["route"] == "/api/v2/groups/{group_id}"
    assert entry["status"] == 200
    assert entry["method"] == "GET"
    assert isinstance(entry["ms"], (int, float))
    assert "time" in entry
    assert any(line.get("request_id") == generated for line in access)


def test_access_log_can_be_turned_off(client: TestClient, json_log: io.StringIO) -> None:
    client.get("/api/health")  # the fixture's settings turn the access log off
    assert not [line for line in _log_lines(json_log) if line["event"] == "http.request"]


def test_json_formatter_writes_extras_and_exceptions_on_one_line() -> None:
    logger = logging.getLogger("heron.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "heron.test", logging.ERROR, __file__, 1, "thing.failed", (), sys.exc_info(), extra={"device": "1A2B"}
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["event"] == "thing.failed"
    assert parsed["level"] == "error"
    assert parsed["device"] == "1A2B"
    assert "ValueError: boom" in parsed["exc"]
    assert "request_id" not in parsed  # outside a request


# -- audit log ------------------------------------------------------------------------------------


def test_audit_records_create_update_renew_delete_with_actor(client: TestClient, tenants: Tenants) -> None:
    h = tenants.root_admin.headers
    r = client.post(
        "/api/v2/api-users",
        json={"groupId": str(tenants.customer_a), "name": "audited", "timezone": "UTC", "profileIds": ["API_ONLY"]},
        headers={**h, "X-Request-ID": "create-1"},
    )
    assert r.status_code == 201
    uid = r.json()["id"]
    assert client.put(f"/api/v2/api-users/{uid}", json={"name": "renamed"}, headers=h).status_code == 204
    assert client.put(f"/api/v2/api-users/{uid}/renew-credential", headers=h).status_code == 200
    assert client.delete(f"/api/v2/api-users/{uid}", headers=h).status_code == 204

    events = _events(client, tenants.a_admin.headers, f"?objectType=api_user&objectId={uid}")
    assert [e["action"] for e in events] == ["delete", "credential.renew", "update", "create"]  # newest first
    assert {e["actor"] for e in events} == {f"api_user:{tenants.root_admin.id}"}
    assert {e["objectType"] for e in events} == {"api_user"}
    create = events[-1]
    assert create["requestId"] == "create-1"
    assert create["details"]["name"] == "audited"
    assert events[2]["details"] == {"name": "renamed"}
    times = [e["time"] for e in events]
    assert all(isinstance(t, int) for t in times) and times == sorted(times, reverse=True)
    # No secret is ever written to the log.
    assert r.json()["accessToken"] not in json.dumps(events)


def test_audit_records_user_and_group_changes(client: TestClient, tenants: Tenants) -> None:
    a = tenants.a_admin.headers
    gid = _new_group(client, a, tenants.customer_a, "Audited group")
    assert client.put(f"{GROUPS}/{gid}", json={"name": "Audited group 2"}, headers=a).status_code == 204
    assert client.delete(f"{GROUPS}/{gid}", headers=a).status_code == 204
    r = client.post(
        "/api/v2/users",
        json={
            "firstName": "Audit",
            "lastName": "Ed",
            "email": "audited@example.com",
            "userRoles": [{"groupId": str(tenants.customer_a), "profileIds": ["OBSERVER"]}],
        },
        headers=a,
    )
    uid = r.json()["id"]
    assert client.put(f"/api/v2/users/{uid}", json={"locked": True}, headers=a).status_code == 204
    assert client.delete(f"/api/v2/users/{uid}", headers=a).status_code == 204

    actor = f"api_user:{tenants.a_admin.id}"
    group_events = _events(client, a, f"?objectType=group&objectId={gid}")
    assert [(e["action"], e["actor"]) for e in group_events] == [
        ("delete", actor),
        ("update", actor),
        ("create", actor),
    ]
    user_events = _events(client, a, f"?objectType=user&objectId={uid}")
    assert [(e["action"], e["actor"]) for e in user_events] == [("delete", actor), ("update", actor), ("create", actor)]
    assert user_events[1]["details"] == {"locked": True}


def test_audit_filters_by_time(client: TestClient, tenants: Tenants) -> None:
    a = tenants.a_admin.headers
    first = _new_group(client, a, tenants.customer_a, "Early group")
    time.sleep(0.01)
    cut = int(time.time() * 1000)
    time.sleep(0.01)
    second = _new_group(client, a, tenants.customer_a, "Late group")
    after = {e["objectId"] for e in _events(client, a, f"?objectType=group&since={cut}")}
    before = {e["objectId"] for e in _events(client, a, f"?objectType=group&before={cut}")}
    assert second in after and first not in after
    assert first in before and second not in before


def test_audit_log_needs_audit_read(client: TestClient, tenants: Tenants) -> None:
    r = client.get(AUDIT, headers=tenants.a_reader.headers)  # OBSERVER: no audit:read
    assert r.status_code == 403
    assert "message" in r.json()
    assert client.get(AUDIT).status_code == 401


def test_audit_log_never_shows_another_tenants_events(client: TestClient, tenants: Tenants) -> None:
    in_a = _new_group(client, tenants.a_admin.headers, tenants.customer_a, "Tenant A secret project")
    in_b = _new_group(client, tenants.b_admin.headers, tenants.customer_b, "Tenant B group")
    seen_by_b = _events(client, tenants.b_admin.headers)
    assert in_b in {e["objectId"] for e in seen_by_b}
    assert in_a not in {e["objectId"] for e in seen_by_b}
    assert "secret project" not in json.dumps(seen_by_b)
    assert _events(client, tenants.b_admin.headers, f"?objectType=group&objectId={in_a}") == []
    # Customer B's credentials were created in B; A's never show up there.
    assert tenants.a_admin.id not in {e["objectId"] for e in seen_by_b if e["objectType"] == "api_user"}
    seen_by_a = {e["objectId"] for e in _events(client, tenants.a_admin.headers)}
    assert in_a in seen_by_a and in_b not in seen_by_a
    # The operator's administrator sees both.
    seen_by_root = {e["objectId"] for e in _events(client, tenants.root_admin.headers)}
    assert {in_a, in_b} <= seen_by_root


def test_audit_log_pages(client: TestClient, tenants: Tenants) -> None:
    a = tenants.a_admin.headers
    created = [_new_group(client, a, tenants.customer_a, f"Paged group {i}") for i in range(3)]
    everything = _events(client, a, "?objectType=group")
    assert [e["objectId"] for e in everything[:3]] == created[::-1]
    r = client.get(f"{AUDIT}?objectType=group&limit=2", headers=a)
    body = r.json()
    assert [e["id"] for e in body["data"]] == [e["id"] for e in everything[:2]]
    seen = [e["id"] for e in body["data"]]
    while body["paging"]:
        body = client.get(body["paging"]["next"], headers=a).json()
        seen += [e["id"] for e in body["data"]]
    assert seen == [e["id"] for e in everything]


def test_created_by_and_last_edited_by_agree_with_the_audit_log(client: TestClient, tenants: Tenants) -> None:
    gid = _new_group(client, tenants.a_admin.headers, tenants.customer_a, "Stamped group")
    group = client.get(f"{GROUPS}/{gid}", headers=tenants.a_admin.headers).json()
    (created,) = _events(client, tenants.a_admin.headers, f"?objectType=group&objectId={gid}")
    assert group["createdBy"] == created["actor"] == f"api_user:{tenants.a_admin.id}"
    assert "lastEditedBy" not in group

    r = client.put(
        f"{GROUPS}/{gid}", json={"description": "edited by the operator"}, headers=tenants.root_admin.headers
    )
    assert r.status_code == 204
    group = client.get(f"{GROUPS}/{gid}", headers=tenants.a_admin.headers).json()
    updated = _events(client, tenants.a_admin.headers, f"?objectType=group&objectId={gid}")[0]
    assert updated["action"] == "update"
    assert group["lastEditedBy"] == updated["actor"] == f"api_user:{tenants.root_admin.id}"
    assert group["lastEditionTime"] == updated["time"]
    assert group["createdBy"] == created["actor"]  # unchanged by the edit


# -- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_is_off_by_default(client: TestClient, tenants: Tenants) -> None:
    statuses = {client.get(GROUPS, headers=tenants.a_reader.headers).status_code for _ in range(40)}
    assert statuses == {200}


def test_rate_limit_answers_429_with_retry_after(ctx: AppContext, tenants: Tenants) -> None:
    burst = 4
    c = TestClient(_app_with(ctx, rate_limit_per_second=1.0, rate_limit_burst=burst))
    statuses = [c.get(GROUPS, headers=tenants.a_reader.headers).status_code for _ in range(burst + 3)]
    assert statuses[:burst] == [200] * burst
    assert 429 in statuses[burst:]
    r = c.get(GROUPS, headers=tenants.a_reader.basic)  # the same credential, however presented
    assert r.status_code == 429
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2
    assert r.json() == {"message": r.json()["message"]}
    assert r.headers["x-request-id"]
    time.sleep(retry + 0.05)
    assert c.get(GROUPS, headers=tenants.a_reader.headers).status_code == 200


def test_rate_limit_is_per_credential(ctx: AppContext, tenants: Tenants) -> None:
    c = TestClient(_app_with(ctx, rate_limit_per_second=0.5, rate_limit_burst=2))
    for _ in range(2):
        assert c.get(GROUPS, headers=tenants.a_reader.headers).status_code == 200
    assert c.get(GROUPS, headers=tenants.a_reader.headers).status_code == 429
    # Another credential, even of the same tenant, is unaffected.
    assert c.get(GROUPS, headers=tenants.a_admin.headers).status_code == 200
    assert c.get(GROUPS, headers=tenants.b_admin.headers).status_code == 200
    # Unauthenticated requests are refused as such, not rate-limited.
    assert c.get(GROUPS).status_code == 401
