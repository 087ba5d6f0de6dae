"""Events of a device or a base station (`/devices/{id}/events`, `/base-stations/{id}/events`),
newest first, paged by time like messages (heron.api.time_paging)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.time_paging import TimeList, answer, window
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.events import service
from heron.events.service import EventView

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


@router.get("/devices/{device_id}/events")
async def device_events(request: Request, device_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList) -> dict[str, Any]:
    with ctx.db.read() as session:
        page = service.device_events(session, actor, device_id, window(q))
        return answer(request, ctx, [_wire(v, "device") for v in page.rows], page)


@router.get("/base-stations/{station_id}/events")
async def station_events(
    request: Request, station_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList
) -> dict[str, Any]:
    with ctx.db.read() as session:
        page = service.station_events(session, actor, station_id, window(q))
        return answer(request, ctx, [_wire(v, "baseStation") for v in page.rows], page)
