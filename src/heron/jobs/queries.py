"""Reading jobs for `/api/v2/jobs`: every bulk job, whatever API started it, visible to callers
holding `device:read` on the group it is filed in (a device type's or application's group)."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from heron.errors import InvalidInput, NotFound
from heron.jobs.engine import FINISHED, KINDS, UNFINISHED
from heron.jobs.models import Job
from heron.tenancy.access import Actor

STATES = (*UNFINISHED, *FINISHED)
_JOB_ID = re.compile(r"(?:[A-Za-z]{1,40}:[0-9A-F]{16})|[0-9a-f]{16}")


def check_job_id(job_id: str, field: str = "jobId") -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidInput.field(field, "must be a job id (16 hex digits, or a Senet reqId)", "path")
    return job_id


def may_read(actor: Actor, job: Job) -> bool:
    """`device:read` where the job is filed, or being the one who submitted it (a job touching
    devices of two sibling groups is filed at their common parent, which its submitter may not
    read)."""
    return job.created_by == actor.ref or actor.can("device:read", job.group_path)


def get(session: Session, actor: Actor, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.req_id == check_job_id(job_id)))
    if job is None or not may_read(actor, job):
        raise NotFound("job not found")
    return job


def list_jobs(
    session: Session,
    actor: Actor,
    *,
    kind: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Job]:
    """Newest first; one more than `limit` when there are more."""
    conds: list[ColumnElement[bool]] = [
        or_(actor.visible_filter(Job.group_path, "device:read"), Job.created_by == actor.ref)
    ]
    if kind is not None:
        if kind not in KINDS:
            raise InvalidInput.field("kind", "must be one of " + ", ".join(sorted(KINDS)), "query")
        conds.append(Job.kind == kind)
    if state is not None:
        if state not in STATES:
            raise InvalidInput.field("state", "must be one of " + ", ".join(STATES), "query")
        conds.append(Job.state == state)
    return list(session.scalars(select(Job).where(*conds).order_by(Job.id.desc()).limit(limit + 1).offset(offset)))
