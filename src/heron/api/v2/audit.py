"""/api/v2/audit-events: who changed what, for administrators (`audit:read`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import Limit, NoNul, Offset
from heron.api.time_paging import at
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.tenancy import audit
from heron.tenancy.owned import MAX_EPOCH_MS

router = APIRouter(prefix=PREFIX + "/audit-events", tags=["audit"])


def _details(recorded: str) -> dict[str, Any]:
    """The recorded change set. A field set to null (unset) is named in `unset`: the native API
    sends no null, and dropping it alone would hide that the field was cleared."""
    details: dict[str, Any] = json.loads(recorded)
    unset = [k for k, v in details.items() if v is None]
    if unset:
        details = {k: v for k, v in details.items() if v is not None} | {"unset": unset}
    return details


@router.get("")
async def list_audit_events(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    object_type: Annotated[str | None, Query(alias="objectType", max_length=40), NoNul] = None,
    object_id: Annotated[str | None, Query(alias="objectId", max_length=64), NoNul] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch ms")] = None,
    before: Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch ms")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        rows = audit.list_events(
            session,
            actor,
            object_type=object_type,
            object_id=object_id,
            since=at(since),
            before=at(before),
            limit=limit,
            offset=offset,
        )
    data = [
        {
            "id": str(e.id),
            "time": to_ms(e.time),
            "actor": e.actor,
            "action": e.action,
            "objectType": e.object_type,
            "objectId": e.object_id,
            "requestId": e.request_id,
            "details": _details(e.details),
        }
        for e in rows[:limit]
    ]
    return page(request, ctx, data, has_more=len(rows) > limit, limit=limit, offset=offset)
