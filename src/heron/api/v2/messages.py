"""Messages of a device or a device type (`/devices/{id}/messages`,
`/device-types/{id}/messages`), newest first, in the Sigfox v2 message shape (api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from heron.api import cursor
from heron.api.context import AppContext, Ctx, CurrentActor, base_url
from heron.api.v2 import PREFIX, wire
from heron.db.base import utcnow
from heron.errors import InvalidInput
from heron.messages import queries
from heron.messages.queries import MessagePage, Position
from heron.registry._common import MAX_EPOCH_MS
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX, tags=["messages"])

Ms = Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
Limit = Annotated[int, Query(ge=1, le=100)]
PageId = Annotated[str | None, Query(alias="pageId", max_length=cursor.MAX_TOKEN)]


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _position(page_id: str | None, ctx: AppContext, scope: str) -> Position | None:
    if page_id is None:
        return None
    raw = cursor.unsign(page_id, ctx.session_secret, scope)
    try:
        return datetime.fromisoformat(raw[0]), int(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise InvalidInput.field("pageId", "is not a page token of this list", "query") from None


def _answer(request: Request, ctx: AppContext, result: MessagePage, scope: str) -> dict[str, Any]:
    paging: dict[str, str] = {}
    if result.next_after is not None:
        at, last_id = result.next_after
        token = cursor.sign([at.isoformat(), last_id], ctx.session_secret, scope)
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "pageId")]
        # `before` as Sigfox clients read it; the page token is the exact position within that ms.
        query += [("before", str(int(at.timestamp() * 1000) + 1)), ("pageId", token)]
        paging["next"] = f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"
    return {"data": [wire.message(v) for v in result.items], "paging": paging}


@router.get("/devices/{device_id}/messages")
async def device_messages(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: Ms = None,
    before: Ms = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"messages:device:{device_id}"
    with ctx.db.read() as session:
        result = queries.device_messages(
            session,
            actor,
            device_id,
            since=_at(since),
            before=_at(before),
            after=_position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope)


@router.get("/device-types/{device_type_id}/messages")
async def device_type_messages(
    request: Request,
    device_type_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: Ms = None,
    before: Ms = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"messages:device-type:{device_type_id}"
    with ctx.db.read() as session:
        result = queries.device_type_messages(
            session,
            actor,
            parse_id(device_type_id),
            since=_at(since),
            before=_at(before),
            after=_position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope)


def _csv(body: Iterator[bytes], name: str) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/devices/{device_id}/messages/export", response_class=StreamingResponse)
async def export_device_messages(
    device_id: str, actor: CurrentActor, ctx: Ctx, since: Ms = None, before: Ms = None
) -> StreamingResponse:
    """The device's messages in [since, before) as CSV (`text/csv`), newest first, streamed."""
    with ctx.db.read() as session:
        scope = queries.device_scope(session, actor, device_id)
    return _csv(queries.export_csv(ctx.db, scope, _at(since), _at(before)), "messages.csv")


@router.get("/device-types/{device_type_id}/messages/export", response_class=StreamingResponse)
async def export_device_type_messages(
    device_type_id: str, actor: CurrentActor, ctx: Ctx, since: Ms = None, before: Ms = None
) -> StreamingResponse:
    with ctx.db.read() as session:
        scope = queries.device_type_scope(session, actor, parse_id(device_type_id))
    return _csv(queries.export_csv(ctx.db, scope, _at(since), _at(before)), "messages.csv")


@router.get("/devices/{device_id}/messages/metric")
async def device_messages_metric(device_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, int]:
    with ctx.db.read() as session:
        return queries.metric(session, queries.device_scope(session, actor, device_id), utcnow())
