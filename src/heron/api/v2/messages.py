"""Messages of a device or a device type (`/devices/{id}/messages`,
`/device-types/{id}/messages`), newest first, in the Sigfox v2 message shape (api.md), paged by
time (heron.api.time_paging: `since`, `before`, `limit`, `offset`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from heron.api.context import Ctx, CurrentActor
from heron.api.time_paging import EpochMs, TimeList, at, listed
from heron.api.v2 import PREFIX, wire
from heron.db.base import utcnow
from heron.messages import queries
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX, tags=["messages"])


@router.get("/devices/{device_id}/messages")
async def device_messages(
    request: Request, device_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList
) -> dict[str, Any]:
    return listed(request, ctx, q, lambda s, w: queries.device_messages(s, actor, device_id, w), wire.message)


@router.get("/device-types/{device_type_id}/messages")
async def device_type_messages(
    request: Request, device_type_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList
) -> dict[str, Any]:
    type_id = parse_id(device_type_id)
    return listed(request, ctx, q, lambda s, w: queries.device_type_messages(s, actor, type_id, w), wire.message)


def _csv(body: Iterator[bytes], name: str) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/devices/{device_id}/messages/export", response_class=StreamingResponse)
async def export_device_messages(
    device_id: str, actor: CurrentActor, ctx: Ctx, since: EpochMs = None, before: EpochMs = None
) -> StreamingResponse:
    """The device's messages in [since, before) as CSV (`text/csv`), newest first, streamed."""
    with ctx.db.read() as session:
        scope = queries.device_scope(session, actor, device_id)
    return _csv(queries.export_csv(ctx.db, scope, at(since), at(before)), "messages.csv")


@router.get("/device-types/{device_type_id}/messages/export", response_class=StreamingResponse)
async def export_device_type_messages(
    device_type_id: str, actor: CurrentActor, ctx: Ctx, since: EpochMs = None, before: EpochMs = None
) -> StreamingResponse:
    with ctx.db.read() as session:
        scope = queries.device_type_scope(session, actor, parse_id(device_type_id))
    return _csv(queries.export_csv(ctx.db, scope, at(since), at(before)), "messages.csv")


@router.get("/devices/{device_id}/messages/metric")
async def device_messages_metric(device_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, int]:
    with ctx.db.read() as session:
        return queries.metric(session, queries.device_scope(session, actor, device_id), utcnow())
