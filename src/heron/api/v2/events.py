"""Events of a device or a base station (`/devices/{id}/events`, `/base-stations/{id}/events`),
newest first, paged by time like messages (heron.api.time_paging)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.time_paging import TimeList, listed
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.events import service
from heron.events.service import EventView

router = APIRouter(prefix=PREFIX, tags=["events"])


def _shape(subject: str) -> Callable[[EventView], dict[str, Any]]:
    """The wire shape of an event, its subject under the key `subject`."""

    def wire(view: EventView) -> dict[str, Any]:
        e = view.event
        return {
            "id": str(e.id),
            "type": e.kind,
            "time": to_ms(e.time),
            subject: {"id": view.subject_id, "name": view.subject_name},
            "details": view.details,
        }

    return wire


@router.get("/devices/{device_id}/events")
async def device_events(request: Request, device_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList) -> dict[str, Any]:
    return listed(request, ctx, q, lambda s, w: service.device_events(s, actor, device_id, w), _shape("device"))


@router.get("/base-stations/{station_id}/events")
async def station_events(
    request: Request, station_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList
) -> dict[str, Any]:
    return listed(request, ctx, q, lambda s, w: service.station_events(s, actor, station_id, w), _shape("baseStation"))
