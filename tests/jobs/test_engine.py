"""The job engine: batches, stats, queueing per device type, failures, and crash recovery."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.delivery.models import DONE, FAILED, Delivery
from heron.delivery.ssrf import parse_allow_cidrs
from heron.delivery.worker import DeliveryWorker
from heron.jobs import engine
from heron.jobs.engine import JobBusy, JobRunner
from heron.jobs.models import Job, JobLock, JobMessage
from heron.jobs.notify import encrypt_headers, finishing_hook
from heron.keys import Keyring
from heron.runtime.context import AppContext
from heron.tenancy.models import AuditEvent
from tests.jobs.kinds import KIND

ROOT = Path(__file__).resolve().parents[2]


def _submit(db: Database, rows: list[dict[str, object]], keys: list[str], **kw: object) -> int:
    with db.write() as s:
        job = engine.submit(
            s,
            kind=KIND,
            created_by="api_user:1",
            group_path="/1/",
            rows=rows,
            lock_keys=keys,
            **kw,  # type: ignore[arg-type]
        )
        return job.id


def _job(db: Database, job_id: int) -> Job:
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def _written(db: Database, job_id: int) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(AuditEvent.object_id).where(AuditEvent.object_id.like(f"{job_id}:%"))))


def test_job_runs_all_rows_with_exact_stats_and_row_messages(db: Database) -> None:
    rows = [{"name": f"row {i}" if i % 100 else "x"} for i in range(1000)]  # 1 % bad
    job_id = _submit(db, rows, ["dt:1"])
    assert _job(db, job_id).state == "INITIAL"
    assert JobRunner(db).run_until_idle() == 1
    job = _job(db, job_id)
    assert job.state == "DONE_SUC" and job.processed == 1000 and job.errors == 10
    assert json.loads(job.stats) == {"written": 990, "errors": 10}
    assert len(set(_written(db, job_id))) == 990
    with db.read() as s:
        rep = engine.report(s, job)
        assert rep.pct_done == 100
        assert rep.messages[0] == "row 1: name must be at least 3 characters"
        assert len(rep.messages) == 10
        assert s.scalar(select(func.count()).select_from(JobLock)) == 0


def test_second_job_on_the_same_device_type_waits_queued_then_runs(db: Database) -> None:
    first = _submit(db, [{"name": "aaa"}] * 3, ["dt:1"])
    second = _submit(db, [{"name": "bbb"}] * 3, ["dt:1", "dt:2"])
    other = _submit(db, [{"name": "ccc"}] * 3, ["dt:3"])
    runner = JobRunner(db)
    # Claim the first by hand and leave it running, as if mid-way.
    assert runner._claim() == first
    assert runner._claim() == other  # a different device type is not held up
    assert runner._claim() is None
    assert _job(db, second).state == "QUEUED"
    runner._execute(first)
    runner._execute(other)
    assert runner.run_until_idle() == 1
    assert [_job(db, j).state for j in (first, second, other)] == ["DONE_SUC"] * 3


def test_refuse_if_busy_names_the_running_job(db: Database) -> None:
    first = _submit(db, [{"name": "aaa"}], ["dt:9"])
    with pytest.raises(JobBusy) as exc, db.write() as s:
        engine.submit(
            s,
            kind=KIND,
            created_by="x",
            group_path="/1/",
            rows=[{"name": "bbb"}],
            lock_keys=["dt:9"],
            refuse_if_busy=True,
        )
    assert _job(db, first).req_id in exc.value.message
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1


def test_internal_error_ends_done_fail_and_keeps_committed_batches(db: Database) -> None:
    job_id = _submit(db, [{"name": f"row {i}"} for i in range(1000)], ["dt:1"], params={"explode_at": 450})
    JobRunner(db).run_until_idle()
    job = _job(db, job_id)
    assert job.state == "DONE_FAIL" and job.failure == "internal error: RuntimeError"
    # Batches of 200: rows 0-399 committed, the batch holding row 450 rolled back whole.
    assert job.processed == 400
    assert sorted(int(x.split(":")[1]) for x in _written(db, job_id)) == list(range(400))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(JobLock)) == 0


def test_job_of_a_dead_runner_is_taken_over_after_its_heartbeat_goes_stale(db: Database) -> None:
    job_id = _submit(db, [{"name": f"row {i}"} for i in range(500)], ["dt:1"])
    dead = JobRunner(db, stale_after=60)
    assert dead._claim() == job_id
    alive = JobRunner(db, stale_after=60)
    assert alive._claim() is None  # the heartbeat is fresh: hands off
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.heartbeat_at = utcnow() - timedelta(seconds=120)
    assert alive.run_until_idle() == 1
    assert _job(db, job_id).state == "DONE_SUC"
    assert len(_written(db, job_id)) == 500


def test_purge_removes_finished_jobs_older_than_retention(db: Database) -> None:
    old = _submit(db, [{"name": "aaa"}, {"name": "x"}], [])
    JobRunner(db).run_until_idle()
    with db.write() as s:
        assert engine.purge_finished(s, utcnow() - timedelta(days=1)) == 0
        assert engine.purge_finished(s, utcnow() + timedelta(seconds=1)) == 1
        assert s.get(Job, old) is None
        assert s.scalar(select(func.count()).select_from(JobMessage)) == 0


@pytest.mark.slow
def test_kill_9_at_half_of_a_10000_row_job_then_restart_resumes_to_exact_stats(db: Database, database_url: str) -> None:
    rows = [{"name": f"row {i}" if i % 100 else "x"} for i in range(10_000)]
    job_id = _submit(db, rows, ["dt:1"], params={"delay": 0.03})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.kinds", database_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _job(db, job_id).processed < 5000:
            assert proc.poll() is None, "runner process died"
            assert time.monotonic() < deadline, "runner made no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    job = _job(db, job_id)
    assert job.state == "RUNNING" and 5000 <= job.processed < 10_000
    # What is committed is exactly what the job counted: no batch half-written.
    written = _written(db, job_id)
    assert len(written) == len(set(written)) == sum(json.loads(job.stats).values()) - job.errors
    assert json.loads(job.stats)["written"] + job.errors == job.processed

    # The default heartbeat timeout is long, but the dead runner was a process of this host.
    restarted = JobRunner(db)
    with db.write() as s:  # no need to wait for the real delay any more
        j = s.get(Job, job_id)
        assert j is not None
        j.params = json.dumps({"delay": 0})
    assert restarted.run_until_idle() == 1
    job = _job(db, job_id)
    assert job.state == "DONE_SUC" and job.processed == 10_000
    assert json.loads(job.stats) == {"written": 9900, "errors": 100}
    written = _written(db, job_id)
    assert len(written) == len(set(written)) == 9900


def test_job_callback_posts_the_final_status_with_its_headers(db: Database) -> None:
    received: list[tuple[dict[str, str], dict[str, object]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    keyring = Keyring.from_keys([base64.b64decode(base64.b64encode(bytes(32)))])  # a fixed test key
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/done"
        job_id = _submit(
            db,
            [{"name": "aaa"}, {"name": "x"}],
            ["dt:1"],
            callback_url=url,
            callback_headers=encrypt_headers(keyring, {"X-Token": "s3cret"}),
        )
        refused = _submit(db, [{"name": "bbb"}], ["dt:2"], callback_url="http://169.254.169.254/never")
        JobRunner(db, finishing=[finishing_hook()]).run_until_idle()
        # The job's end wrote its callback into the outbox; the delivery worker sends it.
        assert DeliveryWorker(db, keyring, allow=parse_allow_cidrs("127.0.0.1/32")).run_once() == 2
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(received) == 1
    headers, body = received[0]
    assert headers["X-Token"] == "s3cret"
    assert body["reqId"] == _job(db, job_id).req_id
    assert body["state"] == "DONE_SUC" and body["pctDone"] == 100
    assert body["result"] == {
        "status": "",
        "msgs": ["row 2: name must be at least 3 characters"],
        "stats": {"written": 1, "errors": 1},
    }
    assert _job(db, refused).state == "DONE_SUC"  # a refused callback does not change the job
    with db.read() as s:  # the headers are stored sealed, never in clear
        sealed = s.scalar(select(Job.callback_headers).where(Job.id == job_id))
        assert sealed is not None and "s3cret" not in sealed
        rows = {d.job_id: d for d in s.scalars(select(Delivery))}
        sent, kept = rows[job_id], rows[refused]
        assert sent.callback_id is None and sent.event == "JOB" and sent.state == DONE
        assert sealed in (sent.variables or "") and "s3cret" not in (sent.variables or "")
        # A refused destination is a recorded failure, for good (retried by hand once allowed).
        assert kept.state == FAILED and kept.attempts == 1
        assert (kept.last_error or "").startswith("destination refused")


def test_the_app_runs_submitted_jobs_in_the_background(client: TestClient, ctx: AppContext) -> None:
    job_id = _submit(ctx.db, [{"name": f"row {i}"} for i in range(300)], ["dt:1"])
    ctx.jobs.wake()
    deadline = time.monotonic() + 20
    while _job(ctx.db, job_id).state != "DONE_SUC":
        assert time.monotonic() < deadline, "the app's runner did not run the job"
        time.sleep(0.05)
    assert len(_written(ctx.db, job_id)) == 300


def test_runner_purges_finished_jobs_past_their_retention(db: Database) -> None:
    old = _submit(db, [{"name": "aaa"}], [])
    JobRunner(db).run_until_idle()
    with db.write() as s:
        job = s.get(Job, old)
        assert job is not None
        job.ended_at = utcnow() - timedelta(days=31)
    fresh = _submit(db, [{"name": "bbb"}], [])
    runner = JobRunner(db, retention=timedelta(days=30), idle_poll=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while _job_or_none(db, old) is not None or _job(db, fresh).state != "DONE_SUC":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        runner.stop()
    assert _job(db, fresh).state == "DONE_SUC"  # finished just now: kept


def _job_or_none(db: Database, job_id: int) -> Job | None:
    with db.read() as s:
        return s.get(Job, job_id)


def test_a_runner_presumed_dead_cannot_end_the_job_its_successor_runs(db: Database) -> None:
    job_id = _submit(db, [{"n": 1}], ["dt:9"])
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state, job.runner, job.heartbeat_at = "RUNNING", "host:1:successor", utcnow()
        s.add(JobLock(key="dt:9", job_id=job_id))
    JobRunner(db)._finish(job_id, "DONE_FAIL", "internal error")  # the old runner's late failure
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == "RUNNING" and job.runner == "host:1:successor"
        assert s.scalar(select(func.count()).select_from(JobLock)) == 1
