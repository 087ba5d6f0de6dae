"""Events of a device or a base station (`/devices/{id}/events`, `/base-stations/{id}/events`),
newest first, paged by time like messages (`since`, `before`, `limit`, and `pageId`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from heron.api import time_paging
from heron.api.context import AppContext, Ctx, CurrentActor
from heron.api.time_paging import EpochMs, Limit, PageId, at, position
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.events import service
from heron.events.service import EventPage, EventView

router = APIRouter(prefix=PREFIX, tags=["events"])


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
    data = [_wire(v, subject) for v in result.items]
    return {"data": data, "paging": time_paging.paging(request, ctx, result.next_after, scope)}


@router.get("/devices/{device_id}/events")
async def device_events(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: EpochMs = None,
    before: EpochMs = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"events:device:{device_id}"
    with ctx.db.read() as session:
        result = service.device_events(
            session,
            actor,
            device_id,
            since=at(since),
            before=at(before),
            after=position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope, "device")


@router.get("/base-stations/{station_id}/events")
async def station_events(
    request: Request,
    station_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: EpochMs = None,
    before: EpochMs = None,
    limit: Limit = 100,
    page_id: PageId = None,
) -> dict[str, Any]:
    scope = f"events:station:{station_id}"
    with ctx.db.read() as session:
        result = service.station_events(
            session,
            actor,
            station_id,
            since=at(since),
            before=at(before),
            after=position(page_id, ctx, scope),
            limit=limit,
        )
        return _answer(request, ctx, result, scope, "baseStation")
