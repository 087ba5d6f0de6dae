"""`GET /devices/{id}/locations` (Sigfox `getDeviceLocationsList`): the computed location of each
of the device's messages, newest first, paged by time like its messages (heron.api.time_paging)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.time_paging import TimeList, listed
from heron.api.v2 import PREFIX, wire
from heron.messages import locations

router = APIRouter(prefix=PREFIX, tags=["devices"])


@router.get("/devices/{device_id}/locations")
async def device_locations(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    q: TimeList,
    oob: Annotated[bool, Query(description="include out-of-band (service) messages")] = False,
) -> dict[str, Any]:
    return listed(
        request, ctx, q, lambda s, w: locations.device_locations(s, actor, device_id, w, oob=oob), wire.device_location
    )
