"""The job engine: submit a bulk operation, run it batch by batch, report its progress.

Guarantees:
- Each batch of rows runs in one transaction with its results (stats, messages, `processed`),
  so after a crash a job resumes exactly where its last committed batch ended, and no row is
  ever half-written. An exception escaping a kind's handler ends the job `DONE_FAIL` (the
  batches committed before stay committed and counted).
- One job at a time per lock key (a device type / application): a running job holds rows in
  `job_locks`, whose primary key keeps the rule across processes; later jobs wanting a held
  key wait `QUEUED`, in submission order.
- Several runners (one per process) may poll the same database: a job is claimed by one of them
  and kept alive by a heartbeat at every batch; a job whose runner died (no heartbeat for
  `stale_after` seconds) is taken over by another.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from heron import json_steps
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.errors import HeronError
from heron.jobs.models import Job, JobInput, JobLock, JobMessage
from heron.keys import Keyring
from heron.runtime.background import BackgroundThread

log = logging.getLogger("heron.jobs")

UNFINISHED = ("INITIAL", "QUEUED", "RUNNING")
FINISHED = ("DONE_SUC", "DONE_FAIL")


@dataclass(frozen=True)
class RowOutcome:
    """What one input row came to: the stats key it counts under, an optional message, and the
    entity (device id) the message is about, for APIs that report it apart (Sigfox `jobError`)."""

    stat: str
    message: str | None = None
    entity: str | None = None


@dataclass(frozen=True)
class JobContext:
    job_id: int
    req_id: str
    created_by: str
    group_path: str
    params: dict[str, Any]
    keyring: Keyring | None = None  # the runner's, for kinds that read sealed keys

    def keys(self) -> Keyring:
        if self.keyring is None:
            raise RuntimeError("this job runner was started without a keyring")
        return self.keyring


# A kind's handler receives (session, context, [(row number, row), ...]) and returns one outcome
# per row, in order. It does its domain writes with set-based SQL in the session it is given.
BatchHandler = Callable[[Session, JobContext, list[tuple[int, dict[str, Any]]]], list[RowOutcome]]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: BatchHandler
    stat_keys: tuple[str, ...]
    error_stat: str = "errors"
    batch_size: int = 1000
    summary: Callable[[dict[str, Any], dict[str, int]], str] | None = None


KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> None:
    KINDS[kind.name] = kind


class JobBusy(HeronError):
    """A job is already under way for the same device type (application)."""

    status_code = 409

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.req_id} is already running for this application; try again when it is done")
        self.job = job


def new_req_id(prefix: str) -> str:
    """`<prefix>:<16 hex>` (Senet's `DevMgmtJobReq:...`), or the bare hex for an empty prefix
    (a Sigfox `jobId`)."""
    code = secrets.token_hex(8)
    return f"{prefix}:{code.upper()}" if prefix else code


def _keys(lock_keys: str) -> list[str]:
    return [k for k in lock_keys.split(",") if k]


def find_unfinished(session: Session, lock_keys: Sequence[str]) -> Job | None:
    """The oldest job not yet finished that wants any of `lock_keys`."""
    if not lock_keys:
        return None
    return session.scalar(
        select(Job)
        .where(Job.state.in_(UNFINISHED), or_(*[Job.lock_keys.contains(f",{k},") for k in lock_keys]))
        .order_by(Job.id)
        .limit(1)
    )


@dataclass(frozen=True)
class EncodedRows:
    """A job's rows already encoded (`encode_rows`): a submitter of 100,000 rows encodes them
    before its write transaction, not inside it (on SQLite that lock is the ingest's too)."""

    count: int
    text: str


def encode_rows(rows: list[dict[str, Any]]) -> EncodedRows:
    return EncodedRows(len(rows), json_steps.dumps_rows(rows))  # in steps: see heron.json_steps


def submit(
    session: Session,
    *,
    kind: str,
    created_by: str,
    group_path: str,
    rows: list[dict[str, Any]] | EncodedRows,
    lock_keys: Sequence[str],
    params: dict[str, Any] | None = None,
    refuse_if_busy: bool = False,
    req_id_prefix: str = "Job",
    callback_url: str | None = None,
    callback_headers: str | None = None,
) -> Job:
    """Store a job (state INITIAL) with its rows; a runner picks it up. With `refuse_if_busy`
    (the Senet family), a job already under way for one of the lock keys raises JobBusy."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    if refuse_if_busy:
        busy = find_unfinished(session, lock_keys)
        if busy is not None:
            raise JobBusy(busy)
    encoded = rows if isinstance(rows, EncodedRows) else encode_rows(rows)
    job = Job(
        req_id=new_req_id(req_id_prefix),
        kind=kind,
        state="INITIAL",
        group_path=group_path,
        created_by=created_by,
        lock_keys="," + ",".join(lock_keys) + "," if lock_keys else ",",
        params=json.dumps(params or {}),
        total=encoded.count,
        processed=0,
        errors=0,
        stats=json.dumps(dict.fromkeys(KINDS[kind].stat_keys, 0)),
        callback_url=callback_url,
        callback_headers=callback_headers,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    session.add(JobInput(job_id=job.id, rows=encoded.text))
    return job


@dataclass
class JobReport:
    """A job's progress and results, for the APIs."""

    job: Job
    stats: dict[str, int]
    entries: list[tuple[str | None, str]]  # (entity, message) per row message, in row order
    summary: str | None

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.entries]

    @property
    def pct_done(self) -> int:
        if self.job.state in FINISHED:
            return 100
        return self.job.processed * 100 // self.job.total if self.job.total else 0


def report(session: Session, job: Job, max_messages: int = 10_000) -> JobReport:
    stats: dict[str, int] = json.loads(job.stats)
    entries = [
        (entity, message)
        for entity, message in session.execute(
            select(JobMessage.entity, JobMessage.message)
            .where(JobMessage.job_id == job.id)
            .order_by(JobMessage.seq)
            .limit(max_messages)
        )
    ]
    kind = KINDS.get(job.kind)
    summary = kind.summary(json.loads(job.params), stats) if kind and kind.summary else None
    return JobReport(job, stats, entries, summary)


def purge_finished(session: Session, ended_before: datetime) -> int:
    """Delete finished jobs (with their messages) that ended before the given time."""
    ids = list(session.scalars(select(Job.id).where(Job.state.in_(FINISHED), Job.ended_at < ended_before)))
    if ids:
        session.execute(delete(JobMessage).where(JobMessage.job_id.in_(ids)))
        session.execute(delete(JobInput).where(JobInput.job_id.in_(ids)))
        session.execute(delete(Job).where(Job.id.in_(ids)))
    return len(ids)


def _gone_from_this_host(runner_id: str) -> bool:
    """True when `runner_id` names a process of this host that no longer exists (a restart after
    a crash need not wait for the heartbeat to go stale)."""
    host, _, rest = runner_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _LostClaim(Exception):
    """Another runner took the job over (this one was presumed dead)."""


@dataclass(frozen=True)
class Periodic:
    """Upkeep the runner does between jobs: `task(session, now)` in one write transaction,
    about every `every` seconds (per process; tasks are written to be safe when several
    processes run them)."""

    name: str
    every: float
    task: Callable[[Session, datetime], object]


@dataclass
class JobRunner(BackgroundThread):
    """Runs jobs from the database in a background thread (one per process)."""

    db: Database
    keyring: Keyring | None = None  # handed to handlers (JobContext.keys())
    stale_after: float = 15.0
    idle_poll: float = 0.5
    retention: timedelta | None = None  # finished jobs older than this are purged
    purge_every: float = 3600.0
    # Run in the transaction that ends a job (the job's callback goes into the outbox with it):
    finishing: list[Callable[[Session, Job], object]] = field(default_factory=list)
    on_finished: list[Callable[[int], None]] = field(default_factory=list)  # after that commit
    periodic: list[Periodic] = field(default_factory=list)  # upkeep run between jobs
    id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")

    thread_name = "heron-jobs"

    def __post_init__(self) -> None:
        BackgroundThread.__init__(self)  # stop() ends after the current batch: a job cut short
        self._next_run: dict[str, float] = {}  # stays RUNNING, released for resumption

    def _loop(self) -> None:
        next_purge = 0.0
        while not self._stop.is_set():
            if self.retention is not None and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_every
                try:
                    with self.db.write() as session:
                        purge_finished(session, utcnow() - self.retention)
                except Exception:
                    log.exception("jobs.purge_failed")
            self._run_periodic()
            try:
                worked = self.run_once()
            except Exception:
                log.exception("jobs.runner_error")
                worked = False
            if not worked:
                self._wake.wait(self.idle_poll)
                self._wake.clear()

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for item in self.periodic:
            if now < self._next_run.get(item.name, 0.0):
                continue
            self._next_run[item.name] = now + item.every
            try:
                with self.db.write() as session:
                    item.task(session, utcnow())
            except Exception:
                log.exception("jobs.periodic_failed", extra={"task": item.name})

    def run_until_idle(self, max_jobs: int = 1000) -> int:
        """Run jobs in the calling thread until none is runnable (tests, CLI)."""
        count = 0
        while count < max_jobs and self.run_once():
            count += 1
        return count

    # -- claiming -----------------------------------------------------------------------------
    def run_once(self) -> bool:
        try:
            job_id = self._claim()
        except IntegrityError:
            return False  # another process took a lock first; try again on the next poll
        if job_id is None:
            return False
        self._execute(job_id)
        return True

    def _claim(self) -> int | None:
        now = utcnow()
        stale = now - timedelta(seconds=self.stale_after)
        with self.db.write() as session:
            blocked: set[str] = set()
            unfinished = select(Job).where(Job.state.in_(UNFINISHED)).order_by(Job.id)
            for job in session.scalars(unfinished.options(defer(Job.params))):
                keys = set(_keys(job.lock_keys))
                if job.state == "RUNNING":
                    alive = (
                        job.runner is not None
                        and job.heartbeat_at is not None
                        and job.heartbeat_at > stale
                        and not _gone_from_this_host(job.runner)
                    )
                    if alive:
                        blocked |= keys
                        continue
                    job.runner, job.heartbeat_at = self.id, now  # its runner died: resume it
                    return job.id
                held = set(session.scalars(select(JobLock.key).where(JobLock.key.in_(keys)))) if keys else set()
                if held or keys & blocked:
                    blocked |= keys
                    if job.state == "INITIAL":
                        job.state = "QUEUED"
                    continue
                session.add_all(JobLock(key=k, job_id=job.id) for k in sorted(keys))
                job.state, job.runner, job.heartbeat_at, job.started_at = "RUNNING", self.id, now, now
                session.flush()
                return job.id
        return None

    # -- running ------------------------------------------------------------------------------
    def _execute(self, job_id: int) -> None:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            kind = KINDS.get(job.kind)
            rows: list[dict[str, Any]] = json_steps.loads(
                session.scalar(select(JobInput.rows).where(JobInput.job_id == job_id)) or "[]"
            )
            ctx = JobContext(job.id, job.req_id, job.created_by, job.group_path, json.loads(job.params), self.keyring)
            processed, stats = job.processed, json.loads(job.stats)
        if kind is None:
            self._finish(job_id, "DONE_FAIL", f"unknown job kind {job.kind!r}")
            return
        log.info("jobs.running", extra={"job": ctx.req_id, "kind": kind.name, "from_row": processed})
        while processed < len(rows):
            batch = list(enumerate(rows[processed : processed + kind.batch_size], start=processed))
            try:
                processed, stats = self._run_batch(kind, ctx, batch, stats)
            except _LostClaim:
                return
            except Exception as exc:
                log.exception("jobs.batch_failed", extra={"job": ctx.req_id})
                self._finish(job_id, "DONE_FAIL", f"internal error: {type(exc).__name__}")
                return
            if self._stop.is_set():
                self._release(job_id)
                return
        self._finish(job_id, "DONE_SUC", None)

    def _run_batch(
        self, kind: JobKind, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]], stats: dict[str, int]
    ) -> tuple[int, dict[str, int]]:
        with self.db.write() as session:
            outcomes = kind.handler(session, ctx, batch)
            if len(outcomes) != len(batch):
                raise RuntimeError(f"handler {kind.name} returned {len(outcomes)} outcomes for {len(batch)} rows")
            new_stats = dict(stats)
            messages = []
            for (seq, _row), outcome in zip(batch, outcomes, strict=True):
                new_stats[outcome.stat] = new_stats.get(outcome.stat, 0) + 1
                if outcome.message:
                    messages.append(
                        {"job_id": ctx.job_id, "seq": seq, "entity": outcome.entity, "message": outcome.message[:1000]}
                    )
            if messages:
                session.execute(insert(JobMessage), messages)
            processed = batch[-1][0] + 1
            claimed = session.execute(
                update(Job)
                .where(Job.id == ctx.job_id, Job.runner == self.id)
                .values(
                    processed=processed,
                    stats=json.dumps(new_stats),
                    errors=new_stats.get(kind.error_stat, 0),
                    heartbeat_at=utcnow(),
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise _LostClaim()
        return processed, new_stats

    def _release(self, job_id: int) -> None:
        with self.db.write() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.runner == self.id).values(runner=None))

    def _finish(self, job_id: int, state: str, failure: str | None) -> None:
        with self.db.write() as session:
            ended = session.execute(
                update(Job)
                .where(Job.id == job_id, or_(Job.runner == self.id, Job.runner.is_(None)))
                .values(state=state, failure=failure, ended_at=utcnow(), runner=None, heartbeat_at=None)
            )
            if ended.rowcount != 1:  # type: ignore[attr-defined]
                return  # another runner took the job over (this one was presumed dead): it finishes it
            session.execute(delete(JobLock).where(JobLock.job_id == job_id))
            # A finished job no longer needs its input (which may hold encrypted root keys):
            # its results are in `stats` and the row messages.
            session.execute(delete(JobInput).where(JobInput.job_id == job_id))
            if self.finishing:
                job = session.get(Job, job_id)
                assert job is not None
                for finish in self.finishing:
                    finish(session, job)
        log.info("jobs.finished", extra={"job_id": job_id, "state": state})
        for hook in self.on_finished:
            try:
                hook(job_id)
            except Exception:
                log.exception("jobs.on_finished_failed", extra={"job_id": job_id})
        self._wake.set()
