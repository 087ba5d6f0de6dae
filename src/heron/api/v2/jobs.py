"""/api/v2/jobs (Heron): every bulk job, whatever API started it (Sigfox bulk calls, series
operations, Senet onboarding), with its state, progress, stats and row messages."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import Limit, NoNul, Offset
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.jobs import engine, queries
from heron.jobs.models import Job

router = APIRouter(prefix=PREFIX + "/jobs", tags=["jobs"])
MESSAGES_SHOWN = 1000


def _job(job: Job) -> dict[str, Any]:
    group_id = job.group_path.strip("/").rsplit("/", 1)[-1]
    return {
        "id": job.req_id,
        "kind": job.kind,
        "state": job.state,
        "pctDone": 100 if job.state in engine.FINISHED else (job.processed * 100 // job.total if job.total else 0),
        "total": job.total,
        "processed": job.processed,
        "errors": job.errors,
        "stats": json.loads(job.stats),
        "failure": job.failure,
        "group": {"id": group_id} if group_id else None,
        "createdBy": job.created_by,
        "creationTime": to_ms(job.created_at),
        "startTime": to_ms(job.started_at),
        "endTime": to_ms(job.ended_at),
    }


@router.get("")
async def list_jobs(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    kind: Annotated[str | None, Query(max_length=40), NoNul] = None,
    state: Annotated[str | None, Query(max_length=10), NoNul] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        jobs = queries.list_jobs(session, actor, kind=kind, state=state, limit=limit, offset=offset)
    data = [_job(j) for j in jobs[:limit]]
    return page(request, ctx, data, has_more=len(jobs) > limit, limit=limit, offset=offset)


@router.get("/{job_id}", summary="A job, with its first row messages")
async def get_job(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        rep = engine.report(session, queries.get(session, actor, job_id), max_messages=MESSAGES_SHOWN)
    messages = [{"entity": entity, "message": message} for entity, message in rep.entries]
    return _job(rep.job) | {"summary": rep.summary, "messages": messages}
