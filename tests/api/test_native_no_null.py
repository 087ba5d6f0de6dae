"""The native API never sends null: a field without a value is absent (Sigfox's document declares
no field nullable, and a client generated from it refuses a null). One rule, in
`heron.api.v2.render`, for answers FastAPI renders, pages a route serializes itself and error
bodies; requests keep `null` = unset. Every native answer of every test is also checked by the
`client` fixture (`tests.conftest.check_native_answer`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.testclient import TestClient

from heron.api.v2.render import NativeJSON, render
from tests.conftest import Tenants, null_member

API = "/api/v2"


def _create(client: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> str:
    r = client.post(API + path, json=body, headers=headers)
    assert r.status_code == 201, r.text
    new_id: str = r.json()["id"]
    return new_id


def _raw(client: TestClient, path: str, headers: dict[str, str]) -> dict[str, Any]:
    r = client.get(API + path, headers=headers)
    assert r.status_code == 200, r.text
    assert b"null" not in r.content, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_device_type_without_optional_values_leaves_them_out(client: TestClient, tenants: Tenants) -> None:
    headers = tenants.a_admin.headers
    dt = _create(client, headers, "/device-types", {"name": "Meters", "groupId": str(tenants.customer_a)})
    got = _raw(client, f"/device-types/{dt}", headers)
    assert got["name"] == "Meters" and got["group"]["id"] == str(tenants.customer_a)
    for absent in ("alertEmail", "downlinkDataString", "payloadConfig", "lastEditedBy", "lastEditionTime", "contract"):
        assert absent not in got, absent
    # A value set appears; set to null (a request's "unset") it is absent again.
    r = client.put(f"{API}/device-types/{dt}", json={"alertEmail": "ops@example.com"}, headers=headers)
    assert r.status_code == 204, r.text
    got = _raw(client, f"/device-types/{dt}", headers)
    assert got["alertEmail"] == "ops@example.com" and "lastEditionTime" in got and "lastEditedBy" in got
    r = client.put(f"{API}/device-types/{dt}", json={"alertEmail": None}, headers=headers)
    assert r.status_code == 204, r.text
    assert "alertEmail" not in _raw(client, f"/device-types/{dt}", headers)


def test_an_audited_unset_is_named_not_sent_as_null(client: TestClient, tenants: Tenants) -> None:
    headers = tenants.a_admin.headers
    body = {"name": "Meters", "groupId": str(tenants.customer_a), "alertEmail": "ops@example.com"}
    dt = _create(client, headers, "/device-types", body)
    r = client.put(f"{API}/device-types/{dt}", json={"alertEmail": None, "keepAlive": 0}, headers=headers)
    assert r.status_code == 204, r.text
    events = _raw(client, f"/audit-events?objectType=device_type&objectId={dt}", headers)["data"]
    assert [e["action"] for e in events] == ["update", "create"]
    assert events[0]["details"] == {"keepAlive": 0, "unset": ["alertEmail"]}


def test_a_new_device_leaves_out_what_it_does_not_have_alone_and_in_lists(client: TestClient, tenants: Tenants) -> None:
    headers = tenants.a_admin.headers
    dt = _create(client, headers, "/device-types", {"name": "Meters", "groupId": str(tenants.customer_a)})
    body = {"id": "1001", "name": "Meter", "pac": "0123456789ABCDEF", "deviceTypeId": dt}
    _create(client, headers, "/devices", body)
    never = ("lastCom", "sequenceNumber", "modemCertificate", "productCertificate", "location", "contract")
    alone = _raw(client, "/devices/1001", headers)
    listed = _raw(client, f"/devices?deviceTypeId={dt}", headers)["data"]  # serialized by its route
    assert [d["id"] for d in listed] == ["1001"]
    for device in (alone, listed[0]):
        assert device["name"] == "Meter" and device["token"]["state"] == 1
        for absent in (*never, "lastEditedBy", "lastEditionTime"):
            assert absent not in device, absent
        assert "end" not in device["token"], "no token end without a token"
    r = client.put(f"{API}/devices/1001", json={"lat": 45.5, "lng": 4.25}, headers=headers)
    assert r.status_code == 204, r.text
    moved = _raw(client, "/devices/1001", headers)
    assert moved["location"] == {"lat": 45.5, "lng": 4.25} and "lastEditionTime" in moved
    assert "lastCom" not in moved and "sequenceNumber" not in moved


def test_a_group_never_edited_leaves_out_its_editor(client: TestClient, tenants: Tenants) -> None:
    headers = tenants.a_admin.headers
    body = {"name": "Plant", "description": "", "type": 2, "timezone": "UTC", "parentId": str(tenants.customer_a)}
    group = _create(client, headers, "/groups", body)
    got = _raw(client, f"/groups/{group}", headers)  # serialized by its route
    assert got["name"] == "Plant" and "lastEditedBy" not in got and "lastEditionTime" not in got


def test_error_bodies_follow_the_same_rule(client: TestClient, tenants: Tenants) -> None:
    r = client.get(f"{API}/devices/FFFF1", headers=tenants.a_admin.headers)
    assert r.status_code == 404 and set(r.json()) == {"message"}
    r = client.post(f"{API}/groups", json={"name": None}, headers=tenants.a_admin.headers)
    assert r.status_code == 400 and b"null" not in r.content, r.text
    assert {e["field"] for e in r.json()["errors"]} >= {"name"}


def test_render_drops_null_members_at_every_depth_and_keeps_null_list_items() -> None:
    shared = {"id": "1", "name": None}
    body = {
        "a": None,
        "b": [None, 1, {"c": None, "d": [{"e": None, "f": 0}]}],
        "g": {"h": None, "i": False, "j": ""},
        "k": (shared, None),
        "l": [shared, shared],
    }
    assert orjson.loads(render(body)) == {
        "b": [None, 1, {"d": [{"f": 0}]}],
        "g": {"i": False, "j": ""},
        "k": [{"id": "1"}, None],
        "l": [{"id": "1"}, {"id": "1"}],
    }
    assert shared == {"id": "1", "name": None}, "the caller's objects are left as they are"
    assert render([None, {"a": None}]) == b"[null,{}]"


def _leaf_paths(routes: list[Any]) -> Iterator[str]:
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if isinstance(inner, list):
            yield from _leaf_paths(inner)
        elif isinstance(getattr(route, "path", None), str):
            yield route.path


def test_every_native_router_renders_with_the_rule_and_no_other_does(client: TestClient) -> None:
    """Each router the app includes (FastAPI keeps them nested, with their inclusion's default
    response class): those serving /api/v2 render with NativeJSON, the others (Senet, the station
    ingest, the web pages) as before."""
    app: FastAPI = client.app  # type: ignore[assignment]
    included = [r for r in app.routes if hasattr(r, "original_router")]
    native = other = 0
    for inclusion in included:
        paths = list(_leaf_paths(inclusion.original_router.routes))  # type: ignore[attr-defined]
        rendered = inclusion.include_context.default_response_class  # type: ignore[attr-defined]
        if all(p.startswith(API + "/") for p in paths):
            assert rendered is NativeJSON, paths
            native += 1
        else:
            assert not any(p.startswith(API + "/") for p in paths), paths
            assert rendered is not NativeJSON, paths
            other += 1
    assert native >= 20 and other >= 4, (native, other)


def test_the_fixture_check_finds_a_null_member_and_accepts_a_null_item() -> None:
    assert null_member({"data": [{"id": "1"}, {"id": "2", "lastCom": None}]}) == "$.data[1].lastCom"
    assert null_member({"data": [None, [None]], "paging": {}}) is None
