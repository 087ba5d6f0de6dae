"""Null and wrong JSON types in request bodies, swept over every field of every body the app
declares in its own OpenAPI document (native /api/v2, Senet /rest/integration, the station
ingest), so that a new route or field is covered without touching this file.

- `null` on a create (POST) body behaves as the field absent, or is refused with 400 naming it.
  On an update (PUT) it may unset the field (2xx), behave as absent, or be refused naming it.
- A value of the wrong JSON type (a string for a number, a boolean for an integer, a number for a
  string, an object for a list...) is refused with 400 naming the field.
- Never a 5xx.

Each route starts from a valid body (`BODY_ROUTES` of test_bad_input.py for the native API, the
tables below for the others); nested objects of that body (`userRoles[0]`, `receptions[0]`...)
are swept too."""

from __future__ import annotations

import base64
import copy
import itertools
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from heron.config import Settings
from heron.db.engine import Database
from heron.network.sigfox import stations
from heron.tenancy.access import SYSTEM
from tests.api.test_bad_input import API, BODY_ROUTES, Objects, fill
from tests.api.test_bad_input import objects as objects_fixture  # noqa: F401 (a fixture)
from tests.conftest import Tenants

SENET = "/rest/integration/device"
INGEST = "/ingest/sigfox"
APP_EUI = "00000000000100E0"
SENET_ROW = {"devEui": "0A00000012000001"}

RECEPTION = {"device": "A1", "seqNumber": 1, "data": "01", "time": 1_700_000_000_000, "rssi": -120.0}

# The routes outside /api/v2 with a body: (method, path template, query, valid body).
OTHER_ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("POST", SENET + "/register", f"appEui={APP_EUI}&token=000000", {"data": [SENET_ROW]}),
    ("POST", SENET + "/activate", f"appEui={APP_EUI}", {"data": [SENET_ROW]}),
    ("POST", SENET + "/deactivate", f"appEui={APP_EUI}", {"data": [SENET_ROW]}),
    ("POST", SENET + "/update", f"appEui={APP_EUI}", {"data": [SENET_ROW]}),
    (
        "POST",
        INGEST,
        "",
        {"receptions": [RECEPTION]},
    ),
    ("POST", INGEST + "/downlinks/{downlink_id}/report", "", {"emitted": True}),
]

# Values of another JSON type than the schema's, by the schema's type.
WRONG: dict[str, list[Any]] = {
    "string": [7, True],
    "integer": ["1", True, 1.5],
    "number": ["1.5", True],
    "boolean": ["true", 1],
    "array": [{}, "x"],
    "object": [[], "x"],
}


# -- the schema, read from the app's own document -------------------------------------------------
def _deref(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def _non_null(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its `null` alternative (`X | None` is `anyOf: [X, null]`)."""
    schema = _deref(doc, schema)
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return _deref(doc, options[0])
    return schema


@dataclass(frozen=True)
class Field:
    path: tuple[str | int, ...]  # from the body's root: ("userRoles", 0, "groupId")
    schema: dict[str, Any]  # without its null alternative

    @property
    def name(self) -> str:
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else p
        return out


def fields_of(
    doc: dict[str, Any], schema: dict[str, Any], body: Any, prefix: tuple[str | int, ...] = ()
) -> list[Field]:
    """Every property of `schema`, and those of the objects `body` holds at each (a list's
    first item), so that nested objects are swept from a valid value."""
    schema = _non_null(doc, schema)
    out = []
    for name, prop in schema.get("properties", {}).items():
        sub = _non_null(doc, prop)
        out.append(Field((*prefix, name), sub))
        value = body.get(name) if isinstance(body, dict) else None
        if sub.get("type") == "object" or "properties" in sub:
            if isinstance(value, dict):
                out += fields_of(doc, sub, value, (*prefix, name))
        elif sub.get("type") == "array" and isinstance(value, list) and value and isinstance(value[0], dict):
            out += fields_of(doc, sub.get("items", {}), value[0], (*prefix, name, 0))
    return out


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: Any, *, absent: bool = False) -> Any:
    out = copy.deepcopy(body)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    if absent:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


def body_operations(app: FastAPI) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path template) -> request body schema of every served operation with one."""
    doc = app.openapi()
    out = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                out[(method.upper(), path)] = content["application/json"]["schema"]
    return out


# -- the world ----------------------------------------------------------------------------------
@dataclass
class Route:
    method: str
    template: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    family: str  # native, senet, ingest


_serial = itertools.count(1)


def fresh(route: Route, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with the values a create must not repeat made new (names, e-mails, hex ids), so
    that a variant is not refused as a duplicate of the one before it."""
    if route.method != "POST" or route.family != "native" or "/bulk" in route.template or not isinstance(body, dict):
        return body
    n = next(_serial)
    out = dict(body)
    if isinstance(out.get("name"), str):
        out["name"] = f"{out['name'][:80]} {n}"
    if isinstance(out.get("email"), str):
        out["email"] = f"n{n}.{out['email']}"
    if isinstance(out.get("id"), str) and route.template in ("/api/v2/devices", "/api/v2/base-stations"):
        out["id"] = f"{0xC0000 + n:X}"
    return out


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The ingest's UDP form listens too: its datagrams share the HTTP form's reception model."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return settings.model_copy(update={"ingest_udp_port": port, "ingest_udp_host": "127.0.0.1"})


@pytest.fixture
def station(db: Database, tenants: Tenants) -> tuple[str, str]:
    """A base station's (id, secret)."""
    with db.write() as s:
        view, secret = stations.create(
            s, SYSTEM, group_id=tenants.customer_a, identifier="5B", fields=stations.StationFields(name="Sweeper")
        )
        return view.station.identifier, secret


@pytest.fixture
def routes(client: TestClient, objects_fixture: Objects, station: tuple[str, str]) -> list[Route]:  # noqa: F811
    objects = objects_fixture
    t: Tenants = objects.t
    station_basic = {"authorization": "Basic " + base64.b64encode(":".join(station).encode()).decode()}
    out = [
        Route(m, fill(API + p, "{}"), API + objects.resolve(p), objects.resolve(b), t.a_admin.headers, "native")
        for m, p, b in BODY_ROUTES
    ]
    for method, template, query, body in OTHER_ROUTES:
        url = fill(template, "1") + (f"?{query}" if query else "")
        family = "ingest" if template.startswith(INGEST) else "senet"
        headers = station_basic if family == "ingest" else t.a_admin.headers
        out.append(Route(method, fill(template, "{}"), url, body, headers, family))
    return out


def names_field(r: Response, route: Route, field: str) -> bool:
    """A 400 naming `field` in the family's error shape."""
    if r.status_code != 400:
        return False
    body = r.json()
    if route.family == "senet":  # {"message": "Invalid parameter: <field> (...)"}
        return f"Invalid parameter: {field} " in body.get("message", "")
    return any(e.get("field") == field and e.get("type") == "body" for e in body.get("errors", []))


def sweep(
    client: TestClient, routes: list[Route], check: Callable[[Route, Field, dict[str, Any]], Iterator[str]]
) -> list[str]:
    app: FastAPI = client.app  # type: ignore[assignment]
    declared = body_operations(app)
    doc = app.openapi()
    by_template = {(r.method, r.template): r for r in routes}
    problems = [
        f"no valid body for {m} {p}: add one to BODY_ROUTES (test_bad_input.py) or OTHER_ROUTES"
        for m, p in declared
        if (m, fill(p, "{}")) not in by_template
    ]
    for (method, path), schema in declared.items():
        route = by_template.get((method, fill(path, "{}")))
        if route is None:
            continue
        for field in fields_of(doc, schema, route.body):
            problems += list(check(route, field, route.body))
    return problems


def call(client: TestClient, route: Route, body: Any) -> Response:
    """The answer; an exception the app let through (the test client raises it) as a 500."""
    try:
        return client.request(route.method, route.url, json=fresh(route, body), headers=route.headers)
    except Exception as exc:
        return Response(500, text=f"{type(exc).__name__}: {exc}")


# -- the sweeps -----------------------------------------------------------------------------------
def test_null_on_any_body_field_behaves_as_absent_or_is_refused_naming_it(
    client: TestClient, routes: list[Route]
) -> None:
    def check(route: Route, field: Field, base: dict[str, Any]) -> Iterator[str]:
        absent = call(client, route, with_value(base, field.path, None, absent=True))
        null = call(client, route, with_value(base, field.path, None))
        where = f"{route.method} {route.template} {field.name}=null"
        if null.status_code >= 500 or absent.status_code >= 500:
            yield f"{where}: {null.status_code} (absent: {absent.status_code}) {null.text[:200]}"
        elif null.status_code == absent.status_code or names_field(null, route, field.name):
            return
        elif route.method == "PUT" and 200 <= null.status_code < 300:
            return  # an update's null unsets (docs/ARCHITECTURE.md, "Documented differences")
        else:
            yield f"{where}: {null.status_code} {null.text[:200]}; absent: {absent.status_code} {absent.text[:200]}"

    problems = sweep(client, routes, check)
    assert not problems, "\n".join(problems)


def test_a_value_of_the_wrong_json_type_is_refused_naming_the_field(client: TestClient, routes: list[Route]) -> None:
    """Strict at the API edge: "1" is not a number, true not an integer, 7 not a string."""
    checked = 0

    def check(route: Route, field: Field, base: dict[str, Any]) -> Iterator[str]:
        nonlocal checked
        kind = field.schema.get("type")
        if kind is None and "properties" in field.schema:
            kind = "object"
        for value in WRONG.get(str(kind), []):
            r = call(client, route, with_value(base, field.path, value))
            checked += 1
            if not names_field(r, route, field.name):
                yield f"{route.method} {route.template} {field.name}={value!r}: {r.status_code} {r.text[:200]}"

    problems = sweep(client, routes, check)
    assert not problems, "\n".join(problems)
    assert checked > 300, checked  # the sweep saw the document's fields, not an empty schema


def test_the_issue_examples_are_refused_with_400_naming_the_field(
    client: TestClient, routes: list[Route], tenants: Tenants
) -> None:
    h = tenants.a_admin.headers
    body = {"groupId": str(tenants.customer_a), "name": "kn1", "keepAlive": None}
    r = client.post(f"{API}/device-types", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert client.get(f"{API}/device-types/{r.json()['id']}", headers=h).json()["keepAlive"] == 0
    body = {"groupId": str(tenants.customer_a), "name": "c", "maxTokens": True}
    r = client.post(f"{API}/contracts", json=body, headers=h)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "maxTokens", r.text
    ingest = next(x for x in routes if x.template == INGEST)
    reception = ingest.body["receptions"][0] | {"seqNumber": "1"}
    r = client.post(INGEST, json={"receptions": [reception]}, headers=ingest.headers)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "receptions[0].seqNumber", r.text


def test_the_udp_ingest_refuses_a_wrong_json_type_naming_the_field(
    client: TestClient, station: tuple[str, str]
) -> None:
    address = client.app.state.ingest_udp.address  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.connect(address)

        def exchange(datagram: dict[str, Any]) -> dict[str, Any]:
            s.send(orjson.dumps({"station": station[0], "secret": station[1], "id": 5} | datagram))
            reply: dict[str, Any] = orjson.loads(s.recv(65536))
            return reply

        assert exchange({"receptions": [RECEPTION]}) == {"id": 5, "accepted": 1}
        for name, value in (("seqNumber", "1"), ("seqNumber", True), ("rssi", "-120"), ("ackRequired", 1)):
            reply = exchange({"receptions": [RECEPTION | {name: value}]})
            # A reply is cut to the datagram's size (`errors` may go): `message` names the first error.
            assert reply["status"] == 400, (name, value, reply)
            assert reply["message"].startswith(f"receptions[0].{name}: "), reply
        reply = exchange({"id": True, "receptions": [RECEPTION]})
        assert reply["status"] == 400 and reply["message"].startswith("id: "), reply


def test_integers_beyond_the_database_range_are_never_a_server_error(client: TestClient, routes: list[Route]) -> None:
    """PostgreSQL's integer is 32 bits (SQLite's 64): every integer query parameter and body field
    of the document, sent beyond both, is answered without a 5xx (found by `make fuzz`:
    `GET /device-types?payloadType=-263057756719814` was a 500 on PostgreSQL)."""
    app: FastAPI = client.app  # type: ignore[assignment]
    doc = app.openapi()
    h = routes[0].headers  # Customer A's ADMIN
    problems = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["in"] == "query" and _non_null(doc, p.get("schema", {})).get("type") == "integer":
                    for big in (2**31, -(2**31) - 1, 2**63):
                        url = fill(path, "1") + f"?{p['name']}={big}"
                        r = call(client, Route(method.upper(), path, url, {}, h, "native"), None)
                        if r.status_code >= 500:
                            problems.append(f"{method.upper()} {url}: {r.status_code} {r.text[:200]}")

    def check(route: Route, field: Field, base: dict[str, Any]) -> Iterator[str]:
        if field.schema.get("type") == "integer":
            for big in (2**31, -(2**31) - 1, 2**63):
                r = call(client, route, with_value(base, field.path, big))
                if r.status_code >= 500:
                    yield f"{route.method} {route.template} {field.name}={big}: {r.status_code} {r.text[:200]}"

    problems += sweep(client, routes, check)
    assert not problems, "\n".join(problems)
