"""The outbox's channels end to end on both databases: BATCH_URL to a real HTTP receiver,
EMAIL to a real SMTP server (aiosmtpd) on 127.0.0.1, and the job callbacks through the outbox,
driven round by round with an injected clock."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.channels.email import Mail, SmtpConfig, send_mails
from heron.delivery.models import DONE, PENDING, Delivery
from heron.jobs import engine
from heron.jobs.notify import encrypt_headers
from heron.keys import Keyring
from tests.conftest import TEST_KEK, Tenants
from tests.delivery.test_outbox import Receiver, clock, make_callback, receiver, rounds
from tests.jobs.kinds import KIND
from tests.network.sigfox.test_ingest import Clock, Radio, frame, radio, send

__all__ = ["Inbox", "clock", "inbox", "radio", "receiver"]  # fixtures and helpers for test_caps_and_alerts


class Inbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 keeping what it receives; `refuse` makes it
    refuse every recipient."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse = False
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse:
            return "550 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    box.controller.start()
    yield box
    box.controller.stop()


def outbox_settings(settings: Settings, inbox: Inbox, **extra: object) -> Settings:
    """Loopback opened for the receiver, the SMTP server on loopback; no background worker."""
    return settings.model_copy(
        update={
            "callback_allow_cidrs": "127.0.0.0/8",
            "run_deliveries": False,
            "smtp_host": "127.0.0.1",
            "smtp_port": inbox.port,
            "smtp_starttls": False,
            "smtp_from": "heron@example.com",
        }
        | extra
    )


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Settings:
    return outbox_settings(settings, inbox)


def deliveries(db: Database) -> list[Delivery]:
    with db.read() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


def sample(client: TestClient, name: str) -> float:
    """One sample of /metrics (0 when absent); metrics are per process, so tests compare deltas."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_batch_url_gathers_a_callbacks_messages_for_a_second_into_one_request_one_line_each(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = make_callback(
        client,
        tenants,
        radio,
        channel="BATCH_URL",
        url=receiver.url + "/batch/{deviceTypeId}",
        linePattern="{device};{time};{data};{seqNumber}",
        headers={"X-Key": "k1"},
    )
    station = radio.stations[0]
    latency, failures = (
        f'heron_delivery_{m}{{callback="{cb_id}"}}' for m in ("latency_seconds_count", "failures_total")
    )
    before = sample(client, latency), sample(client, failures)
    t0 = int(clock.now.timestamp())
    send(client, station, frame("1001", 1, data="01"), frame("1002", 1, data="02"))
    send(client, station, frame("1001", 2, data="03"))
    clock.now += timedelta(seconds=1.01)
    assert rounds(client) == 0  # due, still gathering
    clock.now += timedelta(seconds=1)
    assert rounds(client) == 3
    [req] = receiver.requests
    assert req["method"] == "POST" and req["path"] == f"/batch/{radio.device_type_id}"
    assert req["headers"]["X-Key"] == "k1" and req["headers"]["Content-Type"].startswith("text/plain")
    lines = req["body"].decode().split("\n")
    assert sorted(lines) == sorted([f"1001;{t0};01;1", f"1002;{t0};02;1", f"1001;{t0};03;2"])
    assert [line for line in lines if line.startswith("1001")] == [f"1001;{t0};01;1", f"1001;{t0};03;2"]
    assert {(d.state, d.last_status, d.attempts) for d in deliveries(db)} == {(DONE, 200, 1)}
    assert rounds(client) == 0

    # Down: the whole batch is retried, with the same webhook-id, and succeeds once back.
    receiver.status = 503
    t1 = int(clock.now.timestamp())
    send(client, station, frame("1003", 1, data="04"), frame("1003", 2, data="05"))
    clock.now += timedelta(seconds=2.1)
    assert rounds(client) == 2
    pending = [d for d in deliveries(db) if d.state == PENDING]
    assert len(pending) == 2 and len({d.next_at for d in pending}) == 1  # one schedule
    receiver.status = 200
    clock.now += timedelta(seconds=13)
    assert rounds(client) == 2
    failed, retried = receiver.requests[1:]
    assert failed["body"] == retried["body"] == f"1003;{t1};04;1\n1003;{t1};05;2".encode()
    assert failed["headers"]["webhook-id"] == retried["headers"]["webhook-id"]
    assert {d.state for d in deliveries(db)} == {DONE}

    # Enough rows due do not wait for the second to pass.
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    ctx.deliveries.policy = dataclasses.replace(ctx.deliveries.policy, batch_lines=2)
    send(client, station, frame("1001", 3), frame("1002", 3), frame("1003", 3))
    clock.now += timedelta(seconds=1.01)
    assert rounds(client) == 2
    assert len(receiver.requests[-1]["body"].split(b"\n")) == 2
    # Metrics: latency and failures per callback, the outbox's depth and oldest pending age.
    assert (sample(client, latency) - before[0], sample(client, failures) - before[1]) == (7, 2)
    assert sample(client, "heron_outbox_depth") == 1
    assert sample(client, "heron_outbox_oldest_pending_age_seconds") == pytest.approx(1.01)


def test_a_batch_line_holds_no_character_that_splits_lines_the_unicode_way(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    """CR, LF, VT, FF, FS, GS, RS, NEL, U+2028 and U+2029 inside a line become spaces: a receiver
    using str.splitlines() (or any Unicode-aware splitter) sees one line per message too."""
    breaks = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    make_callback(
        client,
        tenants,
        radio,
        channel="BATCH_URL",
        url=receiver.url + "/batch",
        linePattern=f"{{device}}{breaks}{{seqNumber}}",
    )
    send(client, radio.stations[0], frame("1001", 1), frame("1002", 2))
    clock.now += timedelta(seconds=2.1)
    assert rounds(client) == 2
    [req] = receiver.requests
    assert sorted(req["body"].decode().splitlines()) == [
        "1001" + " " * len(breaks) + "1",
        "1002" + " " * len(breaks) + "2",
    ]


def test_email_sends_one_mail_per_message_with_the_rendered_subject_and_body(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, inbox: Inbox, clock: Clock
) -> None:
    make_callback(
        client,
        tenants,
        radio,
        channel="EMAIL",
        recipient="ops@example.com, dev@example.com",
        subject="Uplink {device} #{seqNumber}",
        message="data={data}\ntemp={customData#temp}\nstation={station}",
    )
    send(client, radio.stations[0], frame(seq=7, data="17ff"), frame(seq=8, data="18ff"))
    clock.now += timedelta(seconds=1.01)
    assert (rounds(client), rounds(client)) == (1, 1)  # in order: one at a time per device
    assert [(sender, to, m["Subject"]) for sender, to, m in inbox.mails] == [
        ("heron@example.com", ["ops@example.com", "dev@example.com"], "Uplink 1001 #7"),
        ("heron@example.com", ["ops@example.com", "dev@example.com"], "Uplink 1001 #8"),
    ]
    first = inbox.mails[0][2]
    assert first["From"] == "heron@example.com" and first["To"] == "ops@example.com, dev@example.com"
    assert first.get_content().replace("\r\n", "\n") == "data=17ff\ntemp=23\nstation=1E6AB\n"
    assert [(d.state, json.loads(d.last_request or "{}")["subject"]) for d in deliveries(db)] == [
        (DONE, "Uplink 1001 #7"),
        (DONE, "Uplink 1001 #8"),
    ]
    # Refused by the server: a recorded failure, retried later.
    inbox.refuse = True
    send(client, radio.stations[0], frame(seq=9))
    clock.now += timedelta(seconds=1.01)
    assert rounds(client) == 1
    last = deliveries(db)[-1]
    assert last.state == PENDING and last.attempts == 1
    assert (last.last_error or "").startswith("SMTP refused every recipient")
    assert len(inbox.mails) == 2


def test_a_url_body_says_its_charset_when_text_plain_and_json_and_form_stay_as_named(
    client: TestClient, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    """A text/plain body is UTF-8 and its Content-Type says so, as BATCH_URL's; JSON and form
    bodies are UTF-8 by their own definitions, which give them no charset parameter."""
    bodies = {
        "text/plain": "Température {customData#temp} °C",
        "application/json": '{"unit": "°C", "temp": {customData#temp}}',
        "application/x-www-form-urlencoded": "unit=%C2%B0C&temp={customData#temp}",
    }
    for n, (content_type, body) in enumerate(bodies.items()):
        make_callback(client, tenants, radio, url=f"{receiver.url}/{n}", contentType=content_type, bodyTemplate=body)
    send(client, radio.stations[0], frame(data="17"))
    clock.now += timedelta(seconds=1.01)
    assert rounds(client) == 3
    got = {r["path"]: (r["headers"]["Content-Type"], r["body"].decode()) for r in receiver.requests}
    assert got == {
        "/0": ("text/plain; charset=utf-8", "Température 23 °C"),
        "/1": ("application/json", '{"unit": "°C", "temp": 23}'),
        "/2": ("application/x-www-form-urlencoded", "unit=%C2%B0C&temp=23"),
    }


def test_a_mail_that_cannot_be_built_fails_alone_and_the_others_of_its_batch_stay_sent(inbox: Inbox) -> None:
    """A subject with a line break makes the e-mail package raise while building the mail: that
    mail is its own recorded failure; the mails before it are not to be sent again on a retry,
    and the ones after it still go."""
    config = SmtpConfig(host="127.0.0.1", port=inbox.port, starttls=False, sender="heron@example.com")
    mails = [
        Mail(["a@example.com"], "first", "one"),
        Mail(["b@example.com"], "broken\nsubject", "two"),
        Mail(["c@example.com"], "third", "three"),
    ]
    first, broken, third = send_mails(config, mails)
    assert (first, third) == (None, None)
    assert (broken or "").startswith("cannot build the mail: ValueError: ")
    assert [(to, m["Subject"]) for _sender, to, m in inbox.mails] == [
        (["a@example.com"], "first"),
        (["c@example.com"], "third"),
    ]


def test_job_callbacks_go_through_the_outbox_with_its_retries(
    client: TestClient, db: Database, receiver: Receiver, clock: Clock
) -> None:
    keyring = Keyring.parse(TEST_KEK)
    with db.write() as s:
        job = engine.submit(
            s,
            kind=KIND,
            created_by="api_user:1",
            group_path="/1/",
            rows=[{"name": "abc"}],
            lock_keys=["dt:1"],
            callback_url=receiver.url + "/done",
            callback_headers=encrypt_headers(keyring, {"X-Token": "s3cret"}),
        )
        job_id, req_id = job.id, job.req_id
    client.app.state.ctx.jobs.wake()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while not deliveries(db) and time.monotonic() < deadline:
        time.sleep(0.02)
    [row] = deliveries(db)
    assert row.job_id == job_id and row.callback_id is None and row.event == "JOB"
    assert "s3cret" not in (row.variables or "")  # the headers stay sealed in the outbox
    receiver.status = 503
    # The runner stamps the row on the real clock: on a loaded machine, past the fake one.
    clock.now = max(clock.now, row.next_at) + timedelta(seconds=1)
    assert rounds(client) == 1
    [row] = deliveries(db)
    assert row.state == PENDING and row.last_status == 503
    receiver.status = 200
    clock.now += timedelta(seconds=12)
    assert rounds(client) == 1
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == row.key
    assert second["headers"]["X-Token"] == "s3cret" and second["headers"]["content-type"] == "application/json"
    body = json.loads(second["body"])
    assert body["reqId"] == req_id and body["state"] == "DONE_SUC" and body["pctDone"] == 100
    assert [d.state for d in deliveries(db)] == [DONE]
