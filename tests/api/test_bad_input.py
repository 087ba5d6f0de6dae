"""Bad input on the native API: every refusal is a clear 4xx in the api.md shape, and a refused
request changes nothing in the database (checked row by row with `db_snapshot`).

Tables of cases name objects with `{placeholders}` (`{customer_a}`, `{key_a}`, ...) resolved
against the `objects` fixture, so that each case fits on one line."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from heron.api.schemas import MAX_OFFSET
from heron.db.engine import Database
from heron.delivery import callbacks
from heron.keys import Keyring
from heron.network.sigfox import stations
from heron.registry import contracts, device_profiles, device_types, devices
from heron.tenancy import api_users, groups
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import ApiUser, Group, User
from tests.api.test_access_matrix import db_snapshot
from tests.conftest import TEST_KEK, Credential, Tenants, make_credential, make_user

API = "/api/v2"


# -- helpers ------------------------------------------------------------------------------------
def assert_invalid(r: Response, field: str, where: str = "body") -> None:
    """400 `{"message", "errors": [{"type", "field", "message"}]}` naming `field`."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"message", "errors"}, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["errors"] and all(set(e) == {"type", "field", "message"} for e in body["errors"]), body
    assert (where, field) in {(e["type"], e["field"]) for e in body["errors"]}, body


def assert_message(r: Response, status: int) -> None:
    """`status` with exactly `{"message": "<something>"}`."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"message"} and isinstance(body["message"], str) and body["message"], body


def failure(check: Any, *args: Any) -> str | None:
    """Run an assert_* helper; its failure as text (tables report every failing row at once)."""
    try:
        check(*args)
    except AssertionError as exc:
        return str(exc).splitlines()[0]
    return None


@contextmanager
def unchanged(db: Database) -> Iterator[None]:
    before = db_snapshot(db)
    yield
    assert db_snapshot(db) == before, "a refused request changed the database"


def basic(login: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()}


def served_operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, OpenAPI operation) of every native route the app serves."""
    app: FastAPI = client.app  # type: ignore[assignment]
    return [
        (method.upper(), path, op)
        for path, ops in app.openapi()["paths"].items()
        if path.startswith(API)
        for method, op in ops.items()
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    ]


def fill(template: str, value: str) -> str:
    """Every `{param}` of a path template replaced by `value`."""
    out, _, rest = template.partition("{")
    while rest:
        _, _, after = rest.partition("}")
        head, _, rest = after.partition("{")
        out += value + head
    return out


# -- the objects the tests aim at --------------------------------------------------------------
@dataclass
class Objects:
    t: Tenants
    refs: dict[str, str]  # placeholder -> id

    def resolve(self, value: Any) -> Any:
        """`value` with every `{placeholder}` in its strings replaced by the object's id."""
        if isinstance(value, str):
            return value.format(**self.refs)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value


@pytest.fixture
def objects(db: Database, tenants: Tenants) -> Objects:
    with db.write() as s:
        empty = groups.create(s, SYSTEM, parent_id=tenants.customer_a, name="Empty group", type_=2)
        user_a = make_user(s, "ada@example.com", (tenants.customer_a, "OBSERVER"), first_name="Ada")
        shared = make_user(
            s, "sam@example.com", (tenants.customer_a, "OBSERVER"), (tenants.customer_b, "OBSERVER"), first_name="Sam"
        )
        key_a, _ = api_users.create(
            s, SYSTEM, group_id=tenants.customer_a, name="key A", timezone="UTC", profile_ids=["OBSERVER"]
        )
        key_b, _ = api_users.create(
            s, SYSTEM, group_id=tenants.customer_b, name="key B", timezone="UTC", profile_ids=["OBSERVER"]
        )
        contract_a = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Contract A", max_tokens=10)
        profile_a = device_profiles_create(s, tenants.customer_a)
        type_a = device_types.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name="Type A"),
        )
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier="A1",
            pac="0123456789ABCDEF",
            device_type_id=type_a.device_type.id,
            fields=devices.DeviceFields(name="Device A1"),
        )
        station_a, _secret = stations.create(
            s, SYSTEM, group_id=tenants.customer_a, identifier="5A", fields=stations.StationFields(name="Station A")
        )
        callback_a = callbacks.create(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            type_a.device_type.id,
            callbacks.CallbackFields(
                channel="URL", callback_type=0, callback_subtype=2, enabled=True, url="https://example.com/hook"
            ),
        )
        ids = {
            "station_a": station_a.station.identifier,
            "callback_a": callback_a.callback.id,
            "device_a": "A1",
            "contract_a": contract_a.contract.id,
            "profile_a": profile_a,
            "device_type_a": type_a.device_type.id,
            "root": tenants.root,
            "operator": tenants.operator,
            "customer_a": tenants.customer_a,
            "site_a": tenants.site_a,
            "customer_b": tenants.customer_b,
            "empty_group": empty.id,  # an empty subgroup of Customer A
            "user_a": user_a.id,  # a person with a role in Customer A only
            "shared_user": shared.id,  # a person with roles in Customer A and Customer B
            "key_a": key_a.api_user.id,
            "key_b": key_b.api_user.id,
        }
    return Objects(tenants, {k: str(v) for k, v in ids.items()})


def device_profiles_create(session: Any, group_id: int) -> int:
    fields = device_profiles.ProfileFields(name="Profile A", region="EU868", mac_version="1.0.3")
    return device_profiles.create(session, SYSTEM, group_id=group_id, fields=fields).profile.id


def group_body(parent: str = "{customer_a}", **extra: Any) -> dict[str, Any]:
    return {"name": "New group", "description": "", "type": 2, "timezone": "UTC", "parentId": parent} | extra


def user_body(*roles: tuple[str, list[str]], **extra: Any) -> dict[str, Any]:
    grants = roles if roles else (("{customer_a}", ["OBSERVER"]),)
    return {
        "firstName": "New",
        "lastName": "Person",
        "email": "new.person@example.com",
        "userRoles": [{"groupId": g, "profileIds": p} for g, p in grants],
    } | extra


def key_body(group: str = "{customer_a}", profiles: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"groupId": group, "name": "new key", "timezone": "UTC", "profileIds": profiles or ["OBSERVER"]} | extra


# Every route that takes a body, with a body Customer A's ADMIN may send: bad variants follow.
BODY_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/groups", group_body()),
    ("PUT", "/groups/{empty_group}", {"name": "Renamed"}),
    ("POST", "/users", user_body()),
    ("PUT", "/users/{user_a}", {"firstName": "Renamed"}),
    ("POST", "/api-users", key_body()),
    ("PUT", "/api-users/{key_a}", {"name": "renamed"}),
    ("PUT", "/api-users/{key_a}/profiles", {"profileIds": ["API_ONLY"]}),
    ("POST", "/contracts", {"name": "New contract", "groupId": "{customer_a}"}),
    ("PUT", "/contracts/{contract_a}", {"name": "Renamed"}),
    ("PUT", "/contracts/{contract_a}/allocations", {"allocations": [{"groupId": "{site_a}", "maxTokens": 1}]}),
    ("POST", "/device-profiles", {"name": "New", "groupId": "{customer_a}", "region": "EU868", "macVersion": "1.0.4"}),
    ("PUT", "/device-profiles/{profile_a}", {"name": "Renamed"}),
    ("POST", "/device-types", {"name": "New type", "groupId": "{customer_a}"}),
    ("PUT", "/device-types/{device_type_a}", {"name": "Renamed"}),
    ("POST", "/devices", {"id": "BEEF", "name": "New", "pac": "0011223344556677", "deviceTypeId": "{device_type_a}"}),
    ("PUT", "/devices/{device_a}", {"name": "Renamed"}),
    ("POST", "/devices/bulk", {"deviceTypeId": "{device_type_a}", "data": [{"id": "BEEF", "pac": "0011223344556677"}]}),
    ("PUT", "/devices/bulk", {"data": [{"id": "{device_a}", "name": "Renamed"}]}),
    ("POST", "/devices/bulk/transfer", {"deviceTypeId": "{device_type_a}", "data": [{"id": "{device_a}"}]}),
    ("POST", "/devices/bulk/replace", {"data": [{"deviceId": "{device_a}", "targetDeviceId": "BEEF"}]}),
    ("POST", "/devices/bulk/unsubscribe", {"data": [{"id": "{device_a}"}]}),
    ("POST", "/devices/bulk/delete", {"data": ["{device_a}"]}),
    ("POST", "/devices/bulk/restart", {"data": ["{device_a}"]}),
    ("POST", "/devices/bulk/suspend", {"data": ["{device_a}"]}),
    ("POST", "/devices/bulk/resume", {"data": ["{device_a}"]}),
    ("PUT", "/devices/{device_a}/unsubscribe", {"unsubscriptionTime": 0}),
    ("PUT", "/users/{user_a}/profiles", {"userRoles": [{"groupId": "{customer_a}", "profileIds": ["OBSERVER"]}]}),
    ("POST", "/base-stations", {"id": "BEEF", "groupId": "{customer_a}", "name": "New station"}),
    ("PUT", "/base-stations/{station_a}", {"name": "Renamed"}),
    ("POST", "/coverages/global/predictions", {"locations": [{"lat": 45.0, "lng": 4.0}]}),
    ("POST", "/coverages/global/predictions/bulk", {"locations": [{"lat": 45.0, "lng": 4.0}]}),
    (
        "POST",
        "/device-types/{device_type_a}/callbacks",
        {"channel": "URL", "callbackType": 0, "callbackSubtype": 2, "enabled": True, "url": "https://example.com/x"},
    ),
    ("PUT", "/device-types/{device_type_a}/callbacks/{callback_a}", {"url": "https://example.com/y"}),
]


def test_body_routes_cover_every_native_write_route_with_a_body(client: TestClient) -> None:
    declared = {(m, fill(API + p, "{}")) for m, p, _ in BODY_ROUTES}
    served = {(m, fill(p, "{}")) for m, p, op in served_operations(client) if "requestBody" in op}
    assert served <= declared, f"add to BODY_ROUTES: {sorted(served - declared)}"


# -- malformed bodies ---------------------------------------------------------------------------
MALFORMED: dict[str, tuple[bytes, str]] = {
    "truncated JSON": (b'{"name": "x', "application/json"),
    "not JSON": (b"name=x&type=2", "application/json"),
    "trailing comma": (b'{"name": "x",}', "application/json"),
    "JSON array": (b'[{"name": "x"}]', "application/json"),
    "JSON string": (b'"x"', "application/json"),
    "JSON null": (b"null", "application/json"),
    "empty body": (b"", "application/json"),
    "form encoded": (b"name=x&type=2", "application/x-www-form-urlencoded"),
    "invalid UTF-8": (b'{"name": "\xff\xfe"}', "application/json"),
}


def test_malformed_or_non_object_body_is_refused_with_400_naming_the_body(
    client: TestClient, db: Database, objects: Objects
) -> None:
    problems = []
    with unchanged(db):
        for method, path, _ in BODY_ROUTES:
            url = API + objects.resolve(path)
            for name, (content, ctype) in MALFORMED.items():
                h = objects.t.a_admin.headers | {"content-type": ctype}
                r = client.request(method, url, content=content, headers=h)
                if problem := failure(assert_invalid, r, "body"):
                    problems.append(f"{method} {url} with {name}: {problem}")
    assert not problems, "\n".join(problems)


def test_malformed_body_without_a_valid_credential_answers_401_not_400(
    client: TestClient, db: Database, objects: Objects
) -> None:
    """The credential is judged before the input: a stranger learns nothing about the schema."""
    with unchanged(db):
        for method, path, _ in BODY_ROUTES:
            for headers in ({}, {"authorization": "not-a-key"}, basic(objects.refs["key_a"], "wrong")):
                for content in (b"{bad", b'{"name": "\xff"}'):
                    h = headers | {"content-type": "application/json"}
                    r = client.request(method, API + objects.resolve(path), content=content, headers=h)
                    assert (r.status_code, r.content) == (401, b""), (method, path, headers, content)
                    assert r.headers["www-authenticate"] == 'Basic realm="heron"'


# -- wrong types, values, lengths, characters -----------------------------------------------------
# (method, path, body, field): the body is refused with 400 naming `field`, and nothing changes.
Case = tuple[str, str, Any, str]
X101, X301 = "x" * 101, "x" * 301
WRONG_TYPES: list[Case] = [
    ("POST", "/groups", group_body(name=123), "name"),
    ("POST", "/groups", group_body(type="two"), "type"),
    ("POST", "/groups", group_body(type=2.5), "type"),
    ("POST", "/groups", group_body(type=[2]), "type"),
    ("POST", "/groups", group_body(parentId=3), "parentId"),
    ("POST", "/groups", group_body("abc"), "parentId"),
    ("POST", "/groups", group_body("-3"), "parentId"),
    ("POST", "/groups", group_body(description=None), "description"),
    ("POST", "/groups", group_body(type=3), "type"),
    ("POST", "/groups", group_body(name="ab"), "name"),
    ("POST", "/groups", group_body(name="  x  "), "name"),
    ("POST", "/groups", group_body(timezone="Mars/Base"), "timezone"),
    ("POST", "/groups", {"name": "No parent", "description": "", "type": 2, "timezone": "UTC"}, "parentId"),
    ("PUT", "/groups/{empty_group}", {"type": "x"}, "type"),
    ("PUT", "/groups/{empty_group}", {"parentId": 5}, "parentId"),
    ("PUT", "/groups/{empty_group}", {"parentId": "x5"}, "parentId"),
    ("POST", "/api-users", key_body() | {"profileIds": "OBSERVER"}, "profileIds"),
    ("POST", "/api-users", key_body() | {"profileIds": []}, "profileIds"),
    ("POST", "/api-users", key_body(profiles=[1]), "profileIds[0]"),
    ("POST", "/api-users", key_body(profiles=["ROOT"]), "profileIds"),
    ("POST", "/api-users", key_body("g1"), "groupId"),
    ("POST", "/api-users", key_body(name="   "), "name"),
    ("POST", "/api-users", key_body(timezone="UTC+2"), "timezone"),
    ("PUT", "/api-users/{key_a}", {"profileIds": []}, "profileIds"),
    ("PUT", "/api-users/{key_a}/profiles", {"profileIds": ["NOPE"]}, "profileIds"),
    ("POST", "/users", user_body(email="nope"), "email"),
    ("POST", "/users", user_body() | {"userRoles": {}}, "userRoles"),
    ("POST", "/users", user_body() | {"userRoles": []}, "userRoles"),
    ("POST", "/users", user_body(("{customer_a}", [])), "userRoles[0]"),
    ("POST", "/users", user_body(("abc", ["OBSERVER"])), "userRoles[0].groupId"),
    ("POST", "/users", user_body(firstName=""), "firstName"),
    ("PUT", "/users/{user_a}", {"locked": "maybe"}, "locked"),
    ("PUT", "/users/{user_a}", {"timezone": "Nowhere"}, "timezone"),
    # device actions: unsubscribe, bulk restart/suspend/resume, users' profiles
    ("PUT", "/devices/{device_a}/unsubscribe", {}, "unsubscriptionTime"),
    ("PUT", "/devices/{device_a}/unsubscribe", {"unsubscriptionTime": "soon"}, "unsubscriptionTime"),
    ("PUT", "/devices/{device_a}/unsubscribe", {"unsubscriptionTime": -1}, "unsubscriptionTime"),
    ("POST", "/devices/bulk/restart", {"data": "{device_a}"}, "data"),
    ("POST", "/devices/bulk/suspend", {"data": []}, "data"),
    ("PUT", "/users/{user_a}/profiles", {"userRoles": []}, "userRoles"),
    ("PUT", "/users/{user_a}/profiles", {"userRoles": [{"groupId": "x", "profileId": "OBS"}]}, "userRoles[0].groupId"),
    ("PUT", "/users/{user_a}/profiles", {"userRoles": [{"groupId": "{customer_a}", "profileId": "X"}]}, "profileIds"),
]
OVER_LONG: list[Case] = [
    ("POST", "/groups", group_body(name=X101), "name"),
    ("POST", "/groups", group_body(description=X301), "description"),
    ("POST", "/groups", group_body(timezone="x" * 65), "timezone"),
    ("POST", "/groups", group_body("1" * 21), "parentId"),
    ("PUT", "/groups/{empty_group}", {"name": X101}, "name"),
    ("PUT", "/groups/{empty_group}", {"description": X301}, "description"),
    ("POST", "/api-users", key_body(name=X101), "name"),
    ("POST", "/api-users", key_body(timezone="x" * 65), "timezone"),
    ("POST", "/api-users", key_body("1" * 21), "groupId"),
    ("POST", "/api-users", key_body(profiles=["x" * 33]), "profileIds[0]"),
    ("POST", "/api-users", key_body(profiles=["OBSERVER"] * 21), "profileIds"),
    ("PUT", "/api-users/{key_a}", {"name": X101}, "name"),
    ("POST", "/users", user_body(firstName=X101), "firstName"),
    ("POST", "/users", user_body(lastName=X101), "lastName"),
    ("POST", "/users", user_body(email="x" * 240 + "@example.com"), "email"),
    ("POST", "/users", user_body(position=X101), "position"),
    ("POST", "/users", user_body(password="x" * 257), "password"),
    ("POST", "/users", user_body(("1" * 21, ["OBSERVER"])), "userRoles[0].groupId"),
    ("PUT", "/users/{user_a}", {"lastName": X101}, "lastName"),
]
NUL: list[Case] = [
    ("POST", "/groups", group_body(name="bad\x00name"), "name"),
    ("PUT", "/groups/{empty_group}", {"description": "\x00"}, "description"),
    ("POST", "/api-users", key_body(name="key\x00"), "name"),
    ("POST", "/users", user_body(firstName="A\x00"), "firstName"),
    ("POST", "/users", user_body(email="a\x00@b.co"), "email"),
    ("PUT", "/users/{user_a}", {"position": "\x00"}, "position"),
]
# (query, field): refused with 400 naming the query field.
QUERY_CASES: list[tuple[str, str]] = [
    ("/groups?name=" + X101, "name"),
    ("/users?text=" + X101, "text"),
    ("/users?profileId=" + "x" * 33, "profileId"),
    ("/api-users?profileId=" + "x" * 33, "profileId"),
    ("/profiles?groupId=" + "1" * 21, "groupId"),
    ("/audit-events?objectType=" + "x" * 41, "objectType"),
    ("/audit-events?objectId=" + "x" * 65, "objectId"),
    ("/groups?name=%00", "name"),
    ("/users?text=a%00", "text"),
    ("/users?profileId=%00", "profileId"),
    ("/api-users?profileId=%00", "profileId"),
    ("/audit-events?objectType=%00", "objectType"),
    ("/audit-events?objectId=%00", "objectId"),
    ("/groups?deep=maybe", "deep"),
    ("/groups?withTotal=perhaps", "withTotal"),
    ("/groups?parentIds=1,x", "parentIds"),
    ("/groups?types=two", "types"),
    ("/users?groupIds=-1", "groupIds"),
    ("/api-users?groupIds=1.0", "groupIds"),
    ("/audit-events?since=yesterday", "since"),
    ("/audit-events?since=99999999999999999999", "since"),
    ("/audit-events?before=-1", "before"),
    # device queries (registry/device_queries.py)
    ("/devices?comState=6", "comState"),
    ("/devices?tokenState=VALID", "tokenState"),
    ("/devices?lastSeenFrom=today", "lastSeenFrom"),
    ("/devices?lastSeenTo=%00", "lastSeenTo"),
    ("/devices?pageId=not-a-token", "pageId"),
    ("/devices?contractId=x", "contractId"),
    ("/devices/export?columns=pac", "columns"),
    ("/devices/export?comState=x", "comState"),
    ("/contract-infos/1/devices?pageId=not-a-token", "pageId"),
    # message lists (api/v2/messages.py): offset honoured, so refused when bad
    ("/devices/1/messages?offset=-1", "offset"),
    ("/devices/1/messages?offset=x", "offset"),
    ("/device-types/1/messages?offset=1.5", "offset"),
    # service prediction (api/v2/coverages.py; more in tests/api/test_coverages.py)
    ("/coverages/global/predictions?lat=91&lng=4", "lat"),
    ("/coverages/operators/redundancy?lat=45&lng=4&deviceClassId=4", "deviceClassId"),
    ("/coverages/global/grid?bbox=4,45,3,44&step=0.1", "bbox"),
    ("/coverages/global/grid?bbox=3,44,4,45&step=0", "step"),
    # a device's computed locations (api/v2/locations.py)
    ("/devices/1/locations?since=x", "since"),
    ("/devices/1/locations?before=-1", "before"),
    ("/devices/1/locations?limit=0", "limit"),
    ("/devices/1/locations?limit=101", "limit"),
    ("/devices/1/locations?offset=-1", "offset"),
    ("/devices/1/locations?offset=x", "offset"),
    ("/devices/1/locations?oob=maybe", "oob"),
    # device certificates (api/v2/devices.py)
    ("/devices/1/product-certificate", "pac"),
    ("/devices/1/product-certificate?pac=12", "pac"),
]


def _refuse_all(client: TestClient, objects: Objects, cases: list[Case]) -> list[str]:
    problems = []
    for method, path, body, field in cases:
        url = API + objects.resolve(path)
        r = client.request(method, url, json=objects.resolve(body), headers=objects.t.a_admin.headers)
        if problem := failure(assert_invalid, r, field):
            problems.append(f"{method} {url} expecting {field}: {problem}")
    return problems


@pytest.mark.parametrize(
    "cases", [WRONG_TYPES, OVER_LONG, NUL], ids=["wrong types or values", "over-long strings", "NUL characters"]
)
def test_bad_field_is_refused_with_400_naming_the_field_and_changes_nothing(
    client: TestClient, db: Database, objects: Objects, cases: list[Case]
) -> None:
    """NUL cannot be stored in PostgreSQL text (it was a 500 there, and silently stored on SQLite)."""
    with unchanged(db):
        problems = _refuse_all(client, objects, cases)
    assert not problems, "\n".join(problems)


def test_bad_query_parameter_is_refused_with_400_naming_the_field(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    with unchanged(db):
        problems = []
        for query, field in QUERY_CASES:
            r = client.get(API + query, headers=tenants.root_admin.headers)
            if problem := failure(assert_invalid, r, field, "query"):
                problems.append(f"{query}: {problem}")
    assert not problems, "\n".join(problems)


def test_strings_at_the_length_limit_are_stored_whole_even_when_not_ascii(
    client: TestClient, db: Database, objects: Objects
) -> None:
    h, name = objects.t.a_admin.headers, "é" * 99 + "😀"
    body = objects.resolve(group_body(name=name, description="ß" * 300))
    assert client.post(f"{API}/groups", json=body, headers=h).status_code == 201
    r = client.post(f"{API}/api-users", json=objects.resolve(key_body(name=name)), headers=h)
    assert r.status_code == 201, r.text
    with db.read() as s:
        assert s.scalar(select(Group.description).where(Group.name == name)) == "ß" * 300
        assert s.scalar(select(func.count()).select_from(ApiUser).where(ApiUser.name == name)) == 1


# -- fields no schema knows, and Sigfox fields Heron ignores ---------------------------------------
def test_fields_no_schema_knows_are_refused_with_400_naming_each(
    client: TestClient, db: Database, objects: Objects
) -> None:
    h = objects.t.a_admin.headers
    with unchanged(db):
        for method, path, body in BODY_ROUTES:
            r = client.request(
                method,
                API + objects.resolve(path),
                json=objects.resolve(body) | {"colour": "red", "owner": 1},
                headers=h,
            )
            assert_invalid(r, "colour")
            assert_invalid(r, "owner")
        nested = objects.resolve(user_body())
        nested["userRoles"][0]["admin"] = True
        assert_invalid(client.post(f"{API}/users", json=nested, headers=h), "userRoles[0].admin")
        # The snake_case spelling of a known field is not its wire name.
        snake = objects.resolve(group_body(parent_id="{customer_a}"))
        assert_invalid(client.post(f"{API}/groups", json=snake, headers=h), "parent_id")


SIGFOX_EXTRAS = {
    "fields": "id,name",
    "billable": True,
    "technicalEmail": "ops@example.com",
    "sendWelcomeEmail": False,
    "networkOperatorId": "5",
    "clientName": "ACME",
    "geolocPayloadConfigId": "x",
}


def test_sigfox_fields_heron_does_not_implement_are_accepted_and_ignored(
    client: TestClient, db: Database, objects: Objects
) -> None:
    h = objects.t.a_admin.headers
    plain = client.post(f"{API}/groups", json=objects.resolve(group_body(name="Plain")), headers=h)
    extra = client.post(f"{API}/groups", json=objects.resolve(group_body(name="Extra")) | SIGFOX_EXTRAS, headers=h)
    assert plain.status_code == extra.status_code == 201, extra.text
    got = [client.get(f"{API}/groups/{r.json()['id']}", headers=h).json() for r in (plain, extra)]
    volatile = {"id", "name", "nameCI", "creationTime"}
    assert {k: v for k, v in got[0].items() if k not in volatile} == {
        k: v for k, v in got[1].items() if k not in volatile
    }
    for path, body in (("/users", user_body()), ("/api-users", key_body())):
        r = client.post(API + path, json=objects.resolve(body) | SIGFOX_EXTRAS, headers=h)
        assert r.status_code == 201, (path, r.text)
    assert set(r.json()) == {"id", "accessToken"}
    for method, path, body in BODY_ROUTES:
        if method == "PUT":
            who = objects.t.root_admin.headers if path.startswith("/base-stations") else h  # the operator's
            r = client.put(API + objects.resolve(path), json=objects.resolve(body) | SIGFOX_EXTRAS, headers=who)
            # 201: a job; 409: device A1 holds no token to unsubscribe (the body was taken)
            expected = {"/devices/bulk": 201, "/devices/{device_a}/unsubscribe": 409}.get(path, 204)
            assert r.status_code == expected, (path, r.text)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.email == "new.person@example.com")) == 1
    for path in (f"/groups/{extra.json()['id']}", "/users", "/api-users"):
        text = client.get(API + path, headers=h).text
        assert not [f for f in SIGFOX_EXTRAS if f'"{f}"' in text], (path, text)


# -- the group tree -------------------------------------------------------------------------------
def test_group_cannot_move_under_itself_or_its_own_subgroup(client: TestClient, db: Database, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    body = group_body(str(tenants.site_a), name="Deep child")
    deep = client.post(f"{API}/groups", json=body, headers=h).json()["id"]
    with unchanged(db):
        for group, new_parent in [
            (tenants.site_a, deep),
            (tenants.site_a, tenants.site_a),
            (tenants.customer_a, deep),
            (tenants.customer_a, tenants.site_a),
        ]:
            r = client.put(f"{API}/groups/{group}", json={"parentId": str(new_parent), "name": "Moved"}, headers=h)
            assert_invalid(r, "parentId")
        root = tenants.root_admin.headers
        r = client.put(f"{API}/groups/{tenants.root}", json={"parentId": str(tenants.operator)}, headers=root)
        assert_invalid(r, "parentId")


def test_group_cannot_move_into_a_group_the_caller_does_not_administer(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    with unchanged(db):
        for parent in (tenants.customer_b, tenants.operator, tenants.root, 999999):
            body = {"parentId": str(parent)}
            assert_invalid(
                client.put(f"{API}/groups/{tenants.site_a}", json=body, headers=tenants.a_admin.headers), "parentId"
            )
        body = {"parentId": str(tenants.customer_a)}
        assert_message(client.put(f"{API}/groups/{tenants.site_a}", json=body, headers=tenants.a_reader.headers), 403)


@pytest.mark.parametrize("content", ["subgroup", "API user", "user role"])
def test_deleting_a_non_empty_group_answers_409_and_deletes_nothing(
    client: TestClient, db: Database, tenants: Tenants, content: str
) -> None:
    h = tenants.a_admin.headers
    gid = client.post(f"{API}/groups", json=group_body(str(tenants.customer_a), name="Holder"), headers=h).json()["id"]
    path, body = {
        "subgroup": ("/groups", group_body(gid, name="Inner")),
        "API user": ("/api-users", key_body(gid)),
        "user role": ("/users", user_body((gid, ["OBSERVER"]))),
    }[content]
    assert client.post(API + path, json=body, headers=h).status_code == 201
    with unchanged(db):
        r = client.delete(f"{API}/groups/{gid}", headers=h)
        assert_message(r, 409)
        assert content.lower() in r.json()["message"].lower()


def test_root_and_own_top_group_cannot_be_deleted(client: TestClient, db: Database, tenants: Tenants) -> None:
    with unchanged(db):
        assert_message(client.delete(f"{API}/groups/{tenants.root}", headers=tenants.root_admin.headers), 409)
        # Customer A's admin sees its own group but holds no right on the operator above it.
        assert_message(client.delete(f"{API}/groups/{tenants.customer_a}", headers=tenants.a_admin.headers), 403)


def test_duplicate_email_answers_409_and_creates_nothing(client: TestClient, db: Database, objects: Objects) -> None:
    body = objects.resolve(user_body(email="ADA@example.com"))
    with unchanged(db):
        assert_message(client.post(f"{API}/users", json=body, headers=objects.t.a_admin.headers), 409)


# -- revoked and renewed secrets ------------------------------------------------------------------
def _new_key(client: TestClient, admin: Credential, group: int) -> tuple[str, str]:
    r = client.post(f"{API}/api-users", json=key_body(str(group), ["ADMIN"]), headers=admin.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["accessToken"]


def _refused(client: TestClient, key_id: str, secret: str) -> None:
    for headers in ({"authorization": secret}, basic(key_id, secret)):
        r = client.get(f"{API}/groups", headers=headers)
        assert (r.status_code, r.content) == (401, b""), headers
        assert r.headers["www-authenticate"] == 'Basic realm="heron"'


@pytest.mark.parametrize("revoker", ["administrator", "the key itself"])
def test_revoked_secret_is_refused_on_the_very_next_request(
    client: TestClient, db: Database, tenants: Tenants, revoker: str
) -> None:
    key_id, secret = _new_key(client, tenants.a_admin, tenants.customer_a)
    for headers in ({"authorization": secret}, basic(key_id, secret)):
        assert client.get(f"{API}/groups", headers=headers).status_code == 200
    by = tenants.a_admin.headers if revoker == "administrator" else {"authorization": secret}
    assert client.delete(f"{API}/api-users/{key_id}", headers=by).status_code == 204
    _refused(client, key_id, secret)
    with unchanged(db):
        r = client.delete(f"{API}/api-users/{tenants.a_reader.id}", headers={"authorization": secret})
        assert r.status_code == 401


@pytest.mark.parametrize("renewer", ["administrator", "the key itself"])
def test_renewed_away_secret_is_refused_on_the_very_next_request(
    client: TestClient, db: Database, tenants: Tenants, renewer: str
) -> None:
    key_id, old = _new_key(client, tenants.a_admin, tenants.customer_a)
    by = tenants.a_admin.headers if renewer == "administrator" else {"authorization": old}
    r = client.put(f"{API}/api-users/{key_id}/renew-credential", headers=by)
    assert r.status_code == 200, r.text
    new = r.json()["accessToken"]
    assert set(r.json()) == {"accessToken"} and new != old
    _refused(client, key_id, old)
    with unchanged(db):
        r = client.put(f"{API}/api-users/{key_id}/renew-credential", headers={"authorization": old})
        assert r.status_code == 401
    for headers in ({"authorization": new}, basic(key_id, new)):
        assert client.get(f"{API}/api-users/{key_id}", headers=headers).status_code == 200


# -- no escalation --------------------------------------------------------------------------------
# Callers as "group:PROFILE" (made with make_credential), and what they try:
# label -> (caller, method, path, body, expected), `expected` being either the status answered with
# `{"message"}` or the field a 400 names.
LIMITED = "customer_a:LIMITED_ADMIN"
DEV_W = "customer_a:DEVICE_MANAGER_W"
ADMIN_A = "customer_a:ADMIN"
ADMIN_SITE = "site_a:ADMIN"
ADMIN_KEY = key_body(profiles=["ADMIN"])
ADMIN_USER = user_body(("{customer_a}", ["ADMIN"]))
VALID_THEN_SIBLING = user_body(("{customer_a}", ["OBSERVER"]), ("{customer_b}", ["ADMIN"]))
OPERATOR_ROLE = {"userRoles": [{"groupId": "{operator}", "profileIds": ["ADMIN"]}]}
ADMIN_PROFILE = {"profileIds": ["ADMIN"]}
UNKNOWN_PROFILE = key_body(profiles=["ADMIN", "ROOT"])
ROLE0, ROLE1 = "userRoles[0].groupId", "userRoles[1].groupId"
ESCALATIONS: dict[str, tuple[str, str, str, dict[str, Any] | None, int | str]] = {
    "limited admin creates an ADMIN key": (LIMITED, "POST", "/api-users", ADMIN_KEY, 403),
    "limited admin creates an OBSERVER key": (LIMITED, "POST", "/api-users", key_body(), 403),
    "limited admin creates an ADMIN user": (LIMITED, "POST", "/users", ADMIN_USER, 403),
    "limited admin adds ADMIN to a key": (LIMITED, "PUT", "/api-users/{key_a}/profiles", ADMIN_PROFILE, 404),
    "device manager creates an ADMIN key": (DEV_W, "POST", "/api-users", ADMIN_KEY, 403),
    "device manager creates an ADMIN user": (DEV_W, "POST", "/users", ADMIN_USER, 403),
    "device manager creates a group": (DEV_W, "POST", "/groups", group_body(), 403),
    "admin creates a key in the sibling": (ADMIN_A, "POST", "/api-users", key_body("{customer_b}"), "groupId"),
    "admin creates a key in the operator": (ADMIN_A, "POST", "/api-users", key_body("{operator}"), "groupId"),
    "admin creates a key in the root": (ADMIN_A, "POST", "/api-users", key_body("{root}"), "groupId"),
    "admin creates a user in the sibling": (ADMIN_A, "POST", "/users", user_body(("{customer_b}", ["ADMIN"])), ROLE0),
    "admin creates a user in the operator": (ADMIN_A, "POST", "/users", user_body(("{operator}", ["ADMIN"])), ROLE0),
    "admin adds a sibling role after a valid one": (ADMIN_A, "POST", "/users", VALID_THEN_SIBLING, ROLE1),
    "admin creates a group under the operator": (ADMIN_A, "POST", "/groups", group_body("{operator}"), "parentId"),
    "admin gives its user a role on the operator": (ADMIN_A, "PUT", "/users/{user_a}", OPERATOR_ROLE, ROLE0),
    "admin renames a person also in the sibling": (ADMIN_A, "PUT", "/users/{shared_user}", {"firstName": "Mine"}, 403),
    "admin deletes a person also in the sibling": (ADMIN_A, "DELETE", "/users/{shared_user}", None, 403),
    "admin renews the sibling's key": (ADMIN_A, "PUT", "/api-users/{key_b}/renew-credential", None, 404),
    "admin grants an unknown profile": (ADMIN_A, "POST", "/api-users", UNKNOWN_PROFILE, "profileIds"),
    "site admin creates a key in its customer": (ADMIN_SITE, "POST", "/api-users", ADMIN_KEY, "groupId"),
    "site admin creates a user in its customer": (ADMIN_SITE, "POST", "/users", user_body(), ROLE0),
}


def test_caller_cannot_grant_more_than_it_holds_nor_outside_its_groups(
    client: TestClient, db: Database, objects: Objects
) -> None:
    """LIMITED_ADMIN and DEVICE_MANAGER_W cannot create keys or users at all; an ADMIN cannot
    create them in a sibling or parent group, nor touch a person who also works elsewhere."""
    callers: dict[str, Credential] = {}
    problems = []
    for label, (caller, method, path, body, expected) in ESCALATIONS.items():
        if caller not in callers:
            group, _, profiles = caller.partition(":")
            callers[caller] = make_credential(db, int(objects.refs[group]), *profiles.split(","))
        with unchanged(db):
            url, headers = API + objects.resolve(path), callers[caller].headers
            r = client.request(method, url, json=objects.resolve(body), headers=headers)
        if isinstance(expected, int):
            problem = failure(assert_message, r, expected)
        else:
            problem = failure(assert_invalid, r, expected)
        if problem:
            problems.append(f"{label}: {problem}")
    assert not problems, "\n".join(problems)


def test_refused_creations_leave_no_row_behind(client: TestClient, db: Database, objects: Objects) -> None:
    """Counting rows directly, on top of the snapshots: a half-done create would show here."""
    with db.read() as s:
        before = [s.scalar(select(func.count()).select_from(m)) for m in (Group, User, ApiUser)]
    h = objects.t.a_admin.headers
    for path, body in [
        ("/users", user_body(("{customer_a}", ["OBSERVER"]), ("{customer_b}", ["OBSERVER"]))),
        ("/users", user_body(("{customer_a}", ["OBSERVER"]), ("{customer_a}", ["NOPE"]))),
        ("/api-users", key_body(profiles=["OBSERVER", "NOPE"])),
        ("/groups", group_body(type=42)),
    ]:
        assert client.post(API + path, json=objects.resolve(body), headers=h).status_code == 400
    with db.read() as s:
        assert [s.scalar(select(func.count()).select_from(m)) for m in (Group, User, ApiUser)] == before


# -- routing, ids and paging on every route ------------------------------------------------------
BAD_BODIES: list[bytes] = [b"{bad", b"[]", b'{"unknown": 1}', b"{}", b'{"name": null, "profileIds": "x"}']
BAD_QUERY = "limit=abc&offset=-1&deep=maybe&withTotal=perhaps&since=x&parentIds=y&groupIds=z&groupId=w"


def test_no_answer_on_any_route_carries_a_framework_body_422_or_500(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    """A battery of bad requests on every native route, with and without a credential."""
    problems: list[str] = []
    with unchanged(db):
        for method, template, _ in served_operations(client):
            for ident in ("abc", "0", "1" * 19):
                path = fill(template, ident)
                for content in BAD_BODIES if method in ("POST", "PUT", "PATCH") else [b""]:
                    for headers in (tenants.a_admin.headers, {}):
                        h = headers | {"content-type": "application/json"}
                        r = client.request(method, f"{path}?{BAD_QUERY}", content=content, headers=h)
                        body = r.json() if r.content else {}
                        if r.status_code in (422, 500) or r.status_code >= 500 or "detail" in body:
                            problems.append(f"{method} {path} {content!r}: {r.status_code} {r.text[:200]}")
                        elif not headers and r.status_code != 401:
                            problems.append(f"{method} {path} without credential: {r.status_code}")
                        elif headers and r.status_code not in (400, 404):
                            problems.append(f"{method} {path} {content!r}: unexpected {r.status_code}")
    assert not problems, "\n".join(problems)


WRONG_METHODS: list[tuple[str, str, list[str]]] = [
    ("DELETE", "/groups", ["GET", "POST"]),
    ("PUT", "/groups/", ["GET", "POST"]),
    ("PATCH", "/groups/1", ["GET", "PUT", "DELETE"]),
    ("POST", "/groups/1/", ["GET", "PUT", "DELETE"]),
    ("POST", "/profiles/ADMIN", ["GET"]),
    ("GET", "/api-users/1/renew-credential", ["PUT"]),
    ("POST", "/api-users/1/profiles", ["PUT"]),
    ("GET", "/api-users/1/profiles/ADMIN", ["DELETE"]),
    ("DELETE", "/audit-events", ["GET"]),
]


def test_wrong_method_answers_405_naming_every_allowed_method(client: TestClient, tenants: Tenants) -> None:
    for method, path, allowed in WRONG_METHODS:
        for headers in (tenants.a_admin.headers, {}):
            r = client.request(method, API + path, headers=headers, json={})
            assert r.status_code == 405, (method, path, r.text)
            body = r.json()
            assert set(body) == {"message", "allowedMethods"} and body["message"], body
            assert body["allowedMethods"] == allowed, (method, path, body)
            assert sorted(m.strip() for m in r.headers["allow"].split(",")) == sorted(allowed)


def test_unknown_path_answers_404_message(client: TestClient, tenants: Tenants) -> None:
    for path in ["/api/v2/nope", "/api/v2/groups/1/nope", "/api/v2", "/api/v2/api-users/1/profile", "/api/v3/x", "/x"]:
        for headers in (tenants.a_admin.headers, {}):
            assert_message(client.get(path, headers=headers), 404)


INVALID_IDS = ["abc", "-1", "1.5", "0x10", "1e3", " 1", "١٢", "1" * 19, "%00"]


def test_invalid_ids_in_paths_answer_400_naming_the_field(client: TestClient, db: Database, tenants: Tenants) -> None:
    problems: list[str] = []
    with unchanged(db):
        for method, template, op in served_operations(client):
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            # Profile ids are names (ADMIN), device ids hex (tested below), job ids 16 hex digits
            # (tests/registry/test_bulk_jobs.py), series operations names: not numbers.
            ids = [n for n in params if n not in ("profile_id", "device_id", "station_id", "job_id", "operation")]
            for bad in INVALID_IDS if ids else []:
                path = template
                for name in params:
                    path = path.replace("{" + name + "}", bad if name in ids else "ADMIN")
                body = {"profileIds": ["OBSERVER"]} if template.endswith("/profiles") else {}
                if template.startswith(API + "/users/") and template.endswith("/profiles"):  # a user's roles
                    body = {"userRoles": [{"groupId": "1", "profileId": "OBSERVER"}]}
                r = client.request(method, path, json=body, headers=tenants.root_admin.headers)
                if problem := failure(assert_invalid, r, "id", "path"):
                    problems.append(f"{method} {path}: {problem}")
    assert not problems, "\n".join(problems)


INVALID_DEVICE_IDS = ["xyz", "-1", "1.5", "0x10", " 1", "١٢", "123456789", "1" * 15, "1" * 17, "%00", "A%20B"]


def test_invalid_device_ids_in_paths_answer_400_naming_the_field(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    problems: list[str] = []
    with unchanged(db):
        for method, template, _ in served_operations(client):
            # Device and base-station ids are hex (1 to 8 digits); DevEUIs 16.
            name = next((n for n in ("{device_id}", "{station_id}") if n in template), None)
            if name is None:
                continue
            for bad in INVALID_DEVICE_IDS:
                r = client.request(method, template.replace(name, bad), json={}, headers=tenants.root_admin.headers)
                if problem := failure(assert_invalid, r, "id", "path"):
                    problems.append(f"{method} {template} {bad!r}: {problem}")
    assert not problems, "\n".join(problems)


def test_unknown_profile_in_path_answers_404(client: TestClient, objects: Objects) -> None:
    h = objects.t.a_admin.headers
    assert_message(client.get(f"{API}/profiles/SUPERUSER", headers=h), 404)
    assert_message(client.delete(API + objects.resolve("/api-users/{key_a}/profiles/ADMIN"), headers=h), 404)


def test_ids_beyond_the_database_integer_range_are_invalid_on_every_database(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    h, big = tenants.root_admin.headers, str(2**31)
    with unchanged(db):
        for path in (f"/groups/{big}", f"/users/{big}", f"/api-users/{big}"):
            assert_invalid(client.get(API + path, headers=h), "id", "path")
        assert_invalid(client.get(f"{API}/groups?parentIds={big}", headers=h), "parentIds", "query")
        assert_invalid(client.get(f"{API}/groups?types={big}", headers=h), "types", "query")
        assert_invalid(client.post(f"{API}/groups", json=group_body(big), headers=h), "parentId")
    assert client.get(f"{API}/groups/{2**31 - 1}", headers=h).status_code == 404


def _paged_routes(client: TestClient) -> list[str]:
    """Every GET route declaring `limit` and `offset`, path parameters filled with a real-looking id."""
    out = []
    for method, template, op in served_operations(client):
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if method == "GET" and {"limit", "offset"} <= names:
            out.append(fill(template, "1"))
    return out


PAGING_CASES = [
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=-5", "limit"),
    ("limit=ten", "limit"),
    ("limit=", "limit"),
    ("offset=-1", "offset"),
    ("offset=1.5", "offset"),
    (f"offset={MAX_OFFSET + 1}", "offset"),
    ("offset=9223372036854775808", "offset"),
    ("offset=1" + "0" * 30, "offset"),
]


def test_paging_parameters_out_of_range_answer_400_naming_the_query_field(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    routes = _paged_routes(client)
    assert len(routes) >= 5, routes
    problems = []
    with unchanged(db):
        for path in routes:
            for query, field in PAGING_CASES:
                r = client.get(f"{path}?{query}", headers=tenants.root_admin.headers)
                if problem := failure(assert_invalid, r, field, "query"):
                    problems.append(f"{path}?{query}: {problem}")
            for query in ("limit=1", "limit=100", "offset=0", f"offset={MAX_OFFSET}"):
                r = client.get(f"{path}?{query}", headers=tenants.root_admin.headers)
                # Valid paging is never refused; a path naming object 1 may find none (404).
                missing = r.status_code == 404 and path.count("/1") > 0 and "/groups/1/" not in path
                if r.status_code != 200 and not missing:
                    problems.append(f"{path}?{query}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)


def test_put_null_unsets_optional_fields_and_is_refused_for_required_ones(
    client: TestClient, db: Database, tenants: Tenants
) -> None:
    h = tenants.a_admin.headers
    r = client.put(f"{API}/groups/{tenants.site_a}", json={"description": "kept"}, headers=h)
    assert r.status_code == 204
    r = client.put(f"{API}/groups/{tenants.site_a}", json={"description": None}, headers=h)
    assert r.status_code == 204
    assert client.get(f"{API}/groups/{tenants.site_a}", headers=h).json()["description"] == ""
    with unchanged(db):
        assert_invalid(client.put(f"{API}/groups/{tenants.site_a}", json={"name": None}, headers=h), "name")
        assert_invalid(
            client.put(f"{API}/api-users/{tenants.a_reader.id}", json={"timezone": None}, headers=h), "timezone"
        )
