"""The Senet task status of an onboarding job."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Forbidden, NotFound
from heron.jobs import engine
from heron.jobs.models import Job
from heron.jobs.notify import status_body
from heron.registry import bulk
from heron.registry.models import DeviceType
from heron.registry.onboarding.calls import (
    ACTIVATE,
    DEACTIVATE,
    KINDS,
    REGISTER,
    STATUS_KEPT,
    UPDATE,
    UPDATE_PREFIX,
    invalid,
)
from heron.registry.onboarding.submission import lock_key
from heron.tenancy.access import Actor

_REQ_ID = re.compile(r"(DevMgmtJobReq|DevUpdateJobReq):[0-9A-Fa-f]{1,32}")
_LORAWAN = bulk.LORAWAN

_INTERNAL = {
    REGISTER: "An internal server error occurred while registering devices. {skipped} devices were skipped.",
    ACTIVATE: "An internal server error occurred while activating devices.",
    DEACTIVATE: "An internal server error occurred while deactivating devices. {skipped} devices were skipped.",
    UPDATE: "An internal server error occurred while updating devices. {skipped} devices were skipped.",
}


# -- task status ---------------------------------------------------------------------------------------
def _latest_task_of_application(session: Session, prefix: str, app_eui: str) -> Job | None:
    """The seed's statusUrl examples end in the application EUI (`DevMgmtJobReq:00000000000100E0`),
    so a client may build the URL from its AppEUI: that names the application's latest task of
    the prefix's family (register, activate, deactivate; or update). Heron's own reqIds are tried
    first."""
    dt_id = session.scalar(select(DeviceType.id).where(DeviceType.app_eui == app_eui, DeviceType.network == _LORAWAN))
    if dt_id is None:
        return None
    kinds = (UPDATE,) if prefix == UPDATE_PREFIX else (REGISTER, ACTIVATE, DEACTIVATE)
    return session.scalar(
        select(Job)
        .where(Job.kind.in_(kinds), Job.lock_keys.contains(f",{lock_key(dt_id)},"))
        .order_by(Job.id.desc())
        .limit(1)
    )


def task_status(session: Session, actor: Actor, req_id: str | None) -> dict[str, Any]:
    """The Senet task status: 400 for a missing or malformed reqId, 404 for an unknown task or one
    ended more than 15 minutes ago, 403 for a task of another tenant (as the seed lists)."""
    if req_id is None or not req_id:
        raise invalid("reqId", "required")
    if not _REQ_ID.fullmatch(req_id):
        raise invalid("reqId", "must look like DevMgmtJobReq:<hex> or DevUpdateJobReq:<hex>")
    prefix, _, code = req_id.partition(":")
    code = code.upper()
    # Not the stored rows: a client polling a 10,000-row task must not fetch them each time.
    job = session.scalar(select(Job).where(Job.req_id == f"{prefix}:{code}"))
    if job is None and len(code) == 16:
        job = _latest_task_of_application(session, prefix, code)
    gone = job is None or job.kind not in KINDS
    if job is not None and job.ended_at is not None and job.ended_at < utcnow() - STATUS_KEPT:
        gone = True
    if gone or job is None:
        raise NotFound("No task could be found with the requested reqId.")
    if not actor.can("device:read", job.group_path):
        raise Forbidden("The API key is not authorized to get the status of the task.")
    body = status_body(engine.report(session, job))
    del body["reqId"]
    if job.state not in engine.FINISHED:
        body["result"]["status"] = ""
    elif job.state == "DONE_FAIL":
        body["result"]["msgs"].append(_INTERNAL[job.kind].format(skipped=job.total - job.processed))
    return body
