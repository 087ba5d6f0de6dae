"""The optional job callback: when a job ends, its status is owed to the URL given with the job.
It goes through the durable outbox (heron.delivery) like every other callback: the hook
writes a `deliveries` row (no callback, `job_id` set, event `JOB`) carrying the URL, the job's
headers as they are stored (the keyring ciphertext, never in clear) and the status body; the
delivery worker sends it through the guarded HTTP request with the outbox's retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.delivery.channels import JOB
from heron.delivery.channels.url import JOB_HEADERS_PURPOSE
from heron.delivery.enqueue import new_key
from heron.delivery.models import PENDING, Delivery
from heron.jobs.engine import JobReport, report
from heron.jobs.models import Job
from heron.keys import Keyring

log = logging.getLogger("heron.jobs")

HEADERS_PURPOSE = JOB_HEADERS_PURPOSE


def status_body(rep: JobReport) -> dict[str, Any]:
    """The Senet task-status shape, with the job's reqId."""
    return {
        "reqId": rep.job.req_id,
        "state": rep.job.state,
        "result": {"status": rep.summary or "", "msgs": rep.messages, "stats": rep.stats},
        "pctDone": rep.pct_done,
    }


def encrypt_headers(keyring: Keyring, headers: dict[str, str]) -> str | None:
    return keyring.encrypt(json.dumps(headers).encode(), HEADERS_PURPOSE) if headers else None


def enqueue_job_callback(session: Session, job: Job, now: datetime) -> bool:
    """The outbox row of a finished job's callback, in the caller's transaction (none when the
    job has no callback URL)."""
    if not job.callback_url:
        return False
    body = json.dumps(status_body(report(session, job)), separators=(",", ":"))
    variables = {"url": job.callback_url, "headers": job.callback_headers, "body": body}
    session.execute(
        insert(Delivery),
        [
            {
                "key": new_key(),
                "callback_id": None,
                "device_type_id": None,
                "device_id": None,
                "message_id": None,
                "job_id": job.id,
                "event": JOB,
                "variables": json.dumps(variables),
                "state": PENDING,
                "attempts": 0,
                "next_at": now,
                "created_at": now,
            }
        ],
    )
    return True


def finishing_hook(clock: Callable[[], datetime] = utcnow) -> Callable[[Session, Job], bool]:
    """A `JobRunner.finishing` hook: the job's callback row is written in the transaction that
    ends the job, so a finished job never lacks its callback."""

    def enqueue(session: Session, job: Job) -> bool:
        return enqueue_job_callback(session, job, clock())

    return enqueue
