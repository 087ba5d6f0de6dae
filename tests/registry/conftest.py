"""Helpers for registry tests: bodies with sensible defaults, and a client wrapper per caller."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.conftest import Credential, Tenants

API = "/api/v2"


def contract_body(group: int | str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Contract",
        "groupId": str(group),
        "maxTokens": 100,
        "maxUplinkFrames": 140,
        "maxDownlinkFrames": 4,
        "tokenDuration": 12,
        "startTime": 1_700_000_000_000,
        "timezone": "Europe/Paris",
        "bidir": True,
    } | extra


def profile_body(group: int | str, **extra: Any) -> dict[str, Any]:
    return {"name": "EU class A", "groupId": str(group), "region": "EU868", "macVersion": "1.0.3"} | extra


def device_type_body(group: int | str, **extra: Any) -> dict[str, Any]:
    return {"name": "Trackers", "groupId": str(group)} | extra


class Api:
    """Calls as one credential; `create` asserts the 201 and returns the new id."""

    def __init__(self, client: TestClient, cred: Credential) -> None:
        self.client, self.cred = client, cred

    def get(self, path: str) -> Response:
        return self.client.get(API + path, headers=self.cred.headers)

    def post(self, path: str, body: Any) -> Response:
        return self.client.post(API + path, json=body, headers=self.cred.headers)

    def put(self, path: str, body: Any) -> Response:
        return self.client.put(API + path, json=body, headers=self.cred.headers)

    def delete(self, path: str) -> Response:
        return self.client.delete(API + path, headers=self.cred.headers)

    def create(self, path: str, body: Any) -> str:
        r = self.post(path, body)
        assert r.status_code == 201, r.text
        new_id: str = r.json()["id"]
        return new_id


@pytest.fixture
def root(client: TestClient, tenants: Tenants) -> Api:
    return Api(client, tenants.root_admin)


@pytest.fixture
def admin_a(client: TestClient, tenants: Tenants) -> Api:
    return Api(client, tenants.a_admin)


@pytest.fixture
def reader_a(client: TestClient, tenants: Tenants) -> Api:
    return Api(client, tenants.a_reader)


@pytest.fixture
def admin_b(client: TestClient, tenants: Tenants) -> Api:
    return Api(client, tenants.b_admin)
