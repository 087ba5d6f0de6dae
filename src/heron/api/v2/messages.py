"""Messages of a device or a device type (`/devices/{id}/messages`,
`/device-types/{id}/messages`), newest first, in the Sigfox v2 message shape (api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from heron.api import time_paging
from heron.api.context import AppContext, Ctx, CurrentActor
from heron.api.time_paging import EpochMs, Limit, PageId, at, position
from heron.api.v2 import PREFIX, wire
from heron.db.base import utcnow
from heron.messages import queries
from heron.messages.queries import MessagePage
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX, tags=["messages"])


def _answer(request: Request, ctx: AppContext, result: MessagePage, scope: str) -> dict[str, Any]:
    data = [wire.message(v) for v in result.items]
    return {"data": data, "paging": time_paging.paging(request, ctx, result.next_after, scope)}


@router.get("/devices/{device_id}/messages")
async def device_messages(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: EpochMs = None,
    before: EpochMs = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"messages:device:{device_id}"
    with ctx.db.read() as session:
        result = queries.device_messages(
            session,
            actor,
            device_id,
            since=at(since),
            before=at(before),
            after=position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope)


@router.get("/device-types/{device_type_id}/messages")
async def device_type_messages(
    request: Request,
    device_type_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: EpochMs = None,
    before: EpochMs = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"messages:device-type:{device_type_id}"
    with ctx.db.read() as session:
        result = queries.device_type_messages(
            session,
            actor,
            parse_id(device_type_id),
            since=at(since),
            before=at(before),
            after=position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope)


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
