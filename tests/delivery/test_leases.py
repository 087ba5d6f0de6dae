"""Leases of the outbox on both databases: a claimed row names the worker process holding it
(host:pid:token); a restarted worker takes back at once the rows of a dead process of its host,
never a live one's; a live worker keeps the lease of a request that outlasts it, so no other
worker sends it a second time. Real parts: a worker in a subprocess killed -9, a real receiver
on 127.0.0.1, workers on the real clock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from heron.config import Settings
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.delivery.models import DONE, PENDING, Delivery
from heron.delivery.policy import Policy
from heron.delivery.ssrf import parse_allow_cidrs
from heron.delivery.worker import DeliveryWorker
from heron.keys import Keyring
from tests.conftest import TEST_KEK, Tenants
from tests.delivery.test_outbox import BODY, make_callback
from tests.network.sigfox.test_ingest import Radio, frame, radio, send

__all__ = ["radio"]  # the fixture, imported for this module's tests

LOOPBACK = parse_allow_cidrs("127.0.0.0/8")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback opened for the receiver; no background worker: each test runs its own."""
    return settings.model_copy(update={"callback_allow_cidrs": "127.0.0.0/8", "run_deliveries": False})


class Gate:
    """A real HTTP server recording what it gets; while `held` is clear, requests wait before
    they are answered (a receiver hanging, so the request stays in flight)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.held = threading.Event()
        self.held.set()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gate.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                gate.held.wait(120)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.held.set()
    g.server.shutdown()
    g.server.server_close()


def _wait_for(what: str, check: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _due(db: Database) -> bool:
    with db.read() as s:
        return s.scalar(select(Delivery.id).where(Delivery.state == PENDING, Delivery.next_at <= utcnow())) is not None


def _rows(db: Database) -> list[Delivery]:
    with db.read() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


# A worker process: one round at a time until it has claimed something (the test kills it then).
_WORKER = """
import sys, time
from heron.db.engine import Database
from heron.delivery.worker import DeliveryWorker
from heron.delivery.ssrf import parse_allow_cidrs
from heron.keys import Keyring
worker = DeliveryWorker(Database(sys.argv[1]), Keyring.parse(sys.argv[2]), allow=parse_allow_cidrs("127.0.0.0/8"))
while not worker.run_once():
    time.sleep(0.05)
"""


def test_a_restarted_worker_takes_back_the_leases_of_its_killed_process_at_once(
    client: TestClient, db: Database, settings: Settings, tenants: Tenants, radio: Radio, gate: Gate
) -> None:
    make_callback(client, tenants, radio, url=gate.url + "/hook", bodyTemplate=BODY)
    send(client, radio.stations[0], frame())
    _wait_for("the dedup window to close", lambda: _due(db))
    gate.held.clear()  # the receiver hangs: the killed worker's request stays in flight
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, settings.database_url, TEST_KEK], env=env)
    try:
        _wait_for("the worker process's request", lambda: len(gate.requests) == 1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    [row] = _rows(db)
    assert row.state == PENDING and row.leased_by is not None
    assert row.leased_by.startswith(f"{socket.gethostname()}:{worker.pid}:")
    assert row.next_at > utcnow() + timedelta(seconds=50)  # its lease: a minute
    gate.held.set()
    # A worker starting in this process (the restart) sends it now, not after the lease.
    restarted = client.app.state.ctx.deliveries  # type: ignore[attr-defined]
    assert restarted.run_once() == 1
    [row] = _rows(db)
    assert row.state == DONE and row.attempts == 1 and row.leased_by is None
    first, again = gate.requests
    assert first["headers"]["webhook-id"] == again["headers"]["webhook-id"] == row.key  # the same delivery


def test_leases_of_a_live_process_are_left_alone_and_taken_back_once_it_is_gone(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, gate: Gate
) -> None:
    make_callback(client, tenants, radio, url=gate.url + "/hook", bodyTemplate=BODY)
    send(client, radio.stations[0], frame())
    _wait_for("the dedup window to close", lambda: _due(db))
    # Another worker process of this host holds the row (its request under way).
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        holder = f"{socket.gethostname()}:{other.pid}:abc123"
        with db.write() as s:
            s.execute(update(Delivery).values(leased_by=holder, next_at=utcnow() + timedelta(seconds=60)))
        keyring = Keyring.parse(TEST_KEK)
        assert DeliveryWorker(db, keyring, allow=LOOPBACK).run_once() == 0
        assert gate.requests == []
        [row] = _rows(db)
        assert row.leased_by == holder and row.state == PENDING
    finally:
        other.kill()
        other.wait(30)
    # Gone: the next worker to start takes it back at once.
    assert DeliveryWorker(db, keyring, allow=LOOPBACK).run_once() == 1
    assert len(gate.requests) == 1 and _rows(db)[0].state == DONE


def test_a_running_worker_takes_back_a_dead_process_leases_too(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, gate: Gate
) -> None:
    cb_id = make_callback(client, tenants, radio, url=gate.url + "/hook", bodyTemplate=BODY)
    base = f"/api/v2/device-types/{radio.device_type_id}/callbacks/{cb_id}"
    # A delivery of a disabled callback (nobody claims it), left leased by a process that has
    # exited (a real pid of this host, gone).
    assert client.put(f"{base}/enable?enabled=false", headers=tenants.a_admin.headers).status_code == 204
    assert client.post(f"{base}/test", headers=tenants.a_admin.headers).status_code == 200
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(30)
    with db.write() as s:
        s.execute(
            update(Delivery).values(
                leased_by=f"{socket.gethostname()}:{exited.pid}:dead00", next_at=utcnow() + timedelta(minutes=1)
            )
        )
    worker = DeliveryWorker(
        db, Keyring.parse(TEST_KEK), allow=LOOPBACK, policy=Policy(take_back_every=timedelta(seconds=0.5))
    )
    worker.start()
    try:
        time.sleep(1)  # the worker has started (and looked for dead leases while nothing was claimable)
        assert client.put(f"{base}/enable?enabled=true", headers=tenants.a_admin.headers).status_code == 204
        _wait_for("the dead process's row delivered", lambda: len(gate.requests) == 1, seconds=30)
        _wait_for("its record", lambda: _rows(db)[0].state == DONE)
    finally:
        worker.stop()


def test_a_request_outlasting_its_lease_is_not_sent_again_by_another_worker(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, gate: Gate
) -> None:
    """Two workers (two processes' worth) on one database; the receiver takes longer than the
    lease to answer: the worker sending it keeps its lease, the other never sends it too."""
    make_callback(client, tenants, radio, url=gate.url + "/hook", bodyTemplate=BODY)
    policy = Policy(lease=timedelta(seconds=4), timeout=60)
    keyring = Keyring.parse(TEST_KEK)
    workers = [DeliveryWorker(db, keyring, allow=LOOPBACK, policy=policy) for _ in range(2)]
    gate.held.clear()
    for w in workers:
        w.start()
    try:
        send(client, radio.stations[0], frame())
        _wait_for("the request", lambda: len(gate.requests) == 1)
        time.sleep(2.5 * policy.lease.total_seconds())  # leases pass while it hangs
        gate.held.set()
        _wait_for("its record", lambda: _rows(db)[0].state == DONE)
    finally:
        for w in workers:
            w.stop()
    assert len(gate.requests) == 1
    assert _rows(db)[0].attempts == 1


def test_a_retry_by_hand_does_not_send_a_delivery_in_flight_a_second_time(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, gate: Gate
) -> None:
    make_callback(client, tenants, radio, url=gate.url + "/hook", bodyTemplate=BODY)
    keyring = Keyring.parse(TEST_KEK)
    workers = [DeliveryWorker(db, keyring, allow=LOOPBACK) for _ in range(2)]
    gate.held.clear()
    for w in workers:
        w.start()
    try:
        send(client, radio.stations[0], frame())
        _wait_for("the request", lambda: len(gate.requests) == 1)
        retry = f"/api/v2/device-types/{radio.device_type_id}/callbacks-not-delivered/retry"
        answer = client.post(retry, headers=tenants.a_admin.headers)
        assert answer.status_code in (200, 204), answer.text
        time.sleep(1)  # many claim polls of both workers
        gate.held.set()
        _wait_for("its record", lambda: _rows(db)[0].state == DONE)
    finally:
        for w in workers:
            w.stop()
    assert len(gate.requests) == 1
