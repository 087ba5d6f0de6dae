"""Several machines on one PostgreSQL, as an operator runs them (README, "Several nodes"): two
`heron serve` nodes with their own data directories, ports and uplink sockets, sharing the
database, the KEK and the session secret. Stations post to both under load; the node running a
bulk job is killed -9 (its whole process group) and restarted: every acknowledged frame is
stored once, every message is delivered once (per webhook-id, the outbox's at-least-once
contract), the job is taken over and finishes with exact stats, and sessions and API
credentials are valid on both nodes throughout."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from heron.api.context import SESSION_COOKIE
from heron.db.engine import Database
from heron.delivery import callbacks
from heron.delivery.models import DONE, Delivery
from heron.jobs.models import Job
from heron.keys import Keyring
from heron.messages.models import Message
from heron.registry import bulk_jobs
from heron.registry.models import Device
from heron.tenancy.access import SYSTEM
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, TEST_KEK, Tenants
from tests.delivery.test_outbox import Receiver, receiver
from tests.runtime.test_supervision import (
    Load,
    Node,
    assert_stored_once,
    free_port,
    make_radio,
    node_env,
    nodes,
    ready,
    wait_until,
)

__all__ = ["receiver"]

BULK_DEVICES = 15_000  # 3 batches of 5,000: still running when its node is killed


def sign_in(login_node: str, form_node: str) -> str:
    """The GUI's sign-in, its form from one node and posted to the other: the session cookie."""
    page = httpx.get(form_node + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    r = httpx.post(
        login_node + "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
        cookies=dict(page.cookies),
        timeout=10,
    )
    assert r.status_code == 303, r.text
    return str(r.cookies[SESSION_COOKIE])


def assert_credentials_hold(node: str, cookie: str, api_key: str) -> None:
    by_session = httpx.get(node + "/api/v2/groups", cookies={SESSION_COOKIE: cookie}, timeout=10)
    assert by_session.status_code == 200, by_session.text
    by_key = httpx.get(node + "/api/v2/groups", headers={"authorization": api_key}, timeout=10)
    assert by_key.status_code == 200, by_key.text


def _job(db: Database, req_id: str) -> Job:
    with db.read() as s:
        job = s.scalar(select(Job).where(Job.req_id == req_id))
        assert job is not None
        s.expunge(job)
        return job


@pytest.mark.slow
def test_two_nodes_on_one_postgresql_survive_one_killed_under_load(
    db: Database, database_url: str, tenants: Tenants, receiver: Receiver, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("several machines share one PostgreSQL: a SQLite file belongs to one machine")
    radio = make_radio(db, tenants, devices_count=6, stations_count=4)
    with db.write() as s:
        callbacks.create(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            radio.device_type_id,
            callbacks.CallbackFields(
                channel="URL",
                callback_type=0,
                callback_subtype=2,
                enabled=True,
                url=receiver.url + "/hook?device={device}&seq={seqNumber}",
                http_method="GET",
            ),
        )
    # What the nodes share besides the database: the KEK (HERON_KEK) and the session secret.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    (shared / "session").write_text(secrets.token_hex(32) + "\n")
    (shared / "session").chmod(0o600)
    made = []
    for name in ("a", "b"):
        port = free_port()
        env = node_env(
            database_url,
            tmp_path / name,  # per node: data directory (uplink socket, children's state), port
            port,
            HERON_SESSION_SECRET_FILE=str(shared / "session"),
            HERON_JOB_STALE_SECONDS="5",  # a runner on another machine is taken over after this
        )
        made.append(Node(f"http://127.0.0.1:{port}", env, tmp_path / f"{name}.log"))
    a, b = made
    load = Load(radio, [a.base, b.base])
    with nodes(a, b):
        for node in (a, b):
            node.launch()
        for node in (a, b):
            node.wait_started()
        cookie = sign_in(a.base, b.base)  # the form of B, posted to A
        for node in (a, b):
            assert_credentials_hold(node.base, cookie, tenants.root_admin.secret)
        load.start()
        try:
            wait_until(lambda: load.acked_on(a.base) >= 10 and load.acked_on(b.base) >= 10, "both nodes ingesting")
            rows = [
                {"id": f"{0x7000000 + i:X}", "pac": "0123456789ABCDEF", "activable": False} for i in range(BULK_DEVICES)
            ]
            r = httpx.post(
                a.base + "/api/v2/devices/bulk",
                json={"deviceTypeId": str(radio.device_type_id), "data": rows},
                headers=tenants.root_admin.headers,
                timeout=60,
            )
            assert r.status_code == 200, r.text
            req_id = r.json()["jobId"]
            # Killed after its first batch: the takeover resumes after it, and the stats stay exact.
            wait_until(lambda: _job(db, req_id).processed > 0, "the bulk job's first batch", every=0.02)
            runner = _job(db, req_id).runner
            assert runner is not None
            holder_pid = int(runner.split(":")[1])
            victim, survivor = (a, b) if a.proc is not None and a.proc.pid == holder_pid else (b, a)
            assert victim.proc is not None and victim.proc.pid == holder_pid, (runner, a.proc, b.proc)
            victim.kill()  # the whole node: its server, API, uplink writer and worker
            killed_at = time.monotonic()
            at_kill = _job(db, req_id)
            assert at_kill.state == "RUNNING" and 0 < at_kill.processed < at_kill.total, "not killed mid-job"
            # The other node takes every request and the job.
            wait_until(lambda: load.answered_again(killed_at + 1.0), "ingest on the surviving node")
            wait_until(lambda: _job(db, req_id).state in ("DONE_SUC", "DONE_FAIL"), "the job taken over", 120)
            victim.start()  # restarted: same data directory and port, new processes
            wait_until(lambda: ready(victim.base)[0] == 200, "the restarted node ready")
            for node in (a, b):
                assert_credentials_hold(node.base, cookie, tenants.root_admin.secret)
            acked = load.acked_on(victim.base)
            wait_until(lambda: load.acked_on(victim.base) >= acked + 20, "the restarted node ingesting again")
        finally:
            load.finish()
        survivor_ok = survivor.proc is not None and survivor.proc.poll() is None
        assert survivor_ok, survivor.tail()
        assert set(load.statuses) <= {200, 503}, load.statuses
        assert_stored_once(db, load)

        # The job: taken over from the dead node, finished with exact stats, each device once.
        job = _job(db, req_id)
        assert job.state == "DONE_SUC", (job.state, job.failure)
        assert job.processed == BULK_DEVICES
        assert json.loads(job.stats).get(bulk_jobs.SUCCESS) == BULK_DEVICES, job.stats
        with db.read() as s:
            bulk = s.scalar(select(func.count()).select_from(Device).where(Device.identifier.like("7%")))
        assert bulk == BULK_DEVICES

        # Every message delivered, none twice: the outbox drains (the dead node's leases expire).
        def drained() -> bool:
            with db.read() as s:
                owed = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.message_id.is_not(None)))
                done = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == DONE))
                messages = s.scalar(select(func.count()).select_from(Message))
            return owed == done == messages

        wait_until(drained, "every delivery made", 150, every=0.5)
    with db.read() as s:
        stored = {
            (ident, seq)
            for ident, seq in s.execute(
                select(Device.identifier, Message.seq_number).join(Device, Message.device_id == Device.id)
            )
        }
    keys: dict[tuple[str, int], set[str]] = defaultdict(set)
    for request in receiver.requests:
        query = parse_qs(urlsplit(request["path"]).query)
        headers = {k.lower(): v for k, v in request["headers"].items()}
        keys[(query["device"][0], int(query["seq"][0]))].add(headers["webhook-id"])
    assert set(keys) == stored
    twice = {frame: ids for frame, ids in keys.items() if len(ids) != 1}
    assert not twice, f"delivered as several deliveries: {list(twice.items())[:5]}"
