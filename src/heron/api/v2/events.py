"""Events of a device or a base station (`/devices/{id}/events`, `/base-stations/{id}/events`),
newest first, paged by time like messages (`since`, `before`, `limit`, and `pageId`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from heron.api import cursor
from heron.api.context import AppContext, Ctx, CurrentActor, base_url
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.errors import InvalidInput
from heron.events import service
from heron.events.service import EventPage, EventView, Position
from heron.registry._common import MAX_EPOCH_MS

router = APIRouter(prefix=PREFIX, tags=["events"])

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


def _wire(view: EventView, subject: str) -> dict[str, Any]:
    e = view.event
    return {
        "id": str(e.id),
        "type": e.kind,
        "time": to_ms(e.time),
        subject: {"id": view.subject_id, "name": view.subject_name},
        "details": view.details,
    }


def _answer(request: Request, ctx: AppContext, result: EventPage, scope: str, subject: str) -> dict[str, Any]:
    paging: dict[str, str] = {}
    if result.next_after is not None:
        at, last_id = result.next_after
        token = cursor.sign([at.isoformat(), last_id], ctx.session_secret, scope)
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "pageId")]
        query += [("before", str(int(at.timestamp() * 1000) + 1)), ("pageId", token)]
        paging["next"] = f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"
    return {"data": [_wire(v, subject) for v in result.items], "paging": paging}


@router.get("/devices/{device_id}/events")
async def device_events(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: Ms = None,
    before: Ms = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"events:device:{device_id}"
    with ctx.db.read() as session:
        result = service.device_events(
            session,
            actor,
            device_id,
            since=_at(since),
            before=_at(before),
            after=_position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope, "device")


@router.get("/base-stations/{station_id}/events")
async def station_events(
    request: Request,
    station_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: Ms = None,
    before: Ms = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"events:station:{station_id}"
    with ctx.db.read() as session:
        result = service.station_events(
            session,
            actor,
            station_id,
            since=_at(since),
            before=_at(before),
            after=_position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope, "baseStation")
