"""The Senet onboarding API over HTTP: the seed's own curl examples (read from the seed file at
test time, with only the host, the key, the placeholders and the example reqId substituted),
answers compared field by field and message texts verbatim; then status codes, the job rules
(busy application, 15 minutes of status, another tenant's task), the token rule, the AppKey
second factor, binding, callbacks, and bad rows."""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select, update

from heron.config import Settings
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.jobs.models import Job
from heron.keys import Keyring
from heron.registry import registration_tokens
from heron.registry.models import Contract, Device, RegistrationToken
from heron.tenancy.access import SYSTEM
from tests.api.test_access_matrix import db_snapshot
from tests.conftest import TEST_KEK, Credential, Tenants, make_credential
from tests.registry.conftest import Api, contract_body, device_type_body, profile_body

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "004_0967c323645e9323.txt"
if not SEED.exists():  # the checkout may sit elsewhere; the seeds live beside it in /work/shared
    SEED = Path("/work/shared/seeds/004_0967c323645e9323.txt")
SENET_HOST = "https://api.senetco.io"
BASE = "http://testserver"
DEVICE = "/rest/integration/device"
APP_EUI = "00000000000100E0"  # the application of the seed's examples (update, status)
JOIN_EUI = "70B3D57ED0000001"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Job callbacks may reach the test's own HTTP server on loopback."""
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.1/32"})


# -- the seed's examples -------------------------------------------------------------------------
@dataclass
class Example:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    response: Any  # the "Response Example" that follows, parsed


def _json_after(lines: list[str], start: int) -> tuple[Any, int]:
    """The JSON block starting at the first line opening a brace after `start`."""
    i = start
    while not lines[i].strip().startswith("{"):
        i += 1
    text, depth = "", 0
    while True:
        text += lines[i] + "\n"
        depth += lines[i].count("{") - lines[i].count("}")
        i += 1
        if depth == 0:
            return json.loads(text), i


def seed_examples() -> dict[str, Example]:
    """Every curl example of the "Device Onboarding APIs" part, by the last path segment of
    its URL, with the response example after it."""
    lines = SEED.read_text().splitlines()
    start = lines.index("Device Onboarding APIs")
    out: dict[str, Example] = {}
    i = start
    while i < len(lines):
        line = lines[i].strip()
        if not line.startswith("curl "):
            i += 1
            continue
        args = shlex.split(line)
        headers, body, method, url = {}, None, None, ""
        j = 1
        while j < len(args):
            arg = args[j]
            if arg == "-H":
                name, _, value = args[j + 1].partition(":")
                headers[name.strip().lower()] = value.strip()
                j += 2
            elif arg == "-d":
                body = args[j + 1]
                j += 2
            elif arg == "-X":
                method = args[j + 1]
                j += 2
            elif arg.startswith("http"):
                url = arg
                j += 1
            else:
                j += 1  # --insecure
        k = i + 1
        while lines[k].strip() != "Response Example":
            k += 1
        response, i = _json_after(lines, k)
        name = url.split("?")[0].rsplit("/", 1)[1]
        out[name] = Example(method or ("POST" if body else "GET"), url, headers, body, response)
    return out


def test_the_seed_holds_the_six_onboarding_examples() -> None:
    assert set(seed_examples()) == {"register", "activate", "activateOne", "deactivate", "update", "status"}


# -- the world -----------------------------------------------------------------------------------
@dataclass
class App:
    client: TestClient
    db: Database
    tenants: Tenants
    key: Credential
    contract_id: str
    profile_id: str
    device_type_id: str

    def token(self, group_id: int | None = None) -> str:
        with self.db.write() as s:
            return registration_tokens.create(
                s, SYSTEM, group_id=group_id or self.tenants.customer_a, issued_to="Ada Lovelace"
            ).code

    def call(self, example: Example, **subs: str) -> Response:
        """Run a seed example with only the allowed substitutions."""
        url = example.url.replace(SENET_HOST, BASE)
        for placeholder, value in subs.items():
            url = url.replace(f"<{placeholder}>", value)
        assert "<" not in url, url
        headers = {k: (self.key.secret if v.startswith("<API") else v) for k, v in example.headers.items()}
        return self.client.request(example.method, url, headers=headers, content=example.body)

    def post(self, path: str, query: str = "", body: Any = None, key: Credential | None = None) -> Response:
        headers = (key or self.key).headers
        url = f"{DEVICE}/{path}" + (f"?{query}" if query else "")
        return self.client.post(url, json=body, headers=headers)

    def status(self, req_id: str, key: Credential | None = None) -> Response:
        return self.client.get(f"{DEVICE}/status", params={"reqId": req_id}, headers=(key or self.key).headers)

    def wait(self, answer: Response, key: Credential | None = None) -> dict[str, Any]:
        """The final status of the task an answer's statusUrl names."""
        assert answer.status_code == 200, answer.text
        req_id = answer.json()["statusUrl"].split("reqId=")[1]
        deadline = time.monotonic() + 30
        while True:
            r = self.status(req_id, key)
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["state"] in ("DONE_SUC", "DONE_FAIL"):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.02)

    def device(self, eui: str) -> dict[str, Any]:
        r = self.client.get(f"/api/v2/devices/{eui}", headers=self.key.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def tokens_in_use(self, contract_id: str | None = None) -> int:
        with self.db.read() as s:
            value = s.scalar(select(Contract.tokens_in_use).where(Contract.id == int(contract_id or self.contract_id)))
            assert value is not None
            return value


@pytest.fixture
def app(client: TestClient, db: Database, tenants: Tenants) -> App:
    api = Api(client, tenants.a_admin)
    cid = api.create("/contracts", contract_body(tenants.customer_a, name="Plan A", maxTokens=100))
    pid = api.create("/device-profiles", profile_body(tenants.customer_a))
    dt = api.create(
        "/device-types",
        device_type_body(
            tenants.customer_a, name="Meters", network="LORAWAN", appEui=APP_EUI, contractId=cid, profId=pid
        ),
    )
    return App(client, db, tenants, tenants.a_admin, cid, pid, dt)


def placeholders(app: App, token: str) -> dict[str, str]:
    return {
        "application": APP_EUI,
        "joinSvr": JOIN_EUI,
        "contract": app.contract_id,
        "devProfile": app.profile_id,
        "token": token,
    }


def status_url_matches(answer: Response, example: Example, prefix: str) -> str:
    """The answer is the example's `{"statusUrl"}` with the host and the reqId substituted."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == set(example.response) == {"statusUrl"}
    req_id = body["statusUrl"].split("reqId=")[1]
    assert re.fullmatch(prefix + r":[0-9A-F]{16}", req_id), req_id
    wanted = example.response["statusUrl"].replace(SENET_HOST, BASE)
    assert body["statusUrl"] == re.sub(r"reqId=.*$", f"reqId={req_id}", wanted)
    return str(req_id)


# -- the examples, in the order a customer runs them -------------------------------------------------
def test_seed_examples_register_activate_activate_one_deactivate_update_and_status(app: App) -> None:
    ex = seed_examples()
    subs = placeholders(app, app.token())

    registered = app.call(ex["register"], **subs)
    status_url_matches(registered, ex["register"], "DevMgmtJobReq")
    done = app.wait(registered)
    assert done == {
        "state": "DONE_SUC",
        "result": {
            "status": "Device registration on App EUI: 00000000000100E0 completed. "
            "Registered: 2 Updated: 0 Not Changed: 0 Errors: 0",
            "msgs": [],
            "stats": {"registered": 2, "updated": 0, "notChanged": 0, "errors": 0},
        },
        "pctDone": 100,
    }
    device = app.device("0A00000012000001")
    assert (device["lifecycle"], device["location"], device["tags"]) == (
        "REGISTERED",
        {"lat": 42.356959, "lng": -71.053271},
        "test1,test2",
    )
    assert app.tokens_in_use() == 0  # a LoRaWAN device takes its token on activation

    activated = app.call(ex["activate"], **(subs | {"token": app.token()}))
    status_url_matches(activated, ex["activate"], "DevMgmtJobReq")
    done = app.wait(activated)
    assert done["result"]["stats"] == {"activated": 2, "updated": 0, "notChanged": 0, "errors": 0}
    assert done["result"]["msgs"] == []  # the same AppKeys: nothing to report
    assert app.device("0A00000012000002")["lifecycle"] == "ACTIVE"
    assert app.tokens_in_use() == 2

    one = app.call(ex["activateOne"], **subs)
    assert one.status_code == 200, one.text
    assert one.json() == ex["activateOne"].response == {"message": "Device successfully activated"}
    assert app.device("0A00000012000002")["tags"] == "test1,test2"

    deactivated = app.call(ex["deactivate"], **subs)
    status_url_matches(deactivated, ex["deactivate"], "DevMgmtJobReq")
    done = app.wait(deactivated)
    assert done["result"] == {
        "status": "Device deactivation on App EUI: 00000000000100E0 completed. Deactivated: 2 Not Changed: 0 Errors: 0",
        "msgs": [],
        "stats": {"deactivated": 2, "notChanged": 0, "errors": 0},
    }
    assert app.device("0A00000012000001")["lifecycle"] == "DEACTIVATED"
    assert app.tokens_in_use() == 0  # never heard: the tokens went back

    # The update example names devices of its own; they are registered first.
    rows = [{"devEui": "123000000000ABC0", "appKey": "123AAAAAAAAAAAAAAAA000000000ABC0"}]
    rows.append({"devEui": "123000000000ABC1", "appKey": "123AAAAAAAAAAAAAAAA000000000ABC1", "tags": "old"})
    app.wait(app.post("register", f"token={app.token()}&appEui={APP_EUI}", {"data": rows}))
    updated = app.call(ex["update"])
    status_url_matches(updated, ex["update"], "DevUpdateJobReq")
    done = app.wait(updated)
    assert done["result"]["stats"] == {"updated": 2, "notChanged": 0, "errors": 0}
    first, second = app.device("123000000000ABC0"), app.device("123000000000ABC1")
    assert (first["location"], first["tags"]) == ({"lat": 43.0775992, "lng": -70.7596765}, "tag1,tag2")
    assert (second["location"], second["tags"]) == ({"lat": 40.7484445, "lng": -73.9878584}, "old,tag1")


def test_seed_status_example_answers_exactly_the_seed_response(app: App) -> None:
    """The seed's status example: an activation of a device never registered."""
    ex = seed_examples()["status"]
    answer = app.post("activate", f"appEui={APP_EUI}", {"data": [{"devEui": "1230000000000ABC"}]})
    req_id = answer.json()["statusUrl"].split("reqId=")[1]
    app.wait(answer)
    example_req_id = re.search(r"reqId=(\S+)", ex.url)
    assert example_req_id is not None
    r = app.client.get(
        ex.url.replace(SENET_HOST, BASE).replace(example_req_id.group(1), req_id),
        headers={k: (app.key.secret if v.startswith("<API") else v) for k, v in ex.headers.items()},
    )
    assert r.status_code == 200, r.text
    assert r.json() == ex.response
    assert r.json()["result"]["msgs"] == [
        "DevEUI: 1230000000000ABC has not been registered. The device cannot be activated on JoinEUI: 00000000000100E0."
    ]


# -- status codes of the Senet column ----------------------------------------------------------------------
def test_status_codes_no_key_403_bad_reqid_400_unknown_404_other_tenant_403(app: App) -> None:
    no_key = app.client.get(f"{DEVICE}/status", params={"reqId": "DevMgmtJobReq:00000000000100E0"})
    assert no_key.status_code == 403 and set(no_key.json()) == {"message"}
    for bad in ({}, {"reqId": ""}, {"reqId": "nonsense"}, {"reqId": "DevMgmtJobReq:XYZ"}):
        r = app.client.get(f"{DEVICE}/status", params=bad, headers=app.key.headers)
        assert r.status_code == 400 and "reqId" in r.json()["message"], (bad, r.text)
    unknown = app.status("DevMgmtJobReq:00000000000100E0")
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "No task could be found with the requested reqId."}
    answer = app.post("deactivate", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001"}]})
    req_id = answer.json()["statusUrl"].split("reqId=")[1]
    app.wait(answer)
    other = app.status(req_id, key=app.tenants.b_admin)
    assert other.status_code == 403
    assert other.json() == {"message": "The API key is not authorized to get the status of the task."}
    assert app.status(req_id, key=app.tenants.a_reader).status_code == 200  # a reader of the group may


def test_status_answers_for_15_minutes_after_the_end_then_404(app: App) -> None:
    answer = app.post("deactivate", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001"}]})
    req_id = answer.json()["statusUrl"].split("reqId=")[1]
    app.wait(answer)
    with app.db.write() as s:
        s.execute(update(Job).where(Job.req_id == req_id).values(ended_at=utcnow() - timedelta(minutes=14)))
    assert app.status(req_id).status_code == 200
    with app.db.write() as s:
        s.execute(update(Job).where(Job.req_id == req_id).values(ended_at=utcnow() - timedelta(minutes=16)))
    assert app.status(req_id).status_code == 404


def test_a_call_while_a_job_runs_for_the_application_is_400_naming_the_job(app: App) -> None:
    app.client.app.state.ctx.jobs.stop()  # type: ignore[attr-defined]
    first = app.post("deactivate", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001"}]})
    req_id = first.json()["statusUrl"].split("reqId=")[1]
    token = app.token()
    before = db_snapshot(app.db)
    for path, query in (
        ("register", f"appEui={APP_EUI}&token={token}"),
        ("activate", f"appEui={APP_EUI}"),
        ("deactivate", f"appEui={APP_EUI}"),
        ("update", f"appEui={APP_EUI}"),
        ("activateOne", f"appEui={APP_EUI}&devEui=0A00000012000001"),
    ):
        body = {"data": [{"devEui": "0A00000012000001", "appKey": "0ABCDEF0120000010A00000012000001"}]}
        r = app.post(path, query, None if path == "activateOne" else body)
        assert r.status_code == 400, (path, r.text)
        assert req_id in r.json()["message"] and set(r.json()) == {"message"}, r.text
    assert db_snapshot(app.db) == before  # the token was not used up either
    app.client.app.state.ctx.jobs.start()  # type: ignore[attr-defined]
    assert app.status(req_id).json()["state"] in ("INITIAL", "QUEUED", "RUNNING", "DONE_SUC")


# -- registration tokens -----------------------------------------------------------------------------------
def _register(app: App, token: str, rows: list[dict[str, Any]], key: Credential | None = None) -> Response:
    return app.post("register", f"appEui={APP_EUI}&token={token}", {"data": rows}, key=key)


ROW = {"devEui": "0A00000012000009", "appKey": "0ABCDEF0120000010A00000012000009"}


def test_register_needs_a_live_token_of_the_application_group_used_once(app: App) -> None:
    missing = app.post("register", f"appEui={APP_EUI}", {"data": [ROW]})
    assert missing.status_code == 400 and "token" in missing.json()["message"]
    malformed = _register(app, "12345", [ROW])
    assert malformed.status_code == 400 and "token" in malformed.json()["message"]
    wrong = _register(app, "000000" if app.token() != "000000" else "111111", [ROW])
    assert wrong.status_code == 400 and "token" in wrong.json()["message"]
    sibling = _register(app, app.token(group_id=app.tenants.customer_b), [ROW])
    assert sibling.status_code == 400, "a token of another group does not open this application"
    parent = app.token(group_id=app.tenants.operator)
    assert app.wait(_register(app, parent, [ROW]))["result"]["stats"]["registered"] == 1  # an ancestor's token
    reused = _register(app, parent, [ROW | {"devEui": "0A0000001200000A"}])
    assert reused.status_code == 400 and "token" in reused.json()["message"]
    expired = app.token()
    with app.db.write() as s:
        s.execute(update(RegistrationToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _register(app, expired, [ROW | {"devEui": "0A0000001200000B"}]).status_code == 400


def test_a_token_used_by_two_concurrent_calls_serves_only_one(app: App) -> None:
    token = app.token()
    answers: list[int] = []

    def call(n: int) -> None:
        answers.append(_register(app, token, [ROW | {"devEui": f"0A00000012{n:06X}"}]).status_code)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] + [400] * 5


def test_no_api_route_mints_a_registration_token(client: TestClient) -> None:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert not [p for p in paths if "token" in p.lower() and "registration" in p.lower()]


# -- the AppKey second factor, masked messages -------------------------------------------------------------------
def test_activate_changes_an_app_key_only_with_a_token_and_masks_both_keys(app: App) -> None:
    app.wait(_register(app, app.token(), [{"devEui": "123000000000ABC0", "appKey": "1" * 28 + "AAA0"}]))
    new_key = "123AAAAAAAAAAAAAAAA000000000ABC0"
    row = {"devEui": "123000000000ABC0", "appKey": new_key}
    refused = app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": [row]}))
    assert refused["result"]["stats"] == {"activated": 0, "updated": 0, "notChanged": 0, "errors": 1}
    assert refused["result"]["msgs"] == [
        "The AppKey for DevEUI: 123000000000ABC0 cannot be changed without a registration token (token parameter)."
    ]
    assert app.device("123000000000ABC0")["lifecycle"] == "REGISTERED"  # nothing half-written
    done = app.wait(app.post("activate", f"appEui={APP_EUI}&token={app.token()}", {"data": [row]}))
    assert done["result"]["stats"] == {"activated": 1, "updated": 0, "notChanged": 0, "errors": 0}
    assert done["result"]["msgs"] == [
        "The AppKey for DevEUI: 123000000000ABC0 has been updated. Old AppKey: ****AAA0 New AppKey: ****ABC0."
    ]
    with app.db.read() as s:
        sealed = s.scalar(select(Device.app_key).where(Device.identifier == "123000000000ABC0"))
    assert sealed is not None and Keyring.parse(TEST_KEK).decrypt(sealed, "devices.app_key").decode() == new_key
    # Once active, a new key counts as updated.
    row2 = {"devEui": "123000000000ABC0", "appKey": "2" * 32}
    again = app.wait(app.post("activate", f"appEui={APP_EUI}&token={app.token()}", {"data": [row2]}))
    assert again["result"]["stats"]["updated"] == 1
    assert again["result"]["msgs"] == [
        "The AppKey for DevEUI: 123000000000ABC0 has been updated. Old AppKey: ****ABC0 New AppKey: ****2222."
    ]


def test_no_root_key_in_clear_in_jobs_or_messages(app: App) -> None:
    key = "C0FFEE00C0FFEE00C0FFEE00C0FFEE01"
    app.wait(_register(app, app.token(), [{"devEui": "123000000000ABC5", "appKey": key}]))
    app.wait(_register(app, app.token(), [{"devEui": "123000000000ABC5", "appKey": "D" * 32}]))
    dumped = json.dumps(db_snapshot(app.db), default=str)
    assert key not in dumped and key.lower() not in dumped and "D" * 32 not in dumped


# -- the token rule ----------------------------------------------------------------------------------------------
def test_activation_takes_tokens_on_the_named_contract_and_fails_rows_naming_it_when_none_left(app: App) -> None:
    api = Api(app.client, app.key)
    small = api.create("/contracts", contract_body(app.tenants.customer_a, name="Small plan", maxTokens=2))
    r = api.put(f"/device-types/{app.device_type_id}", {"contracts": [{"id": app.contract_id}, {"id": small}]})
    assert r.status_code == 204, r.text
    rows = [{"devEui": f"0B000000000000{n:02X}", "appKey": "AB" * 16} for n in range(4)]
    app.wait(_register(app, app.token(), rows))
    done = app.wait(app.post("activate", f"appEui={APP_EUI}&contractId={small}", {"data": rows}))
    assert done["result"]["stats"] == {"activated": 2, "updated": 0, "notChanged": 0, "errors": 2}
    assert done["result"]["msgs"] == [
        f"DevEUI: 0B00000000000002 cannot be activated: contract 'Small plan' (id {small}) has no token left.",
        f"DevEUI: 0B00000000000003 cannot be activated: contract 'Small plan' (id {small}) has no token left.",
    ]
    assert (app.tokens_in_use(small), app.tokens_in_use()) == (2, 0)
    assert [app.device(r["devEui"])["lifecycle"] for r in rows] == ["ACTIVE", "ACTIVE", "REGISTERED", "REGISTERED"]
    # Without contractId: the application's default contract.
    rest = app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": rows[2:]}))
    assert rest["result"]["stats"]["activated"] == 2 and app.tokens_in_use() == 2
    # A contract that is not one of the application's is refused for the call.
    foreign = api.create("/contracts", contract_body(app.tenants.customer_a, name="Other", maxTokens=5))
    r = app.post("activate", f"appEui={APP_EUI}&contractId={foreign}", {"data": rows})
    assert r.status_code == 400 and "contractId" in r.json()["message"]


def test_the_contract_named_at_registration_is_taken_on_activation(app: App) -> None:
    api = Api(app.client, app.key)
    second = api.create("/contracts", contract_body(app.tenants.customer_a, name="Second", maxTokens=5))
    api.put(f"/device-types/{app.device_type_id}", {"contracts": [{"id": app.contract_id}, {"id": second}]})
    row = {"devEui": "0C00000000000001", "appKey": "AB" * 16}
    app.wait(app.post("register", f"appEui={APP_EUI}&token={app.token()}&contractId={second}", {"data": [row]}))
    app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": [{"devEui": row["devEui"]}]}))
    assert app.device(row["devEui"])["contract"]["id"] == second and app.tokens_in_use(second) == 1


def test_a_deactivated_device_that_was_heard_keeps_its_token_and_reactivates_without_a_new_one(app: App) -> None:
    rows = [{"devEui": "0D00000000000001", "appKey": "AB" * 16}, {"devEui": "0D00000000000002", "appKey": "AB" * 16}]
    app.wait(_register(app, app.token(), rows))
    app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": rows}))
    with app.db.write() as s:  # the network server heard the first one
        s.execute(update(Device).where(Device.identifier == "0D00000000000001").values(last_seen_at=utcnow()))
    done = app.wait(app.post("deactivate", f"appEui={APP_EUI}", {"data": [*rows, {"devEui": "0D00000000000003"}]}))
    assert done["result"]["stats"] == {"deactivated": 2, "notChanged": 0, "errors": 1}
    assert done["result"]["msgs"] == [
        "DevEUI: 0D00000000000003 has not been registered. The device cannot be deactivated."
    ]
    assert app.tokens_in_use() == 1
    assert app.device("0D00000000000001")["token"]["state"] == 0  # still holds it: billable
    again = app.wait(app.post("deactivate", f"appEui={APP_EUI}", {"data": rows[:1]}))
    assert again["result"]["stats"]["notChanged"] == 1
    back = app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": rows}))
    assert back["result"]["stats"]["activated"] == 2 and app.tokens_in_use() == 2


# -- binding ------------------------------------------------------------------------------------------------------
def test_calls_without_app_eui_use_the_bound_application_else_400_naming_app_eui(app: App) -> None:
    unbound = app.post("deactivate", "", {"data": [{"devEui": "0A00000012000001"}]})
    assert unbound.status_code == 400 and "appEui" in unbound.json()["message"]
    created = app.client.post(
        "/api/v2/api-users",
        json={
            "groupId": str(app.tenants.customer_a),
            "name": "bound",
            "timezone": "UTC",
            "profileIds": ["DEVICE_MANAGER_W"],
            "deviceTypeId": app.device_type_id,
        },
        headers=app.key.headers,
    )
    assert created.status_code == 201, created.text
    bound = Credential(created.json()["id"], created.json()["accessToken"], app.tenants.customer_a)
    got = app.client.get(f"/api/v2/api-users/{bound.id}", headers=app.key.headers).json()
    assert got["deviceTypeId"] == app.device_type_id
    done = app.wait(app.post("deactivate", "", {"data": [{"devEui": "0A00000012000001"}]}, key=bound), key=bound)
    assert done["result"]["status"].startswith(f"Device deactivation on App EUI: {APP_EUI} completed.")
    r = app.client.put(f"/api/v2/api-users/{bound.id}", json={"deviceTypeId": None}, headers=app.key.headers)
    assert r.status_code == 204
    assert app.post("deactivate", "", {"data": [{"devEui": "0A00000012000001"}]}, key=bound).status_code == 400


def test_binding_refuses_sigfox_types_foreign_types_and_types_outside_the_key_group(app: App) -> None:
    api = Api(app.client, app.key)
    sigfox = api.create("/device-types", device_type_body(app.tenants.customer_a, name="Sigfox"))
    site_key = make_credential(app.db, app.tenants.site_a, "DEVICE_MANAGER_W")
    b_type = Api(app.client, app.tenants.b_admin).create(
        "/device-types",
        device_type_body(app.tenants.customer_b, name="B", network="LORAWAN", appEui="00000000000200E0"),
    )
    for key_id, dt in ((None, sigfox), (None, b_type), (site_key.id, app.device_type_id), (None, "999999")):
        if key_id is None:
            r = app.client.post(
                "/api/v2/api-users",
                json={
                    "groupId": str(app.tenants.customer_a),
                    "name": "k",
                    "timezone": "UTC",
                    "profileIds": ["OBSERVER"],
                    "deviceTypeId": dt,
                },
                headers=app.key.headers,
            )
        else:  # the application sits above the key's own group
            r = app.client.put(f"/api/v2/api-users/{key_id}", json={"deviceTypeId": dt}, headers=app.key.headers)
        assert r.status_code == 400, (dt, r.text)
        assert r.json()["errors"][0]["field"] == "deviceTypeId"


# -- permissions ------------------------------------------------------------------------------------------------------
def test_reader_gets_403_and_other_tenant_gets_the_unknown_application_400(app: App) -> None:
    body = {"data": [{"devEui": "0A00000012000001"}]}
    before = db_snapshot(app.db)
    reader = app.post("deactivate", f"appEui={APP_EUI}", body, key=app.tenants.a_reader)
    assert reader.status_code == 403 and set(reader.json()) == {"message"}
    foreign = app.post("deactivate", f"appEui={APP_EUI}", body, key=app.tenants.b_admin)
    unknown = app.post("deactivate", "appEui=0000000000FFFFFF", body)
    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json() == unknown.json() == {"message": "Invalid parameter: appEui (no such application)"}
    assert db_snapshot(app.db) == before


# -- callbacks --------------------------------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    got: list[tuple[dict[str, str], dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/endpoint", got
    server.shutdown()


def test_the_callback_gets_the_final_status_with_its_headers(
    app: App, receiver: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]
) -> None:
    url, got = receiver
    body = {
        "data": [{"devEui": "0A00000012000001"}],
        "callback": {"url": url, "headers": {"X-API-Key": "123456789abcdef"}},
    }
    done = app.wait(app.post("deactivate", f"appEui={APP_EUI}", body))
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    headers, posted = got[0]
    assert headers["x-api-key"] == "123456789abcdef"
    assert posted["state"] == "DONE_SUC" and posted["result"] == done["result"] and posted["pctDone"] == 100


# -- bad rows --------------------------------------------------------------------------------------------------------
def test_bad_rows_each_get_a_message_valid_rows_proceed_and_stats_count_errors(app: App) -> None:
    rows: list[Any] = [
        {"devEui": "0E00000000000001", "appKey": "AB" * 16, "lat": 45.5, "lng": -73.5, "tags": "a;b"},
        {"devEui": "0E0000000000ZZ02", "appKey": "AB" * 16},
        {"devEui": "0E00000000000001", "appKey": "CD" * 16},
        {"devEui": "0E00000000000003", "appKey": "AB" * 15},
        {"devEui": "0E00000000000004", "appKey": "AB" * 16, "lat": 91},
        {"devEui": "0E00000000000005", "appKey": "AB" * 16, "lng": -180.5},
        {"devEui": "0E00000000000006"},
        "not an object",
        {"appKey": "AB" * 16},
        {"devEui": "0e00000000000007", "appKey": "ab" * 16, "devType": "WATER_SENSOR"},
    ]
    done = app.wait(_register(app, app.token(), rows))
    assert done["state"] == "DONE_SUC"
    assert done["result"]["stats"] == {"registered": 2, "updated": 0, "notChanged": 0, "errors": 8}
    assert done["result"]["msgs"] == [
        'Row 2: devEui must be 16 hex digits (an EUI-64), got "0E0000000000ZZ02".',
        "DevEUI: 0E00000000000001 appears more than once in the request; its first row is used.",
        "The AppKey for DevEUI: 0E00000000000003 must be 32 hex digits (an AES-128 key).",
        "DevEUI: 0E00000000000004: lat must be a number from -90 to 90.",
        "DevEUI: 0E00000000000005: lng must be a number from -180 to 180.",
        "The AppKey for DevEUI: 0E00000000000006 is missing (32 hex digits).",
        "Row 8: must be a JSON object with a devEui.",
        "Row 9: devEui must be 16 hex digits (an EUI-64), got missing.",
    ]
    good = app.device("0E00000000000001")
    assert (good["location"], good["tags"]) == ({"lat": 45.5, "lng": -73.5}, "a,b")
    assert app.device("0E00000000000007")["lifecycle"] == "REGISTERED"
    with app.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == 2  # nothing of the bad rows
    # Registering again: the same key is "not changed"; a device of another application is refused.
    other = Api(app.client, app.key).create(
        "/device-types",
        device_type_body(app.tenants.customer_a, name="Other app", network="LORAWAN", appEui="00000000000300E0"),
    )
    again = app.wait(_register(app, app.token(), rows[:1]))
    assert again["result"]["stats"]["notChanged"] == 1
    elsewhere = app.post("register", f"appEui=00000000000300E0&token={app.token()}", {"data": rows[:1]})
    assert other and app.wait(elsewhere)["result"]["msgs"] == [
        "DevEUI: 0E00000000000001 is already registered on AppEUI: 00000000000100E0. "
        "The device cannot be registered on AppEUI: 00000000000300E0."
    ]


def test_bad_call_parameters_are_400_naming_the_parameter_and_change_nothing(app: App) -> None:
    body = {"data": [{"devEui": "0A00000012000001"}]}
    cases = [
        ("activate", "appEui=XYZ", body, "appEui"),
        ("activate", f"appEui={APP_EUI}&joinEui=12", body, "joinEui"),
        ("activate", f"appEui={APP_EUI}&contractId=abc", body, "contractId"),
        ("activate", f"appEui={APP_EUI}&contractId=999999", body, "contractId"),
        ("activate", f"appEui={APP_EUI}&contractId={'9' * 5000}", body, "contractId"),
        ("activate", f"appEui={APP_EUI}&profId=999999", body, "profId"),
        ("activate", f"appEui={APP_EUI}", {"data": []}, "data"),
        ("activate", f"appEui={APP_EUI}", None, "body"),
        ("activate", f"appEui={APP_EUI}", {"data": [], "bogus": 1}, "bogus"),
        ("activate", f"appEui={APP_EUI}", body | {"callback": {"url": "ftp://x"}}, "callback.url"),
        ("activate", f"appEui={APP_EUI}", body | {"callback": {"url": "http://10.0.0.5/s"}}, "callback.url"),
        (
            "activate",
            f"appEui={APP_EUI}",
            body | {"callback": {"url": "http://[::ffff:169.254.169.254]/"}},
            "callback.url",
        ),
        (
            "activate",
            f"appEui={APP_EUI}",
            body | {"callback": {"url": "http://x", "headers": {"a b": "1"}}},
            "callback",
        ),
        (
            "activate",
            f"appEui={APP_EUI}",
            body | {"callback": {"url": "http://x", "headers": {"X": "1\r\nY: 2"}}},
            "callback",
        ),
        ("update", "", body, "appEui"),
        ("update", f"appEui={APP_EUI}&tags=a", body, "tagsOperation"),
        ("update", f"appEui={APP_EUI}&tagsOperation=MERGE", body, "tagsOperation"),
        ("activateOne", f"appEui={APP_EUI}", None, "devEui"),
        ("activateOne", f"appEui={APP_EUI}&devEui=0A00000012000001&lat=north", None, "lat"),
    ]
    before = db_snapshot(app.db)
    problems = []
    for path, query, payload, name in cases:
        r = app.post(path, query, payload)
        if r.status_code != 400 or set(r.json()) != {"message"} or name not in r.json()["message"]:
            problems.append(f"{path}?{query}: {r.status_code} {r.text}")
    assert not problems, "\n".join(problems)
    assert db_snapshot(app.db) == before


def test_activate_one_answers_404_for_an_unknown_device_and_400_with_the_row_message(app: App) -> None:
    r = app.post("activateOne", f"appEui={APP_EUI}&devEui=0F00000000000001")
    assert r.status_code == 404 and r.json() == {"message": "Device EUI was not found"}
    api = Api(app.client, app.key)
    empty = api.create("/contracts", contract_body(app.tenants.customer_a, name="Empty plan", maxTokens=1))
    api.put(f"/device-types/{app.device_type_id}", {"contracts": [{"id": app.contract_id}, {"id": empty}]})
    rows = [{"devEui": f"0F0000000000000{n}", "appKey": "AB" * 16} for n in (2, 3)]
    app.wait(_register(app, app.token(), rows))
    ok = app.post("activateOne", f"appEui={APP_EUI}&devEui=0F00000000000002&contractId={empty}&lat=1.5&lng=2.5")
    assert ok.status_code == 200 and ok.json() == {"message": "Device successfully activated"}
    assert app.device("0F00000000000002")["location"] == {"lat": 1.5, "lng": 2.5}
    full = app.post("activateOne", f"appEui={APP_EUI}&devEui=0F00000000000003&contractId={empty}")
    assert full.status_code == 400
    assert full.json() == {
        "message": "DevEUI: 0F00000000000003 cannot be activated: "
        f"contract 'Empty plan' (id {empty}) has no token left."
    }


def test_update_tags_operations_append_replace_delete(app: App) -> None:
    app.wait(_register(app, app.token(), [{"devEui": "1000000000000001", "appKey": "AB" * 16, "tags": "a,b"}]))
    eui = "1000000000000001"

    def update_tags(op: str, tags: str) -> str:
        done = app.wait(
            app.post("update", f"appEui={APP_EUI}&tagsOperation={op}&tags={tags}", {"data": [{"devEui": eui}]})
        )
        assert done["state"] == "DONE_SUC"
        value: str = app.device(eui)["tags"]
        return value

    assert update_tags("APPEND", "c") == "a,b,c"
    assert update_tags("DELETE", "a") == "b,c"
    assert update_tags("REPLACE", "x;y") == "x,y"
    same = app.wait(app.post("update", f"appEui={APP_EUI}&tagsOperation=APPEND&tags=x", {"data": [{"devEui": eui}]}))
    assert same["result"]["stats"] == {"updated": 0, "notChanged": 1, "errors": 0}


def test_malformed_bodies_are_400_naming_the_body_and_403_without_a_key(app: App) -> None:
    before = db_snapshot(app.db)
    for path in ("register", "activate", "deactivate", "update"):
        url = f"{DEVICE}/{path}?appEui={APP_EUI}"
        for content in (b'{"data": [', b"[1, 2]", b'"x"', b"", b'{"data": "x"}'):
            h = app.key.headers | {"content-type": "application/json"}
            r = app.client.post(url, content=content, headers=h)
            assert r.status_code == 400 and set(r.json()) == {"message"}, (path, content, r.text)
            assert r.json()["message"].startswith("Invalid parameter: "), r.text
            anonymous = app.client.post(url, content=content, headers={"content-type": "application/json"})
            assert anonymous.status_code == 403 and set(anonymous.json()) == {"message"}, (path, content)
    assert db_snapshot(app.db) == before
