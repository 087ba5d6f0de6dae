"""Destinations Heron does not send to, on both databases, through the HTTP API: a callback
URL whose host is a refused address (an IP literal in any form, `localhost`) is refused on save
naming the field; a destination refused when sending (the operator's allow-list no longer opens
it) fails its delivery for good, alerted, listed as not delivered, and is sent by a retry by
hand once the allow-list opens it again. A real receiver on 127.0.0.1, a real SMTP server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heron.db.engine import Database
from heron.delivery.models import DONE, FAILED
from heron.delivery.ssrf import parse_allow_cidrs
from tests.conftest import Tenants
from tests.delivery.test_caps_and_alerts import alert_to
from tests.delivery.test_channels import Inbox, clock, deliveries, inbox, sample, settings
from tests.delivery.test_outbox import BODY, Receiver, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["clock", "inbox", "radio", "receiver", "settings"]  # the fixtures, imported for these tests

# The module's allow-list (test_channels.settings) opens 127.0.0.0/8 only.
REFUSED_ON_SAVE = [
    "http://10.0.0.5/hook",
    "http://192.168.1.10:8080/hook?d={device}",
    "http://172.16.0.1/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://169.254.169.254/latest/meta-data",  # link-local: never, whatever the allow-list
    "http://[::1]:8080/hook",  # IPv6 loopback is not in 127.0.0.0/8
    "http://[fd00::1]/hook",
    "http://[::ffff:10.1.2.3]/hook",
    "http://localhost:8080/hook",  # ::1 as well as 127.0.0.1
    "http://api.localhost/hook",
    "http://167772165/hook",  # 10.0.0.5 as one number, as the OS reads it
    "http://0xa000005/hook",
    "http://10.1/hook",
    "https://user:pw@10.0.0.5/hook",
]


def _body(url: str, channel: str = "URL") -> dict[str, Any]:
    body: dict[str, Any] = {"channel": channel, "callbackType": 0, "callbackSubtype": 2, "enabled": True, "url": url}
    if channel == "BATCH_URL":
        return body | {"linePattern": "{device};{data}"}
    return body | {"httpMethod": "GET"}


@pytest.mark.parametrize("url", REFUSED_ON_SAVE)
def test_a_callback_url_whose_host_is_a_refused_address_is_refused_on_save(
    client: TestClient, tenants: Tenants, radio: Radio, url: str
) -> None:
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks"
    for channel in ("URL", "BATCH_URL"):
        r = client.post(base, json=_body(url, channel), headers=tenants.a_admin.headers)
        assert r.status_code == 400, (channel, r.text)
        [error] = r.json()["errors"]
        assert error["field"] == "url" and "address Heron does not send to" in error["message"], error
    assert client.get(base, headers=tenants.a_admin.headers).json()["data"] == []


def test_a_callback_changed_to_a_refused_address_is_refused_and_names_and_allowed_ranges_are_kept(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver
) -> None:
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks"
    h = tenants.a_admin.headers
    # A name is checked when a request is sent (its address may change); the allow-list opens 127/8.
    for url in ("https://hooks.example.com/x", "http://{device}.example.com/x", receiver.url + "/x"):
        assert client.post(base, json=_body(url), headers=h).status_code == 201, url
    cb_id = client.get(base, headers=h).json()["data"][0]["id"]
    r = client.put(f"{base}/{cb_id}", json={"url": "http://10.0.0.5/x"}, headers=h)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "url", r.text
    assert client.get(base, headers=h).json()["data"][0]["url"] == "https://hooks.example.com/x"


def test_a_destination_refused_when_sending_fails_for_good_alerted_listed_and_retried_by_hand(
    client: TestClient,
    db: Database,
    tenants: Tenants,
    radio: Radio,
    receiver: Receiver,
    inbox: Inbox,
    clock: Clock,
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    alert_to(db, radio, "alerts@example.com")
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    refused_metric = f'heron_delivery_given_up_total{{callback="{cb_id}",reason="refused"}}'
    before = sample(client, refused_metric)
    # The operator closes loopback (a worker restarted with another allow-list).
    ctx.deliveries.allow = ()
    send(client, radio.stations[0], frame())
    clock.now += timedelta(seconds=2)
    assert rounds(client) == 1
    [row] = deliveries(db)
    assert (row.state, row.attempts) == (FAILED, 1)
    assert (row.last_error or "").startswith("destination refused: 127.0.0.1")
    assert receiver.requests == []
    assert sample(client, refused_metric) - before == 1
    # Not retried: hours pass, nothing is tried, the callback is not dead (its endpoint is fine).
    for _ in range(3):
        clock.now += timedelta(hours=1)
        assert rounds(client) == 0
    assert deliveries(db)[0].attempts == 1
    [listed_cb] = client.get(
        f"/api/v2/device-types/{radio.device_type_id}/callbacks", headers=tenants.a_admin.headers
    ).json()["data"]
    assert listed_cb["dead"] is False
    # Alerted.
    [(_sender, to, mail)] = inbox.mails
    assert to == ["alerts@example.com"] and "destination refused: 127.0.0.1" in mail.get_content()
    # Listed as not delivered: the device type's, the callback's and the device's lists.
    h = tenants.a_admin.headers
    for path in (
        f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered",
        f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}/callbacks-not-delivered",
        "/api/v2/devices/1001/callbacks-not-delivered",
    ):
        r = client.get(path, headers=h)
        assert r.status_code == 200, r.text
        [item] = r.json()["data"]
        assert item["state"] == FAILED and item["message"].startswith("destination refused"), (path, item)
        assert item["callback"]["error"] == item["message"] and item["deliveryId"] == row.key
    # The allow-list opens loopback again: a retry by hand sends it.
    ctx.deliveries.allow = parse_allow_cidrs("127.0.0.0/8")
    r = client.post(f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered/retry", headers=h)
    assert r.status_code == 200 and r.json() == {"total": 1}, r.text
    assert rounds(client) == 1
    [req] = receiver.requests
    assert req["headers"]["webhook-id"] == row.key
    assert deliveries(db)[0].state == DONE
    assert (
        client.get(f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered", headers=h).json()["data"]
        == []
    )
