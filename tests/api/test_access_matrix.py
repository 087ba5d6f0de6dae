"""The access matrix (NetBox style): every route of the native and Senet APIs, called with an
authorized key, a read-only key (OBSERVER) of the same group, a key of a sibling group and no key.

The routes are enumerated from the application itself: a route missing from `MATRIX` fails
`test_every_api_route_is_declared_in_the_matrix`, so a new endpoint cannot ship without a row.
Each row says how to build the request and which status each kind of caller gets; the checks
that follow from a status (error shapes, no foreign object in lists or totals, a refused call
changes nothing) are the same for every row."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.config import Settings
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.db.models import Base
from heron.delivery import callbacks
from heron.delivery.models import Delivery
from heron.jobs import engine
from heron.keys import Keyring
from heron.messages.models import Message
from heron.network.sigfox import bridge, coverage, stations
from heron.registry import bulk_jobs, contracts, device_profiles, device_types, devices, onboarding, registration_tokens
from heron.stations.models import BaseStation, UndeliveredFrames
from heron.tenancy import api_users, groups
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import AuditEvent, Group
from tests.conftest import TEST_KEK, Credential, Tenants, make_user

NATIVE = "/api/v2"
SENET = "/rest/integration"
FAMILIES = (NATIVE, SENET)
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

# Tables and columns that legitimately change on a read (sessions, sign-in throttling, the
# coalesced last-used time of a key): everything else must be identical after a refused call.
VOLATILE_TABLES = frozenset({"web_sessions", "login_throttle", "alembic_version"})
VOLATILE_COLUMNS = frozenset({"last_used_at", "last_login_at"})


def db_snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (volatile columns aside), to prove a call changed nothing."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in VOLATILE_TABLES:
                continue
            cols = [c for c in table.columns if c.name not in VOLATILE_COLUMNS]
            rows = session.execute(select(*cols)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No job runner in these tests: a job accepted for one caller must not change the database
    while the next caller's refused call is being checked."""
    return settings.model_copy(update={"run_jobs": False})


# -- the world every row runs in ----------------------------------------------------------------
@dataclass
class World:
    """The `tenants` tree plus objects in Customer A (the targets of path parameters) and in
    Customer B (bait: they must never show up for Customer A's keys, and the reverse)."""

    tenants: Tenants
    params: dict[str, str]
    paths: dict[int, str]  # group id -> materialized path, for every group
    creds: dict[str, Credential | None] = field(default_factory=dict)

    def group_path(self, group_id: str | int) -> str:
        return self.paths[int(group_id)]


@pytest.fixture
def world(db: Database, tenants: Tenants) -> World:
    with db.write() as s:
        target = groups.create(s, SYSTEM, parent_id=tenants.customer_a, name="Matrix group A", type_=2)
        groups.create(s, SYSTEM, parent_id=tenants.customer_b, name="Secret group B", type_=2)
        user = make_user(
            s,
            "user.a@example.com",
            (tenants.customer_a, "OBSERVER"),
            (tenants.customer_a, "DEVICE_MANAGER_R"),  # removed by DELETE /users/{id}/profiles/{profileId}
            first_name="Ada",
        )
        make_user(s, "user.b@example.com", (tenants.customer_b, "OBSERVER"), first_name="Bob")
        # An operator person with roles in both customers: each customer may see the person,
        # but never the other customer's group through the person's roles.
        make_user(
            s,
            "shared@example.com",
            (tenants.customer_a, "OBSERVER"),
            (tenants.customer_b, "OBSERVER"),
            first_name="Sam",
        )
        key, _ = api_users.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            name="matrix key A",
            timezone="UTC",
            profile_ids=["OBSERVER", "DEVICE_MANAGER_R"],
        )
        api_users.create(s, SYSTEM, group_id=tenants.customer_b, name="key B", timezone="UTC", profile_ids=["OBSERVER"])
        # Registry objects: targets in Customer A, bait in Customer B (none in use, so each deletes).
        registry: dict[str, str] = {}
        for group_id, suffix in ((tenants.customer_a, ""), (tenants.customer_b, "_b")):
            contract = contracts.create(s, SYSTEM, group_id=group_id, name=f"Contract{suffix}", max_tokens=10)
            profile = device_profiles.create(
                s,
                SYSTEM,
                group_id=group_id,
                fields=device_profiles.ProfileFields(name=f"Profile{suffix}", region="EU868", mac_version="1.0.3"),
            )
            dtype = device_types.create(
                s, SYSTEM, group_id=group_id, network="SIGFOX", fields=device_types.DeviceTypeFields(name="Type")
            )
            # Devices live on their own device type, so the device type above stays deletable.
            host = device_types.create(
                s, SYSTEM, group_id=group_id, network="SIGFOX", fields=device_types.DeviceTypeFields(name="Host")
            )
            keyring = Keyring.parse(TEST_KEK)
            made = []
            for ident in (f"A1{suffix[1:].upper()}", f"D1{suffix[1:].upper()}"):
                made.append(
                    devices.create_sigfox(
                        s,
                        SYSTEM,
                        keyring,
                        identifier=ident.replace("_", ""),
                        pac="0123456789ABCDEF",
                        device_type_id=host.device_type.id,
                        fields=devices.DeviceFields(name=f"Device {ident}"),
                    )
                )
            station, _secret = stations.create(
                s,
                SYSTEM,
                group_id=group_id,
                identifier=f"BA5E{suffix[1:].upper()}".replace("_", ""),
                fields=stations.StationFields(name=f"Station{suffix}"),
            )
            hook = callbacks.create(
                s,
                SYSTEM,
                keyring,
                dtype.device_type.id,
                callbacks.CallbackFields(
                    channel="URL", callback_type=0, callback_subtype=3, enabled=True, url="https://example.com/hook"
                ),
            )
            _undelivered(s, made[0].device.id, dtype.device_type.id, hook.callback.id)
            bridge.enable(s, SYSTEM, dtype.device_type.id)
            registry |= {
                f"callback_id{suffix}": str(hook.callback.id),
                f"station_id{suffix}": station.station.identifier,
                f"device_id{suffix}": f"A1{suffix[1:].upper()}",
                f"contract_id{suffix}": str(contract.contract.id),
                f"device_profile_id{suffix}": str(profile.profile.id),
                f"device_type_id{suffix}": str(dtype.device_type.id),
            }
        devices.delete(s, SYSTEM, "D1")
        # Bulk jobs filed in Customer A (no runner runs in these tests, so they stay INITIAL).
        edit_job = bulk_jobs.submit_on_devices(s, SYSTEM, bulk_jobs.EDIT, [{"id": "A1", "name": "Edited"}])
        unsub = bulk_jobs.submit_on_devices(s, SYSTEM, bulk_jobs.UNSUBSCRIBE, [{"id": "A1"}])
        registry |= {"job_id": edit_job.req_id, "unsubscribe_job_id": unsub.req_id, "series_operation": "delete"}
        for action in ("restart", "suspend", "resume"):  # device action jobs (Sigfox actionJob)
            job = bulk_jobs.submit_on_devices(s, SYSTEM, f"devices.{action}", [{"id": "A1"}])
            registry[f"{action}_job_id"] = job.req_id
        made_a = devices.get(s, SYSTEM, "A1").device  # certificates for the certificate reads
        made_a.product_certificate, made_a.modem_certificate = "P_0001_A", "M_0001_A"
        a_path = groups.get(s, SYSTEM, tenants.customer_a).path  # a bulk prediction job of Customer A's
        rows = [{"lat": 45.0, "lng": 4.0}]
        cov_job = engine.submit(
            s, kind=coverage.BULK, created_by="system", group_path=a_path, rows=rows, lock_keys=[], req_id_prefix=""
        )
        registry["coverage_job_id"] = cov_job.req_id
        registry |= _senet_world(s, tenants)  # Senet onboarding rows (see `_senet_world`)
        params = registry | {
            "deleted_device_id": "D1",
            "group_id": str(target.id),
            "user_id": str(user.id),
            "api_user_id": str(key.api_user.id),
            "profile_id": "DEVICE_MANAGER_R",
            "customer_a": str(tenants.customer_a),
            "year": "2026",
            "month": "3",
        }
    with db.read() as s:
        paths = {g.id: g.path for g in s.scalars(select(Group))}
    return World(
        tenants,
        params,
        paths,
        {"admin": tenants.a_admin, "reader": tenants.a_reader, "sibling": tenants.b_admin, "none": None},
    )


# -- the matrix ---------------------------------------------------------------------------------
# Kinds of caller, in the order each row calls them: refused callers first, so that the
# authorized call (which may delete the object) comes last; the value is how the key is presented.
KINDS: dict[str, str] = {"none": "", "sibling": "basic", "reader": "bare", "admin": "basic"}

Body = Callable[[World], dict[str, Any]]
# What a list item says about where it lives: the group paths it mentions (all must be visible).
Owners = Callable[[dict[str, Any], World, Database], list[str]]


def _group_owners(item: dict[str, Any], w: World, db: Database) -> list[str]:
    return [w.group_path(item["id"])] + [w.group_path(g["id"]) for g in item["path"]]


def _user_owners(item: dict[str, Any], w: World, db: Database) -> list[str]:
    return [w.group_path(r["group"]["id"]) for r in item["userRoles"]] or ["<no role shown>"]


def _api_user_owners(item: dict[str, Any], w: World, db: Database) -> list[str]:
    return [w.group_path(item["group"]["id"])]


def _profile_owners(item: dict[str, Any], w: World, db: Database) -> list[str]:
    return [w.group_path(item["group"]["id"])] if "group" in item else []


def _owned_by_group(item: dict[str, Any], w: World, db: Database) -> list[str]:
    """Registry objects name the group that owns them (or, for a contract seen through an
    allocation, the allocated group)."""
    return [w.group_path(item["group"]["id"])]


def _audit_owners(item: dict[str, Any], w: World, db: Database) -> list[str]:
    with db.read() as s:
        event = s.get(AuditEvent, int(item["id"]))
        assert event is not None
        return [event.group_path]


@dataclass(frozen=True)
class Row:
    method: str
    template: str  # the route exactly as the app declares it
    expect: dict[str, int | None]  # kind of caller -> status; None: the family's answer to no key
    query: str = ""  # may use {placeholders} from World.params
    body: Body | None = None
    owners: Owners | None = None  # set for list routes
    aliases: tuple[tuple[str, str], ...] = ()  # (path placeholder, World.params key used instead)
    read_only: bool = False  # a POST that computes an answer and writes nothing

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}{'?' + self.query if self.query else ''}"

    def status(self, kind: str) -> int:
        wanted = self.expect[kind]
        return wanted if wanted is not None else _no_key_status(self.template)

    def url(self, w: World) -> str:
        path = self.template.format(**(w.params | {k: w.params[v] for k, v in self.aliases}))
        return f"{path}?{self.query.format(**w.params)}" if self.query else path


def expect(admin: int, reader: int, sibling: int, none: int | None = None) -> dict[str, int | None]:
    """Statuses for (authorized, read-only, sibling group, no key); `none` defaults per family.
    A sibling naming Customer A's group in a body gets the 400 an unknown id gets (a reference
    in a body is input); in a path, the 404 of a missing object."""
    return {"admin": admin, "reader": reader, "sibling": sibling, "none": none}


def _group_body(parent_id: str) -> dict[str, Any]:
    return {"name": "Created by matrix", "description": "", "type": 2, "timezone": "UTC", "parentId": parent_id}


def _user_body(group_id: str) -> dict[str, Any]:
    return {
        "firstName": "New",
        "lastName": "Person",
        "email": "new.person@example.com",
        "userRoles": [{"groupId": group_id, "profileIds": ["OBSERVER"]}],
    }


def _api_user_body(group_id: str) -> dict[str, Any]:
    return {"groupId": group_id, "name": "new key", "timezone": "UTC", "profileIds": ["OBSERVER"]}


CREATE_BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    NATIVE + "/groups": _group_body,
    NATIVE + "/users": _user_body,
    NATIVE + "/api-users": _api_user_body,
    NATIVE + "/contracts": lambda g: {"name": "New contract", "groupId": g, "maxTokens": 5},
    NATIVE + "/device-profiles": lambda g: {
        "name": "New",
        "groupId": g,
        "region": "US915",
        "macVersion": "1.0.4",
        "subBand": 2,
    },
    NATIVE + "/device-types": lambda g: {"name": "New type", "groupId": g, "keepAlive": 1800},
    NATIVE + "/base-stations": lambda g: {"id": "5EED", "groupId": g, "name": "New station"},
}


def _device_body(w: World) -> dict[str, Any]:
    return {"id": "C0FFEE", "name": "New device", "pac": "00112233445566AA", "deviceTypeId": w.params["device_type_id"]}


def _bulk_create(w: World) -> dict[str, Any]:
    return {"deviceTypeId": w.params["device_type_id"], "data": [{"id": "B0", "pac": "00112233445566AA"}]}


def _bulk_transfer(w: World) -> dict[str, Any]:
    return {"deviceTypeId": w.params["device_type_id"], "data": [{"id": "A1"}]}


def _create_in_a(template: str) -> Body:
    return lambda w: CREATE_BODIES[template](w.params["customer_a"])


# -- Senet onboarding: the objects its rows aim at -----------------------------------------------
SD = SENET + "/device"
SENET_APP = "appEui={senet_app}"


def _senet_world(s: Session, tenants: Tenants) -> dict[str, str]:
    """In Customer A: a LORAWAN device type (the Senet application) with a registered device, a
    registration token, and a finished task (the target of `status`)."""
    plan = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Senet plan", max_tokens=10)
    fields = device_types.DeviceTypeFields(name="Senet app", app_eui="00000000000A00E0", contract_id=plan.contract.id)
    app = device_types.create(s, SYSTEM, group_id=tenants.customer_a, network="LORAWAN", fields=fields)
    devices.create_lorawan(
        s,
        SYSTEM,
        Keyring.parse(TEST_KEK),
        dev_eui="0A000000000000A1",
        app_key="AB" * 16,
        device_type_id=app.device_type.id,
        fields=devices.DeviceFields(name="LoRaWAN A1"),
    )
    token = registration_tokens.create(s, SYSTEM, group_id=tenants.customer_a, issued_to="Ada").code
    task = engine.submit(
        s,
        kind=onboarding.DEACTIVATE,
        created_by="system",
        group_path=app.group.path,
        rows=[],
        lock_keys=[],
        params={"app_eui": "00000000000A00E0"},
        req_id_prefix=onboarding.MGMT_PREFIX,
    )
    task.state, task.ended_at = "DONE_SUC", utcnow()
    return {
        "senet_app": "00000000000A00E0",
        "senet_device": "0A000000000000A1",
        "registration_token": token,
        "senet_req_id": task.req_id,
    }


def _senet_rows(w: World) -> dict[str, Any]:
    return {"data": [{"devEui": w.params["senet_device"], "appKey": "AB" * 16}]}


G, U, K = NATIVE + "/groups", NATIVE + "/users", NATIVE + "/api-users"
C, CI = NATIVE + "/contracts", NATIVE + "/contract-infos"
DP, DT, DV = NATIVE + "/device-profiles", NATIVE + "/device-types", NATIVE + "/devices"
BS = NATIVE + "/base-stations"
COV = NATIVE + "/coverages"
CP = COV + "/global/predictions"
CB = DT + "/{device_type_id}/callbacks"


def _undelivered(s: Session, device_id: int, device_type_id: int, callback_id: int) -> None:
    """A message of 1970 (inside `since=0&before=1`) whose delivery to the callback failed."""
    message = Message(
        device_id=device_id,
        device_type_id=device_type_id,
        time=datetime.fromtimestamp(0, UTC),
        seq_number=1,
        frame_type="DATA",
        data="00",
        ack_required=False,
        nb_frames=1,
        receptions=0,
        lqi=4,
        lost=0,
    )
    s.add(message)
    s.flush()
    now = utcnow()
    s.add(
        Delivery(
            key="0" * 32,
            callback_id=callback_id,
            device_type_id=device_type_id,
            device_id=device_id,
            message_id=message.id,
            event="BIDIR",
            state="FAILED",
            attempts=3,
            next_at=now,
            created_at=now,
            last_status=500,
            last_error="HTTP 500",
        )
    )


def _no_owner(item: dict[str, Any], w: World, db: Database) -> list[str]:
    """Lists whose items name no group (undelivered callbacks): the scope is the route's object."""
    return []


def _callback_body() -> dict[str, Any]:
    return {"channel": "URL", "callbackType": 0, "callbackSubtype": 2, "enabled": True, "url": "https://example.com/x"}


MATRIX: list[Row] = [
    Row("GET", G, expect(200, 200, 200), "withTotal=true", owners=_group_owners),
    Row("GET", G, expect(200, 200, 404), "parentIds={customer_a}&deep=true&withTotal=true", owners=_group_owners),
    Row("POST", G, expect(201, 403, 400), body=_create_in_a(G)),
    Row("GET", G + "/{group_id}", expect(200, 200, 404)),
    Row("PUT", G + "/{group_id}", expect(204, 403, 404), body=lambda w: {"name": "Renamed"}),
    Row("DELETE", G + "/{group_id}", expect(204, 403, 404)),
    Row("GET", U, expect(200, 200, 200), owners=_user_owners),
    Row("GET", U, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_user_owners),
    Row("POST", U, expect(201, 403, 400), body=_create_in_a(U)),
    Row("GET", U + "/{user_id}", expect(200, 404, 404)),
    Row("PUT", U + "/{user_id}", expect(204, 404, 404), body=lambda w: {"firstName": "Renamed"}),
    Row("DELETE", U + "/{user_id}", expect(204, 404, 404)),
    Row(
        "PUT",
        U + "/{user_id}/profiles",
        expect(204, 404, 404),
        body=lambda w: {"userRoles": [{"groupId": w.params["group_id"], "profileId": "OBSERVER"}]},
    ),
    Row("DELETE", U + "/{user_id}/profiles/{profile_id}", expect(204, 404, 404)),
    Row("GET", K, expect(200, 200, 200), owners=_api_user_owners),
    Row("GET", K, expect(200, 200, 404), "groupIds={customer_a}", owners=_api_user_owners),
    Row("POST", K, expect(201, 403, 400), body=_create_in_a(K)),
    Row("GET", K + "/{api_user_id}", expect(200, 404, 404)),
    Row("PUT", K + "/{api_user_id}", expect(204, 404, 404), body=lambda w: {"name": "renamed key"}),
    Row("DELETE", K + "/{api_user_id}", expect(204, 404, 404)),
    Row("PUT", K + "/{api_user_id}/profiles", expect(204, 404, 404), body=lambda w: {"profileIds": ["API_ONLY"]}),
    Row("DELETE", K + "/{api_user_id}/profiles/{profile_id}", expect(204, 404, 404)),
    Row("PUT", K + "/{api_user_id}/renew-credential", expect(200, 404, 404)),
    Row("GET", NATIVE + "/profiles", expect(200, 200, 200), owners=_profile_owners),
    Row("GET", NATIVE + "/profiles", expect(200, 200, 404), "groupId={customer_a}", owners=_profile_owners),
    Row("GET", NATIVE + "/profiles/{profile_id}", expect(200, 200, 200)),
    Row("GET", NATIVE + "/audit-events", expect(200, 403, 200), owners=_audit_owners),
    # The registry. /contracts is management (`contract:write`: OBSERVER lists nothing, reads 403).
    Row("GET", C, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", C, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_owned_by_group),
    Row("POST", C, expect(201, 403, 400), body=_create_in_a(C)),
    Row("GET", C + "/{contract_id}", expect(200, 403, 404)),
    Row("PUT", C + "/{contract_id}", expect(204, 403, 404), body=lambda w: {"name": "Renamed", "maxTokens": 20}),
    Row("DELETE", C + "/{contract_id}", expect(204, 403, 404)),
    Row(
        "PUT",
        C + "/{contract_id}/allocations",
        expect(204, 403, 404),
        body=lambda w: {"allocations": [{"groupId": w.params["group_id"], "maxTokens": 5}]},
    ),
    Row("GET", CI, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", CI, expect(200, 200, 404), "groupId={customer_a}&deep=true", owners=_owned_by_group),
    Row("GET", CI + "/{contract_id}", expect(200, 200, 404)),
    Row("GET", DP, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", DP, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_owned_by_group),
    Row("POST", DP, expect(201, 403, 400), body=_create_in_a(DP)),
    Row("GET", DP + "/{device_profile_id}", expect(200, 200, 404)),
    Row("PUT", DP + "/{device_profile_id}", expect(204, 403, 404), body=lambda w: {"deviceClass": "C"}),
    Row("DELETE", DP + "/{device_profile_id}", expect(204, 403, 404)),
    Row("GET", DT, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", DT, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_owned_by_group),
    Row("POST", DT, expect(201, 403, 400), body=_create_in_a(DT)),
    Row("GET", DT + "/{device_type_id}", expect(200, 200, 404)),
    Row(
        "PUT",
        DT + "/{device_type_id}",
        expect(204, 403, 404),
        body=lambda w: {"keepAlive": 7200, "contractId": w.params["contract_id"]},
    ),
    Row("DELETE", DT + "/{device_type_id}", expect(204, 403, 404)),
    Row("PUT", DT + "/{device_type_id}/disengage", expect(204, 403, 404), body=lambda w: {}),
    Row("POST", DT + "/{device_type_id}/disengage", expect(204, 403, 404), body=lambda w: {}),
    # Bulk jobs. A sibling naming Customer A's devices gets a job whose rows all fail ("Unknown
    # device", as for missing ones); naming Customer A's device type, the 400 of an unknown id.
    Row("POST", DV + "/bulk", expect(200, 403, 400), body=lambda w: _bulk_create(w)),
    Row("PUT", DV + "/bulk", expect(201, 403, 201), body=lambda w: {"data": [{"id": "A1", "name": "Bulk"}]}),
    Row("GET", DV + "/bulk/{job_id}", expect(200, 200, 404)),
    Row("POST", DV + "/bulk/transfer", expect(200, 403, 400), body=lambda w: _bulk_transfer(w)),
    Row(
        "POST",
        DV + "/bulk/replace",
        expect(200, 403, 200),
        body=lambda w: {"data": [{"deviceId": "A1", "targetDeviceId": "A2"}]},
    ),
    Row("POST", DV + "/bulk/unsubscribe", expect(201, 403, 201), body=lambda w: {"data": [{"id": "A1"}]}),
    Row("GET", DV + "/bulk/unsubscribe/{job_id}", expect(200, 200, 404), aliases=(("job_id", "unsubscribe_job_id"),)),
    # restart, suspend, resume (Sigfox deviceActionJob -> actionJob); restart of a type's or contract's devices
    Row("POST", DV + "/bulk/restart", expect(201, 403, 201), body=lambda w: {"data": ["A1"]}),
    Row("POST", DV + "/bulk/suspend", expect(201, 403, 201), body=lambda w: {"data": ["A1"]}),
    Row("POST", DV + "/bulk/resume", expect(201, 403, 201), body=lambda w: {"data": ["A1"]}),
    Row("GET", DV + "/bulk/restart/{job_id}", expect(200, 200, 404), aliases=(("job_id", "restart_job_id"),)),
    Row("GET", DV + "/bulk/suspend/{job_id}", expect(200, 200, 404), aliases=(("job_id", "suspend_job_id"),)),
    Row("GET", DV + "/bulk/resume/{job_id}", expect(200, 200, 404), aliases=(("job_id", "resume_job_id"),)),
    Row("POST", DT + "/{device_type_id}/bulk/restart", expect(201, 403, 404), body=lambda w: {}),
    Row("GET", DT + "/bulk/restart/{job_id}", expect(200, 200, 404), aliases=(("job_id", "restart_job_id"),)),
    Row("POST", CI + "/{contract_id}/bulk/restart", expect(201, 403, 404), body=lambda w: {}),
    Row("GET", CI + "/bulk/restart/{job_id}", expect(200, 200, 404), aliases=(("job_id", "restart_job_id"),)),
    Row("POST", DV + "/bulk/delete", expect(200, 403, 200), body=lambda w: {"data": ["A1"]}),
    Row(
        "POST",
        DV + "/bulk/series/{operation}",
        expect(200, 403, 200),
        body=lambda w: {"ids": "A1"},  # sent as JSON: one line that is not a device id, a row error
        aliases=(("operation", "series_operation"),),
    ),
    Row("GET", NATIVE + "/jobs", expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", NATIVE + "/jobs", expect(200, 200, 200), "kind=devices.edit&state=INITIAL", owners=_owned_by_group),
    Row("GET", NATIVE + "/jobs/{job_id}", expect(200, 200, 404)),
    Row("GET", DV, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", DV, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_owned_by_group),
    Row("GET", DV, expect(200, 200, 200), "lifecycle=DELETED", owners=_owned_by_group),
    Row("POST", DV, expect(201, 403, 400), body=_device_body),
    Row("GET", DV + "/{device_id}", expect(200, 200, 404)),
    Row("PUT", DV + "/{device_id}", expect(204, 403, 404), body=lambda w: {"name": "Renamed", "lat": 45.5}),
    Row("DELETE", DV + "/{device_id}", expect(204, 403, 404)),
    Row("POST", DV + "/{device_id}/restore", expect(204, 403, 404), aliases=(("device_id", "deleted_device_id"),)),
    # A1 holds no token: nothing to unsubscribe (409, after the rights are checked)
    Row("PUT", DV + "/{device_id}/unsubscribe", expect(409, 403, 404), body=lambda w: {"unsubscriptionTime": 0}),
    Row("POST", DV + "/{device_id}/disengage", expect(204, 403, 404), body=lambda w: {}),
    Row("GET", DV + "/{device_id}/certificate/product", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/certificate/modem", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/product-certificate", expect(200, 200, 404), "pac=0123456789ABCDEF"),
    # consumption per day (api/v2/consumption.py): a device, a device type, a group's subtree
    Row("GET", DV + "/{device_id}/consumption/{year}", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/consumption/{year}/{month}", expect(200, 200, 404)),
    Row("GET", DT + "/{device_type_id}/consumption/{year}", expect(200, 200, 404)),
    Row("GET", DT + "/{device_type_id}/consumption/{year}/{month}", expect(200, 200, 404)),
    Row("GET", G + "/{group_id}/consumption/{year}", expect(200, 200, 404)),
    Row("GET", G + "/{group_id}/consumption/{year}/{month}", expect(200, 200, 404)),
    # -- device queries (registry/device_queries.py): the CSV export, a contract's devices ------
    Row("GET", DV, expect(200, 200, 200), "withTotal=true&sort=-lastCom&comState=5", owners=_owned_by_group),
    Row("GET", DV + "/export", expect(200, 200, 200), owners=_owned_by_group),
    Row(
        "GET",
        DV + "/export",
        expect(200, 200, 404),
        "groupIds={customer_a}&deep=true&columns=id,groupId",
        owners=_owned_by_group,
    ),
    Row("GET", CI + "/{contract_id}/devices", expect(200, 200, 404), "withTotal=true", owners=_owned_by_group),
    # -- end of device queries ------------------------------------------------------------------
    # -- the message pipeline: base stations (OBSERVER reads them), messages ----------------------
    Row("GET", BS, expect(200, 200, 200), owners=_owned_by_group),
    Row("GET", BS, expect(200, 200, 404), "groupIds={customer_a}&deep=true", owners=_owned_by_group),
    # Stations are the operator's (NETWORK_OPERATOR): a customer's ADMIN reads its group's, no more
    # (tests/network/sigfox/test_station_tenancy.py has the operator's side).
    Row("POST", BS, expect(403, 403, 400), body=_create_in_a(BS)),
    Row("GET", BS + "/{station_id}", expect(200, 200, 404)),
    Row("PUT", BS + "/{station_id}", expect(403, 403, 404), body=lambda w: {"name": "Renamed", "altitude": 120}),
    Row("PUT", BS + "/{station_id}/renew-credential", expect(403, 403, 404)),
    Row("DELETE", BS + "/{station_id}", expect(403, 403, 404)),
    Row("GET", DV + "/{device_id}/messages", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/locations", expect(200, 200, 404), "limit=10&oob=true"),
    Row("GET", DV + "/{device_id}/events", expect(200, 200, 404)),
    Row("GET", BS + "/{station_id}/events", expect(200, 200, 404), "limit=10"),
    # -- service prediction (api/v2/coverages.py): the network's coverage, for every caller ------
    Row("GET", CP, expect(200, 200, 200), "lat=45&lng=4"),
    Row("GET", CP, expect(200, 200, 404), "lat=45&lng=4&groupId={customer_a}"),
    Row("POST", CP, expect(200, 200, 200), body=lambda w: {"locations": [{"lat": 45, "lng": 4}]}, read_only=True),
    Row("POST", CP + "/bulk", expect(201, 201, 201), body=lambda w: {"locations": [{"lat": 45, "lng": 4}]}),
    Row("GET", CP + "/bulk/{job_id}", expect(200, 200, 404), aliases=(("job_id", "coverage_job_id"),)),
    Row("GET", COV + "/operators/redundancy", expect(200, 200, 200), "lat=45&lng=4&deviceSituation=OUTDOOR"),
    Row("GET", COV + "/operators/redundancy", expect(200, 200, 404), "lat=45&lng=4&operatorId={customer_a}"),
    Row("GET", COV + "/global/grid", expect(200, 200, 200), "bbox=3.9,44.9,4.1,45.1&step=0.05"),
    # -- end of service prediction ----------------------------------------------------------------
    Row("GET", DT + "/{device_type_id}/messages", expect(200, 200, 404), "limit=10"),
    Row("GET", DV + "/{device_id}/downlinks", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/messages/export", expect(200, 200, 404)),
    Row("GET", DV + "/{device_id}/messages/metric", expect(200, 200, 404)),
    Row("GET", DT + "/{device_type_id}/messages/export", expect(200, 200, 404)),
    Row("GET", DT + "/{device_type_id}/sigfox-bridge", expect(200, 200, 404)),
    Row("PUT", DT + "/{device_type_id}/sigfox-bridge", expect(200, 403, 404)),
    Row("DELETE", DT + "/{device_type_id}/sigfox-bridge", expect(204, 403, 404)),
    Row("GET", CB, expect(200, 200, 404)),
    Row("POST", CB, expect(201, 403, 404), body=lambda w: _callback_body()),
    Row("PUT", CB + "/{callback_id}", expect(204, 403, 404), body=lambda w: {"url": "https://example.com/other"}),
    Row("DELETE", CB + "/{callback_id}", expect(204, 403, 404)),
    Row("PUT", CB + "/{callback_id}/enable", expect(204, 403, 404), "enabled=false"),
    Row("PUT", CB + "/{callback_id}/downlink", expect(204, 403, 404)),
    # callbacks not delivered (OBSERVER holds callback:read) and the outbox actions (callback:write)
    Row("GET", DV + "/{device_id}/callbacks-not-delivered", expect(200, 200, 404), owners=_no_owner),
    Row("GET", DT + "/{device_type_id}/callbacks-not-delivered", expect(200, 200, 404), owners=_no_owner),
    Row("GET", CB + "/{callback_id}/callbacks-not-delivered", expect(200, 200, 404), owners=_no_owner),
    Row("GET", G + "/{group_id}/callbacks-not-delivered", expect(200, 200, 404), owners=_no_owner),
    Row("POST", DT + "/{device_type_id}/callbacks-not-delivered/retry", expect(200, 403, 404), body=lambda w: {}),
    Row("POST", CB + "/{callback_id}/test", expect(200, 403, 404), body=lambda w: {}),
    Row("POST", CB + "/{callback_id}/resend", expect(200, 403, 404), "since=0&before=1", body=lambda w: {}),
    # -- end of the message pipeline -------------------------------------------------------------
    # -- Senet onboarding (api/senet/devices.py): the application and task of `_senet_world` ---------
    # A sibling naming Customer A's application gets the 400 of an unknown appEui; another
    # tenant's task answers 403 (the seed's status codes); no key is the family's 403.
    Row("POST", SD + "/register", expect(200, 403, 400), SENET_APP + "&token={registration_token}", _senet_rows),
    Row("POST", SD + "/activate", expect(200, 403, 400), SENET_APP, _senet_rows),
    # activateOne takes no body; `{}` only satisfies the matrix's "writes carry a body" rule.
    Row("POST", SD + "/activateOne", expect(200, 403, 400), SENET_APP + "&devEui={senet_device}", lambda w: {}),
    Row("POST", SD + "/deactivate", expect(200, 403, 400), SENET_APP, _senet_rows),
    Row("POST", SD + "/update", expect(200, 403, 400), SENET_APP + "&tagsOperation=APPEND&tags=t1", _senet_rows),
    Row("GET", SD + "/status", expect(200, 200, 403), "reqId={senet_req_id}"),
    # -- end of Senet onboarding -----------------------------------------------------------------
]


def _family(template: str) -> str:
    return next(f for f in FAMILIES if template.startswith(f))


def _no_key_status(template: str) -> int:
    return 403 if _family(template) == SENET else 401


def _walk(routes: list[Any]) -> Iterator[Any]:
    """Routes, looking into included routers where FastAPI keeps them (`original_router`)."""
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if isinstance(inner, list):
            yield from _walk(inner)
        else:
            yield route


def _served_routes(client: TestClient) -> set[tuple[str, str]]:
    """(method, template) of every API route: those `app.routes` lists flat, and those of the
    OpenAPI document the app publishes (recent FastAPI nests included routers in `app.routes`
    behind internal objects; the document lists them all)."""
    app: FastAPI = client.app  # type: ignore[assignment]
    out: set[tuple[str, str]] = set()
    for route in _walk(app.routes):
        path, methods = getattr(route, "path", None), getattr(route, "methods", None) or set()
        if isinstance(path, str) and path.startswith(FAMILIES):
            out |= {(m, path) for m in methods if m in HTTP_METHODS}
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(FAMILIES):
            out |= {(m.upper(), path) for m in operations if m.upper() in HTTP_METHODS}
    return out


def _call(client: TestClient, row: Row, w: World, kind: str) -> Response:
    cred = w.creds[kind]
    headers = {} if cred is None else (cred.basic if KINDS[kind] == "basic" else cred.headers)
    body = row.body(w) if row.body else None
    r: Response = client.request(row.method, row.url(w), headers=headers, json=body)
    return r


def _check_shape(r: Response, row: Row, w: World, kind: str, db: Database) -> list[str]:
    """The body a status implies (api.md), and for lists: nothing from outside the caller's subtree."""
    problems: list[str] = []
    native = _family(row.template) == NATIVE
    if r.status_code == 401:
        if r.content != b"":
            problems.append(f"401 must have no body, got {r.text!r}")
        if r.headers.get("www-authenticate") != 'Basic realm="heron"':
            problems.append(f"401 without WWW-Authenticate: {r.headers.get('www-authenticate')!r}")
        return problems
    if r.status_code == 204:
        if r.content != b"":
            problems.append(f"204 with a body: {r.text!r}")
        return problems
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/csv"):
        # A device export names each row's group; a message export is scoped by its path object.
        return problems + (_check_csv(r, row, w, kind, db) if row.owners is not None else [])
    body = r.json()
    created = body.get("id") or body.get("jobId")  # a Sigfox bulk call answers {jobId} for its job
    if r.status_code == 201 and native and not (isinstance(created, str) and created):
        problems.append(f"201 must answer {{id}}, got {body!r}")
    only_message = r.status_code in (403, 404, 409) or (r.status_code == 405 and not native)
    if only_message and (set(body) != {"message"} or not isinstance(body["message"], str) or not body["message"]):
        problems.append(f"{r.status_code} body must be exactly {{message}}, got {body!r}")
    if r.status_code == 400 and native:
        if set(body) != {"message", "errors"} or not body["errors"]:
            problems.append(f"400 body must be {{message, errors}}, got {body!r}")
        elif any(set(e) != {"type", "field", "message"} for e in body["errors"]):
            problems.append(f"400 errors must be {{type, field, message}}, got {body['errors']!r}")
    if isinstance(body, dict) and "detail" in body:
        problems.append(f"framework body leaked: {body!r}")
    if r.status_code == 200 and row.owners is not None:
        problems += _check_list(body, row, w, kind, db)
    return problems


def _check_list(body: dict[str, Any], row: Row, w: World, kind: str, db: Database) -> list[str]:
    problems: list[str] = []
    cred = w.creds[kind]
    assert cred is not None and row.owners is not None
    home = w.group_path(cred.group_id)
    if body.get("paging") != {}:
        problems.append(f"expected one complete page, got paging={body.get('paging')!r}")
    for item in body["data"]:
        foreign = [p for p in row.owners(item, w, db) if not p.startswith(home)]
        if foreign:
            problems.append(f"foreign object listed for {kind} (home {home}): {item!r} mentions {foreign}")
    if "total" in body and body["total"] != len(body["data"]):
        problems.append(f"total {body['total']} counts objects not listed ({len(body['data'])} listed)")
    return problems


def _check_csv(r: Response, row: Row, w: World, kind: str, db: Database) -> list[str]:
    """A CSV export (device queries): every row's `groupId` inside the caller's subtree."""
    cred = w.creds[kind]
    assert cred is not None and row.owners is not None
    home = w.group_path(cred.group_id)
    problems = []
    for item in csv.DictReader(io.StringIO(r.text)):
        foreign = [p for p in row.owners({"group": {"id": item["groupId"]}}, w, db) if not p.startswith(home)]
        if foreign:
            problems.append(f"foreign device exported for {kind} (home {home}): {item!r}")
    return problems


@pytest.mark.parametrize("row", MATRIX, ids=[r.id for r in MATRIX])
def test_route_answers_each_kind_of_caller_as_declared(
    client: TestClient, world: World, db: Database, row: Row
) -> None:
    """One row: every kind of caller gets its declared status and body; refused calls and reads
    change nothing in the database, accepted writes do."""
    problems: list[str] = []
    for kind in KINDS:
        wanted = row.status(kind)
        before = db_snapshot(db)
        r = _call(client, row, world, kind)
        if r.status_code != wanted:
            problems.append(f"{kind}: expected {wanted}, got {r.status_code} {r.text[:300]}")
            continue
        problems += [f"{kind}: {p}" for p in _check_shape(r, row, world, kind, db)]
        changed = db_snapshot(db) != before
        if r.status_code >= 300 or row.method == "GET" or row.read_only:
            if changed:
                problems.append(f"{kind}: a {r.status_code} answer to {row.method} changed the database")
        elif not changed:
            problems.append(f"{kind}: an accepted {row.method} changed nothing")
    assert not problems, "\n".join(problems)


def test_every_api_route_is_declared_in_the_matrix(client: TestClient) -> None:
    served = _served_routes(client)
    declared = {(r.method, r.template) for r in MATRIX}
    missing = sorted(served - declared)
    assert not missing, f"routes without a row in MATRIX (add them): {missing}"
    stale = sorted(declared - served)
    assert not stale, f"MATRIX rows for routes the app no longer serves: {stale}"


def test_matrix_rows_cover_every_kind_of_caller() -> None:
    for row in MATRIX:
        assert set(row.expect) == set(KINDS), row.id
        assert row.method in HTTP_METHODS, row.id
        if row.method in {"POST", "PUT"} and not row.template.endswith(
            ("renew-credential", "/restore", "/enable", "/downlink", "/sigfox-bridge")
        ):
            assert row.body is not None, f"{row.id}: writes need a body"


def test_basic_auth_and_bare_key_reach_every_read_route_alike(client: TestClient, world: World) -> None:
    """The same key presented either way gets the same answer on every GET row."""
    key = world.tenants.a_admin
    for row in (r for r in MATRIX if r.method == "GET"):
        basic = client.get(row.url(world), headers=key.basic)
        bare = client.get(row.url(world), headers=key.headers)
        assert basic.status_code == bare.status_code == 200, (row.id, basic.text, bare.text)
        if row.owners is not None and basic.headers["content-type"].startswith("text/csv"):  # device export
            assert basic.content == bare.content, row.id
        elif row.owners is not None:
            assert basic.json()["data"] == bare.json()["data"], row.id


BAD_AUTHORIZATIONS = {
    "basic-login-of-another-api-user": "Basic {other_id}:{secret}",
    "basic-empty-login": "Basic :{secret}",
    "basic-wrong-secret": "Basic {id}:wrong",
    "basic-without-colon": "Basic {id}{secret}",
    "basic-not-base64": "Basic !!not-base64!!",
    "bearer-scheme": "Bearer {secret}",
    "bare-wrong-key": "{secret}x",
    "bare-key-with-space": "{secret} {secret}",
    "empty-header": "",
}


def test_bad_credential_answers_401_with_basic_challenge_on_every_native_route(
    client: TestClient, world: World, db: Database
) -> None:
    key, other = world.tenants.a_admin, world.tenants.b_admin
    before = db_snapshot(db)
    problems = []
    for name, template in BAD_AUTHORIZATIONS.items():
        value = template.format(id=key.id, other_id=other.id, secret=key.secret)
        if value.startswith("Basic ") and "!!" not in value:
            value = "Basic " + base64.b64encode(value[6:].encode()).decode()
        for row in (r for r in MATRIX if _family(r.template) == NATIVE):
            body = row.body(world) if row.body else None
            r = client.request(row.method, row.url(world), headers={"authorization": value}, json=body)
            if (r.status_code, r.content, r.headers.get("www-authenticate")) != (401, b"", 'Basic realm="heron"'):
                problems.append(f"{name} on {row.id}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)
    assert db_snapshot(db) == before


def test_sibling_reference_to_foreign_object_is_indistinguishable_from_unknown_id(
    client: TestClient, world: World
) -> None:
    """A key of Customer B learns nothing by naming Customer A's objects: the same status and
    body as for an id that does not exist, in a body or in a path."""
    b = world.tenants.b_admin
    unknown = "999999"
    for template, make in CREATE_BODIES.items():
        foreign = client.post(template, json=make(world.params["customer_a"]), headers=b.headers)
        missing = client.post(template, json=make(unknown), headers=b.headers)
        assert foreign.status_code == 400, (template, foreign.text)
        assert foreign.json() == missing.json(), template
    for row in MATRIX:
        names = [
            n
            for n in ("group_id", "user_id", "api_user_id", "contract_id", "device_profile_id", "device_type_id")
            if "{" + n + "}" in row.template
        ]
        if not names:
            continue
        params = dict(world.params) | {names[0]: unknown}
        body = row.body(world) if row.body else None
        foreign = client.request(row.method, row.url(world), json=body, headers=b.headers)
        query = "?" + row.query.format(**params) if row.query else ""
        missing = client.request(row.method, row.template.format(**params) + query, json=body, headers=b.headers)
        assert foreign.status_code == missing.status_code == 404, (row.id, foreign.text, missing.text)
        assert foreign.json() == missing.json(), row.id


# -- station and bridge routes with foreign devices (issue 13) --------------------------------------
def test_station_and_bridge_routes_answer_a_foreign_device_as_an_unknown_id(
    client: TestClient, world: World, db: Database
) -> None:
    """Customer A's station (the ingest, the downlink long poll) and Customer A's Sigfox bridge
    take Customer B's device (and, for the bridge, a device of another device type) exactly as an
    id nobody holds: the same answers, counted alike, nothing stored."""
    with db.write() as s:
        station = world.params["station_id"]
        secret = stations.rotate_secret(s, SYSTEM, station)
        _view, bridge_secret = bridge.enable(s, SYSTEM, int(world.params["device_type_id"]))
    auth = {"authorization": "Basic " + base64.b64encode(f"{station}:{secret}".encode()).decode()}
    bridge_url = f"/bridge/sigfox/{world.params['device_type_id']}/{bridge_secret}"
    unknown = "FEED"
    with db.read() as s:
        messages_before = s.scalars(select(Message.id)).all()
    for foreign in (world.params["device_id_b"], world.params["device_id"]):  # B's; A's of another type
        answers = []
        for device in (foreign, unknown):
            reception = {"device": device, "seqNumber": 1, "data": "00"}
            ingest = client.post("/ingest/sigfox", json={"receptions": [reception]}, headers=auth)
            up = client.post(bridge_url, json={"device": device, "time": 0, "seqNumber": "1", "data": "00"})
            answers.append((ingest.status_code, ingest.content, up.status_code, up.content))
        assert answers[0] == answers[1] == (200, b'{"accepted":1}', 204, b""), foreign
    poll = client.get("/ingest/sigfox/downlinks", headers=auth)
    assert (poll.status_code, poll.json()) == (200, {"downlinks": []})
    with db.read() as s:
        assert s.scalars(select(Message.id)).all() == messages_before
        counted = s.execute(
            select(
                BaseStation.identifier, UndeliveredFrames.device, UndeliveredFrames.reason, UndeliveredFrames.frames
            ).join(BaseStation, BaseStation.id == UndeliveredFrames.station_id)
        ).all()
    by_station: dict[str, dict[str, tuple[str, int]]] = {}
    for ident, device, reason, n in counted:
        by_station.setdefault(ident, {})[device] = (reason, n)
    foreign_b = world.params["device_id_b"]
    assert by_station[station][foreign_b] == ("UNKNOWN", 1) and by_station[station][unknown] == ("UNKNOWN", 2)
    [bridged] = [ident for ident in by_station if ident != station]  # the bridge's virtual station
    assert by_station[bridged] == {
        foreign_b: ("UNKNOWN", 1),
        world.params["device_id"]: ("UNKNOWN", 1),
        unknown: ("UNKNOWN", 2),
    }
