"""A Sigfox API v2 client generated from Sigfox's own Swagger 2.0 document
(`../shared/reference/sigfox-api-v2.openapi.json`) by bravado, run against a real Heron served
over HTTP on a loopback port with only its base URL changed. bravado checks every request it sends
and every answer it gets against the document (status code, names, types, required fields): a
Heron answer of the wrong shape fails here even where Heron's own tests agree with Heron. The
document is amended in memory only for its own defects (`_spec_defects_patched`) and for Heron's
documented departures from it (`_documented_differences`), each named where it is made.

The scenario is what a Sigfox customer's program does: a group, a device type with `contracts`,
a URL callback, devices one by one and in bulk, messages paged both ways, locations, and
unsubscription one by one and in bulk. Heron's own additions that the document has no operation
for (contracts, base stations, the station ingest) are set up with plain HTTP calls."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from bravado.client import SwaggerClient
from bravado.exception import HTTPNotFound
from bravado.requests_client import RequestsClient
from bravado_core.validate import validate_object

from heron.config import Settings
from heron.db.engine import Database
from tests.conftest import Tenants, make_credential
from tests.delivery.test_outbox import Receiver, receiver
from tests.network.sigfox.test_ingest import Station
from tests.network.sigfox.test_simulator import server
from tests.support.sigfox_openapi import spec_path

__all__ = ["receiver", "server"]  # fixtures imported for this module's tests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PAC = "0123456789ABCDEF"
DEVICE = "C0A1"  # registered alone; its frames are the ones paged
BULK = ["C0B1", "C0B2", "C0B3"]  # registered by a bulk job
FRAMES = 7  # one more than two pages of 3: the last page is short
PAGE = 3
STATIONS = [("B5A1", 45.00, 4.00), ("B5A2", 45.10, 4.10), ("B5A3", 45.05, 4.20)]
DAY_MS = 86_400_000


def _spec_defects_patched(spec: dict[str, Any]) -> dict[str, Any]:
    """The document with the defects that break any Swagger 2.0 client, whatever the server,
    repaired; nothing here hides a shape Heron answers with."""
    spec = copy.deepcopy(spec)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            # Defect: the polymorphic schemas (callback, createCallback, updateCallback, group,
            # commonGroupCreate, ...) name a `discriminator` whose values ("URL", 0, ...) are not
            # definition names, as Swagger 2.0 requires, and is not always a required property:
            # the document fails validation and every polymorphic answer with it. Without the
            # discriminator the base schema is checked; the test checks callbacks against their
            # channel's schema (urlCallback) itself.
            node.pop("discriminator", None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return spec


# A number written as a string, as in "-133.00".
DECIMAL_STRING = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}


def _documented_differences(spec: dict[str, Any]) -> dict[str, Any]:
    """The document, amended for Heron's deliberate and documented departures from it (api.md),
    so that the test checks Heron keeps to what it documents instead."""
    definitions = spec["definitions"]
    # api.md, "Message object": deployed Sigfox servers send rssi, snr, lat and lng of `rinfos` as
    # strings ("-133.00") although the document types them as numbers, and Heron sends the same.
    for name in ("rssi", "snr", "lat", "lng"):
        definitions["rinfo"]["properties"][name] = dict(DECIMAL_STRING)
    # api.md, "Device object": the PAC (a device's ownership secret) is shown only by the
    # single-device GET, to callers with write rights; `device` requires it everywhere, so device
    # lists answer with `device` minus that requirement (getDevice is still checked for it).
    listed = copy.deepcopy(definitions["device"])
    for part in listed["allOf"]:
        if "pac" in part.get("required", []):
            part["required"] = [r for r in part["required"] if r != "pac"]
    definitions["listedDevice"] = listed
    answer = spec["paths"]["/devices/"]["get"]["responses"]["200"]["schema"]
    answer["properties"]["data"]["items"] = {"$ref": "#/definitions/listedDevice"}
    return spec


class Sigfox:
    """The generated client as a customer's program holds it: one call per operation of the
    document, each returning the answer's (validated) body."""

    def __init__(self, base_url: str, login: str, password: str) -> None:
        http = RequestsClient()
        http.set_basic_auth(urlsplit(base_url).netloc, login, password)  # host:port
        path = spec_path()
        document = json.loads(path.read_text())
        self.client = SwaggerClient.from_spec(
            _documented_differences(_spec_defects_patched(document)),
            origin_url=path.as_uri(),
            http_client=http,
            config={
                "validate_swagger_spec": True,
                "validate_requests": True,
                "validate_responses": True,
                "use_models": False,
                # Several answers are `allOf` schemas without a `type` (device, deviceType,
                # group): without this bravado checks none of their fields.
                "default_type_to_object": True,
                "include_missing_properties": False,  # absent stays absent (not None)
            },
        )
        # The only change: the document says https://api.sigfox.com/v2.
        assert self.client.swagger_spec.api_url == "https://api.sigfox.com/v2"
        self.client.swagger_spec.api_url = base_url
        self.spec = self.client.swagger_spec

    def __call__(self, resource: str, operation: str, **params: Any) -> tuple[int, Any]:
        """(status, body) of one operation; an answer the document does not allow raises."""
        future = getattr(getattr(self.client, resource), operation)(**params)
        answer = future.response(timeout=30)
        return answer.incoming_response.status_code, answer.result

    def check(self, definition: str, value: Any) -> None:
        """`value` against one definition of the document (for the polymorphic ones)."""
        validate_object(self.spec, self.spec.spec_dict["definitions"][definition], value)

    def query_of(self, next_url: str) -> dict[str, Any]:
        """A `paging.next` URL as the operation's parameters, the way a generated client follows it."""
        assert next_url.startswith(self.spec.api_url + "/"), next_url
        return dict(parse_qsl(urlsplit(next_url).query))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback opened for the callback receiver; a short dedup window so callbacks go out fast."""
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.0/8", "dedup_window_seconds": 0.2})


@pytest.fixture
def spec_document() -> Path:
    path = spec_path()
    logging.getLogger("bravado_core.model").setLevel(logging.ERROR)  # its duplicate-model notices
    return path


def wait_for(what: str, probe: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(sigfox: Sigfox, status_operation: str, job_id: str) -> Any:
    """A bulk job's status once `jobDone`, polled with the document's status operation."""

    def probe() -> Any:
        status, body = sigfox("Devices", status_operation, jobId=job_id)
        assert status == 200
        return body if body["jobDone"] else None

    return wait_for(f"job {job_id} ({status_operation})", probe)


def test_a_client_generated_from_the_sigfox_document_runs_against_heron_with_only_the_base_url_changed(
    spec_document: Path, server: str, db: Database, tenants: Tenants, receiver: Receiver
) -> None:
    # -- the operator's side, Heron's additions (plain HTTP): a contract allocated to customer A,
    # and stations
    operator = httpx.Client(base_url=server + "/api/v2", headers=tenants.root_admin.basic, timeout=30)
    r = operator.post(
        "/contracts",
        json={"name": "Conformance plan", "groupId": str(tenants.operator), "maxTokens": 50, "bidir": True},
    )
    assert r.status_code == 201, r.text
    contract_id = r.json()["id"]
    r = operator.put(
        f"/contracts/{contract_id}/allocations",
        json={"allocations": [{"groupId": str(tenants.customer_a), "maxTokens": 20}]},
    )
    assert r.status_code == 204, r.text
    stations = []
    for ident, lat, lng in STATIONS:
        r = operator.post(
            "/base-stations",
            json={"id": ident, "groupId": str(tenants.operator), "name": f"Mast {ident}", "lat": lat, "lng": lng},
        )
        assert r.status_code == 201, r.text
        stations.append(Station(r.json()["id"], r.json()["secret"]))

    # -- the customer's program: an API user of customer A, the generated client
    cred = make_credential(db, tenants.customer_a, "LIMITED_ADMIN")
    sigfox = Sigfox(server + "/api/v2", cred.id, cred.secret)

    # Group
    status, body = sigfox(
        "Groups",
        "createGroup",
        group={
            "name": "Conformance site",
            "description": "made by a generated client",
            "type": 2,
            "timezone": "Europe/Paris",
            "parentId": str(tenants.customer_a),
        },
    )
    assert status == 201
    group_id = body["id"]
    status, group = sigfox("Groups", "getGroup", id=group_id)
    assert status == 200 and group["name"] == "Conformance site" and group["type"] == 2
    assert [p["id"] for p in group["path"]][-1] == str(tenants.customer_a)

    # Contract, as the customer sees it
    status, infos = sigfox("ContractInfos", "listContractInfos", groupId=str(tenants.customer_a))
    assert status == 200 and contract_id in [c["id"] for c in infos["data"]]
    status, info = sigfox("ContractInfos", "getContractInfo", id=contract_id)
    assert status == 200 and info["name"] == "Conformance plan" and info["maxTokens"] == 20

    # Device type with `contracts` only (deviceTypeCreate requires it; contractId is optional).
    # The document also requires `geolocPayloadConfigId` ("else ignored" unless the payload type
    # is geolocation), so a client built from it sends one: Heron accepts and ignores it.
    status, body = sigfox(
        "DeviceTypes",
        "createDeviceType",
        deviceType={
            "name": "Conformance meters",
            "groupId": group_id,
            "contracts": [{"id": contract_id}],
            "geolocPayloadConfigId": "5a2f3c4d5e6f708192a3b4c5",
        },
    )
    assert status == 201
    device_type_id = body["id"]
    status, device_type = sigfox("DeviceTypes", "getDeviceType", id=device_type_id)
    assert status == 200 and device_type["group"]["id"] == group_id
    assert device_type["contract"]["id"] == contract_id, "contracts[0] is the default contract"
    assert [c["id"] for c in device_type["contracts"]] == [contract_id]

    # A URL callback on it
    callback = {
        "channel": "URL",
        "callbackType": 0,
        "callbackSubtype": 2,
        "enabled": True,
        "url": receiver.url + "/uplink/{device}",
        "httpMethod": "POST",
        "contentType": "application/json",
        "bodyTemplate": '{"device": "{device}", "seq": {seqNumber}, "time": {time}}',
        "sendSni": False,
        "headers": {"x-conformance": "1"},
    }
    sigfox.check("createUrlCallback", callback)
    status, body = sigfox("DeviceTypes", "createCallback", id=device_type_id, callback=callback)
    assert status == 201
    callback_id = body["id"]
    status, callbacks = sigfox("DeviceTypes", "listCallbacks", id=device_type_id)
    assert status == 200
    (listed,) = callbacks["data"]
    sigfox.check("urlCallback", listed)
    assert listed["id"] == callback_id and listed["url"] == callback["url"] and listed["dead"] is False

    # Devices: one by one, then in bulk (a job, polled)
    status, body = sigfox(
        "Devices",
        "createDevice",
        device={"id": DEVICE, "name": "Meter alone", "pac": PAC, "deviceTypeId": device_type_id},
    )
    assert status == 201 and body["id"] == DEVICE
    status, device = sigfox("Devices", "getDevice", id=DEVICE)
    assert status == 200 and device["deviceType"]["id"] == device_type_id
    assert device["contract"]["id"] == contract_id and device["group"]["id"] == group_id
    assert device["token"]["state"] == 0, "on contract: its frames are delivered"

    status, body = sigfox(
        "Devices",
        "createBulkDevice",
        devices={
            "deviceTypeId": device_type_id,
            "data": [{"id": ident, "pac": PAC, "name": f"Meter {ident}"} for ident in BULK],
        },
    )
    assert status == 200 and body["total"] == len(BULK)
    job = finished(sigfox, "getBulkJobForDevice", body["jobId"])
    assert job["total"] == len(BULK) and job["status"]["success"] == len(BULK) and job["status"]["errors"] == []
    status, listed_devices = sigfox("Devices", "listDevices", deviceTypeId=device_type_id, sort="id")
    assert status == 200 and [d["id"] for d in listed_devices["data"]] == sorted([DEVICE, *BULK])

    # Messages: frames heard by two or three stations, one second apart by the stations' clocks;
    # each station sends all of its frames in one request, so they reach Heron together.
    first = (int(time.time()) - 3600) * 1000
    times = [first + i * 1000 for i in range(FRAMES)]
    receptions = []
    for seq, at in enumerate(times, start=1):
        for station in range(2 + seq % 2):
            receptions.append(
                (
                    station,
                    {
                        "device": DEVICE,
                        "seqNumber": seq,
                        "data": f"{seq:02x}aa",
                        "time": at + station * 40,  # each station's clock its own
                        "rssi": -110.0 - 5 * station,
                        "snr": 12.0 - station,
                        "freq": 868130000,
                        "rep": 3,
                    },
                )
            )
    for station, mast in enumerate(stations):
        batch = [frame for s, frame in receptions if s == station]
        r = httpx.post(server + "/ingest/sigfox", json={"receptions": batch}, headers=mast.auth, timeout=30)
        assert r.status_code == 200 and r.json() == {"accepted": len(batch)}, r.text

    # Each message is delivered to the callback once.
    wait_for("the callbacks", lambda: len(receiver.requests) >= FRAMES)
    assert sorted(json.loads(req["body"])["seq"] for req in receiver.requests) == list(range(1, FRAMES + 1))

    # Paged by following `paging.next` (its query as the operation's parameters)...
    by_next: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": PAGE}
    for _ in range(FRAMES + 2):
        status, page = sigfox("Devices", "getDeviceMessagesListForDevice", id=DEVICE, **params)
        assert status == 200 and len(page["data"]) <= PAGE
        by_next += page["data"]
        if "next" not in page["paging"]:
            break
        params = sigfox.query_of(page["paging"]["next"])
    else:
        raise AssertionError("paging.next never ended")
    assert [m["seqNumber"] for m in by_next] == list(range(FRAMES, 0, -1)), "each message once, newest first"
    # ... the message's time is when the network heard it: the earliest station's clock.
    assert [m["time"] for m in by_next] == times[::-1]
    for m in by_next:
        assert m["device"] == {"id": DEVICE, "name": "Meter alone"}
        assert m["data"] == f"{m['seqNumber']:02x}aa" and m["nbFrames"] == 3
        assert len(m["rinfos"]) == 2 + m["seqNumber"] % 2
        assert {ri["baseStation"]["id"] for ri in m["rinfos"]} <= {s[0] for s in STATIONS}

    # ... and by `before` alone, taking the last message's time.
    by_before: list[dict[str, Any]] = []
    params = {"limit": PAGE}
    for _ in range(FRAMES + 2):
        status, page = sigfox("Devices", "getDeviceMessagesListForDevice", id=DEVICE, **params)
        assert status == 200
        if not page["data"]:
            break
        by_before += page["data"]
        params = {"limit": PAGE, "before": page["data"][-1]["time"]}
    else:
        raise AssertionError("paging by before never ended")
    assert [m["seqNumber"] for m in by_before] == list(range(FRAMES, 0, -1))
    status, window = sigfox(
        "Devices", "getDeviceMessagesListForDevice", id=DEVICE, since=times[1], before=times[4], limit=100
    )
    assert status == 200 and [m["seqNumber"] for m in window["data"]] == [4, 3, 2], "since inclusive, before not"

    # Unsubscription: one device, then the others by a bulk job.
    at = first + 3600_000 + 30 * DAY_MS
    status, _ = sigfox("Devices", "Unsubscribe", id=DEVICE, unsubscriptionTime={"unsubscriptionTime": at})
    assert status == 204
    status, device = sigfox("Devices", "getDevice", id=DEVICE)
    assert status == 200 and device["unsubscriptionTime"] == at

    later = at + DAY_MS
    status, body = sigfox(
        "Devices",
        "deviceBulkUnsubscribe",
        devices={"data": [{"id": ident, "unsubscriptionTime": later} for ident in BULK]},
    )
    assert status == 201
    job = finished(sigfox, "getDeviceUnsubscribeJob", body["jobId"])
    assert job["status"]["total"] == len(BULK) and job["status"]["nbSuccess"] == len(BULK)
    assert job["status"]["nbErrors"] == 0
    for ident in BULK:
        status, device = sigfox("Devices", "getDevice", id=ident)
        assert status == 200 and device["unsubscriptionTime"] == later

    # The device type still shows its contract.
    status, device_type = sigfox("DeviceTypes", "getDeviceType", id=device_type_id)
    assert status == 200 and device_type["contract"]["id"] == contract_id

    # Locations computed from the stations that heard each frame, paged like messages.
    located: list[dict[str, Any]] = []
    params = {"limit": PAGE}
    for _ in range(FRAMES + 2):
        status, page = sigfox("Devices", "getDeviceLocationsList", id=DEVICE, **params)
        assert status == 200 and len(page["data"]) <= PAGE
        located += page["data"]
        if "next" not in page["paging"]:
            break
        params = sigfox.query_of(page["paging"]["next"])
    else:
        raise AssertionError("locations paging.next never ended")
    assert [loc["time"] for loc in located] == times[::-1], "one location per message, newest first"
    for loc in located:
        assert 44.9 < loc["lat"] < 45.2 and 3.9 < loc["lng"] < 4.3 and loc["radius"] > 0

    # Bulk suspension and resumption (action jobs), seen in the devices' state (6 SUSPENDED, 0 OK).
    for operation, status_operation, state in (
        ("devicesBulkSuspend", "getBulkSuspendJob", 6),
        ("devicesBulkResume", "getBulkResumeJob", 0),
    ):
        status, body = sigfox("Devices", operation, devices={"data": BULK[:2]})
        assert status == 201
        job = finished(sigfox, status_operation, body["jobId"])
        assert job["status"]["total"] == 2 and job["status"]["nbSuccess"] == 2 and job["status"]["nbErrors"] == 0
        states = [sigfox("Devices", "getDevice", id=ident)[1]["state"] for ident in BULK]
        assert states == [state, state, 0]

    # A deleted device is gone from the device resources: 404, with the document's body.
    status, _ = sigfox("Devices", "deleteDevice", id=BULK[2])
    assert status == 204
    with pytest.raises(HTTPNotFound) as gone:
        sigfox("Devices", "getDevice", id=BULK[2])
    assert gone.value.swagger_result["message"]
