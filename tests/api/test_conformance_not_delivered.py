"""`callbacks-not-delivered` items as a client generated from Sigfox's OpenAPI document reads
them: each scope's item definition field by field (names, and `time` in the milliseconds its
`since`/`before` take), Heron's own fields only where the document has no equivalent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Tenants
from tests.delivery.test_not_delivered import _failing, clock, settings
from tests.delivery.test_outbox import Receiver, receiver
from tests.network.sigfox.test_ingest import Clock, Radio, radio

__all__ = ["clock", "radio", "receiver", "settings"]  # fixtures imported for this module's tests

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sigfox-api-v2.openapi.json"
SPEC = json.loads(Path(os.environ.get("HERON_SIGFOX_OPENAPI", SPEC_PATH)).read_text())
# Not kept by Heron: the values a callback was built from are rendered at send time, not stored.
NOT_STORED = {"parameters"}
HERON_ONLY = {"deliveryId", "event", "duplicate", "state", "attempts", "nextAttempt"}


def _item_fields(path: str) -> set[str]:
    schema = SPEC["paths"][path]["get"]["responses"]["200"]["schema"]
    ref = schema["properties"]["data"]["items"]["$ref"] if "properties" in schema else schema["$ref"]
    return set(SPEC["definitions"][ref.rsplit("/", 1)[1]]["properties"])


def _items(client: TestClient, tenants: Tenants, path: str, **query: Any) -> list[dict[str, Any]]:
    r = client.get(path, params=query, headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_not_delivered_items_carry_the_documents_fields_and_time_in_ms(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb = _failing(client, tenants, radio, receiver, clock)
    dt = radio.device_type_id
    now_ms = int(clock.now.timestamp() * 1000)
    scopes = {
        "/devices/{id}/callbacks-not-delivered": "/api/v2/devices/1001/callbacks-not-delivered",
        "/device-types/{id}/callbacks-not-delivered": f"/api/v2/device-types/{dt}/callbacks-not-delivered",
        "/device-types/{id}/callbacks/{callbackId}/callbacks-not-delivered": (
            f"/api/v2/device-types/{dt}/callbacks/{cb}/callbacks-not-delivered"
        ),
        "/groups/{id}/callbacks-not-delivered": f"/api/v2/groups/{tenants.customer_a}/callbacks-not-delivered",
    }
    for documented, path in scopes.items():
        fields = _item_fields(documented) | {"snr"}  # the device item's example has it, not its properties
        [item] = [i for i in _items(client, tenants, path) if "1001" in (i.get("deviceId"), i.get("device"))]
        assert set(item) == fields - NOT_STORED | HERON_ONLY, documented
        assert abs(item["time"] - now_ms) <= 3000, documented
        assert (item["data"], item["snr"], item["status"], item["message"]) == ("0102", "12.50", "502", "HTTP 502")
        assert item["callback"]["method"] == "POST" and item["callback"]["error"] == "HTTP 502"
        if "deviceId" in fields:
            assert (item["deviceId"], item["deviceTypeId"]) == ("1001", str(dt)), documented
        else:  # the group item (`groupErrorMessages`) names them device, deviceType, deviceUrl
            assert (item["device"], item["deviceType"]) == ("1001", str(dt))
            assert item["deviceUrl"] == "http://testserver/api/v2/devices/1001"
        # The item's time is in the unit since/before take: paging by it finds the item or not.
        assert len(_items(client, tenants, path, since=item["time"], before=item["time"] + 1)) >= 1, documented
        assert all(i["time"] < item["time"] for i in _items(client, tenants, path, before=item["time"]))
