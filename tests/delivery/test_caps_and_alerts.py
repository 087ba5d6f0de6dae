"""The outbox's caps (rows and age per callback) and the device type's alert mails, on both
databases, with a real SMTP server (aiosmtpd) and an injected clock."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from heron.db.engine import Database
from heron.delivery.models import DONE, FAILED, Callback
from heron.delivery.worker import DeliveryWorker
from heron.keys import Keyring
from heron.registry import device_types, devices
from heron.registry.models import DeviceType
from heron.tenancy.access import SYSTEM
from tests.conftest import TEST_KEK, Tenants
from tests.delivery.test_channels import Inbox, clock, deliveries, inbox, sample, settings
from tests.delivery.test_outbox import BODY, Receiver, make_callback, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["clock", "inbox", "radio", "receiver", "settings"]  # the fixtures, imported for these tests


def alert_to(db: Database, radio: Radio, address: str) -> None:
    with db.write() as s:
        s.execute(update(DeviceType).where(DeviceType.id == radio.device_type_id).values(alert_email=address))


def test_a_callbacks_pending_rows_beyond_the_cap_are_failed_oldest_first_and_alerted(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, inbox: Inbox, clock: Clock
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    ctx.deliveries.policy = dataclasses.replace(ctx.deliveries.policy, max_pending_per_callback=3)
    alert_to(db, radio, "alerts@example.com")
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    dropped_metric = f'heron_delivery_given_up_total{{callback="{cb_id}",reason="overflow"}}'
    before = sample(client, dropped_metric)
    for seq in range(1, 6):
        send(client, radio.stations[0], frame(seq=seq))
    assert rounds(client) == 0  # nothing due yet; the caps run
    rows = deliveries(db)
    assert [d.state for d in rows] == [FAILED, FAILED, "PENDING", "PENDING", "PENDING"]
    assert rows[0].last_error == "outbox overflow: more than 3 deliveries pending for this callback"
    [(_sender, to, mail)] = inbox.mails
    assert to == ["alerts@example.com"] and f"Callback {cb_id} " in mail["Subject"]
    assert "2 oldest pending deliveries recorded as failed (outbox overflow" in mail.get_content()
    assert sample(client, dropped_metric) - before == 2
    clock.now += timedelta(seconds=2)
    for _ in range(4):
        rounds(client)
    assert [b["seq"] for b in receiver.bodies()] == [3, 4, 5]
    assert [d.state for d in deliveries(db)] == [FAILED, FAILED, DONE, DONE, DONE]


def test_failures_over_three_hours_send_three_alert_mails_even_across_restarts(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, inbox: Inbox, clock: Clock
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    policy = dataclasses.replace(ctx.deliveries.policy, backoff_max=timedelta(minutes=5))
    alert_to(db, radio, "alerts@example.com, oncall@example.com")
    cb_id = make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = 500
    send(client, radio.stations[0], frame())
    clock.now += timedelta(seconds=2)
    start = clock.now
    for _ in range(18):  # a round every 10 minutes for 3 hours, each by a freshly started worker
        worker = DeliveryWorker(
            db, ctx.keyring, allow=ctx.deliveries.allow, policy=policy, clock=clock, smtp=ctx.deliveries.smtp
        )
        assert worker.run_once() == 1
        clock.now += timedelta(minutes=10)
    assert len(receiver.requests) == 18
    assert [to for _s, to, _m in inbox.mails] == [["alerts@example.com", "oncall@example.com"]] * 3
    first, second, _third = (m for _s, _to, m in inbox.mails)
    assert "1 failed request(s); last error: HTTP 500" in first.get_content()
    assert "State: dead" in second.get_content()
    with db.read() as s:
        alerted = s.scalar(select(Callback.alerted_at).where(Callback.id == int(cb_id)))
    assert alerted == start + timedelta(minutes=120)


def test_pending_rows_nobody_tried_past_the_give_up_age_are_failed(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = 500
    send(client, radio.stations[0], frame(seq=1))
    send(client, radio.stations[0], frame(seq=2))
    clock.now += timedelta(seconds=2)
    for _ in range(5):  # dead: the second waits behind the first, untried
        rounds(client)
        clock.now += timedelta(minutes=10)
    clock.now += timedelta(hours=48)
    rounds(client)
    first, second = deliveries(db)
    assert (first.state, first.last_error) == (FAILED, "HTTP 500")  # its last try, past the age
    assert (second.state, second.attempts) == (FAILED, 0)
    assert second.last_error == "outbox overflow: not delivered within 48 h"


def test_a_device_type_name_with_a_line_break_is_one_line_in_its_alert_subject(
    client: TestClient,
    db: Database,
    tenants: Tenants,
    radio: Radio,
    receiver: Receiver,
    inbox: Inbox,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The alert's subject names the device type; a name with a line break would not be a mail
    header: it is written on one line, and both device types' alerts of the round go. (A mail
    that cannot be built at all fails alone: test_channels.)"""
    caplog.set_level(logging.WARNING, logger="heron.delivery")
    alert_to(db, radio, "alerts@example.com")
    with db.write() as s:
        meters = s.get(DeviceType, radio.device_type_id)
        assert meters is not None
        odd = device_types.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(
                name="Two\nlines", contract_id=meters.contract_id, alert_email="odd@example.com"
            ),
        )
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier="3001",
            pac="0123456789ABCDEF",
            device_type_id=odd.device_type.id,
            fields=devices.DeviceFields(name="Odd 3001", activable=True),
        )
    make_callback(client, tenants, radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    odd_radio = Radio(radio.stations, odd.device_type.id)
    make_callback(client, tenants, odd_radio, url=receiver.url + "/hook", bodyTemplate=BODY)
    receiver.status = 500
    send(client, radio.stations[0], frame("1001"), frame("3001"))
    clock.now += timedelta(seconds=2)
    assert rounds(client) == 2  # both fail: one alert each, in one batch of mails
    subjects = sorted((to, mail["Subject"].split(" of device type ")[1]) for _s, to, mail in inbox.mails)
    assert subjects == [
        (["alerts@example.com"], "Meters: deliveries failing"),
        (["odd@example.com"], "Two lines: deliveries failing"),
    ]
    assert not [r for r in caplog.records if r.name == "heron.delivery" and r.getMessage() == "delivery.alert_not_sent"]
