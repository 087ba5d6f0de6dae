"""Paths Heron does not serve, walked from Sigfox's OpenAPI document: each answers 404 with a
JSON `{"message"}` naming the path, and a served path called with another method answers 405
with its allowed methods (api.md), so a client generated from the document learns which call
Heron lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Match

from tests.conftest import Tenants
from tests.support.sigfox_openapi import spec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
API = "/api/v2"
DUMMY = "1"  # every path parameter: a value no literal segment of Heron's routes has
METHODS = ("get", "post", "put", "patch", "delete")


def _served(client: TestClient, method: str, path: str) -> Match:
    """How Heron's router takes the call (the edge folds the trailing slash first)."""
    scope = {"type": "http", "method": method, "path": path.rstrip("/") or "/", "root_path": ""}
    matches = [route.matches(scope)[0] for route in client.app.routes]  # type: ignore[attr-defined]
    return Match.FULL if Match.FULL in matches else Match.PARTIAL if Match.PARTIAL in matches else Match.NONE


def _assert_404_naming(client: TestClient, tenants: Tenants, method: str, path: str) -> None:
    r = client.request(method, path, json={}, headers=tenants.root_admin.headers)
    assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json", (method, path)
    assert r.json() == {"message": f"no such resource: {path.rstrip('/')}"}, (method, path)


def test_every_path_of_the_document_heron_does_not_serve_answers_404_naming_it(
    client: TestClient, tenants: Tenants
) -> None:
    unserved, other_method = [], []
    for template, operations in spec()["paths"].items():
        path = API + re.sub(r"\{[^}]+\}", DUMMY, template)
        for method in (m.upper() for m in operations if m in METHODS):
            served = _served(client, method, path)
            if served is Match.NONE:
                unserved.append((method, path))
                _assert_404_naming(client, tenants, method, path)
            elif served is Match.PARTIAL:
                other_method.append((method, path))
                r = client.request(method, path, json={}, headers=tenants.root_admin.headers)
                assert r.status_code == 405, (method, path, r.text)
                assert set(r.json()) == {"message", "allowedMethods"} and method not in r.json()["allowedMethods"]
    # docs/ARCHITECTURE.md lists each path of the document Heron does not serve, and why.
    documented = re.findall(r"^\| `(GET|POST|PUT|DELETE) (/[^`]*)` \|", ARCHITECTURE.read_text(), re.MULTILINE)
    assert sorted(unserved) == sorted((m, API + re.sub(r"\{[^}]+\}", DUMMY, p)) for m, p in documented)


def test_any_unknown_v2_path_answers_404_naming_it_and_a_wrong_method_405(client: TestClient, tenants: Tenants) -> None:
    for path in (
        f"{API}/tiles/monarch",
        f"{API}/groups/1/geoloc-payloads",
        f"{API}/nope",
        f"{API}/devices/1/nope/",
        f"{API}//nope",  # the edge folds repeated slashes first: the message names /api/v2/nope
    ):
        expected = re.sub("/+", "/", path)
        r = client.get("http://testserver" + path, headers=tenants.root_admin.headers)
        assert r.status_code == 404 and r.json() == {"message": f"no such resource: {expected.rstrip('/')}"}, path
    r = client.delete(f"{API}/devices", headers=tenants.root_admin.headers)
    assert r.status_code == 405 and r.json() == {"message": "method not allowed", "allowedMethods": ["GET", "POST"]}
    assert r.headers["allow"] == "GET, POST"
