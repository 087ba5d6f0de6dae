"""`POST /bridge/sigfox/{deviceTypeId}/{secret}`: what a Sigfox backend's callbacks send for a
bridged device type (heron.network.sigfox.bridge). A bad secret is 401; a bad body is 400 naming
the field; 200/204 only once the reception is committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from heron.api.context import Ctx
from heron.errors import InvalidInput, NotAuthenticated
from heron.network.sigfox import bridge
from heron.network.sigfox.radio import NETWORK

router = APIRouter(prefix="/bridge/sigfox", tags=["Sigfox cloud bridge"])


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the body must be the JSON object of a Sigfox callback") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be the JSON object of a Sigfox callback")
    return body


@router.post("/{device_type_id}/{secret}")
async def receive(device_type_id: str, secret: str, request: Request, ctx: Ctx) -> Response:
    station_id = bridge.authenticate(ctx.db, int(device_type_id), secret) if device_type_id.isdigit() else None
    if station_id is None or len(device_type_id) > 18:
        raise NotAuthenticated("unknown bridge or wrong secret")
    body = await _body(request)
    kind = bridge.kind_of(body)
    now = ctx.uplinks.clock()
    if kind == bridge.ADVANCED:
        return Response(status_code=204)
    if kind == bridge.ACKNOWLEDGE:
        with ctx.db.write() as session:
            bridge.acknowledge(session, station_id, body, now)
        ctx.deliveries.wake()
        return Response(status_code=204)
    frame = bridge.frame_of(body, station_id, now)
    await ctx.uplinks.store([frame], network=NETWORK)
    if kind != bridge.BIDIR:
        return Response(status_code=204)
    # BIDIR: answer with the downlink the device type's mode decides (after the dedup window).
    deadline = time.monotonic() + bridge.BIDIR_WAIT.total_seconds()
    while time.monotonic() < deadline:
        with ctx.db.write() as session:
            decided = bridge.decided_downlink(session, station_id, frame.device, frame.seq_number, ctx.uplinks.clock())
            data = decided.data if decided is not None and decided.state == "SENT" else None
        if decided is not None:
            if data is None:
                return Response(status_code=204)
            return JSONResponse({frame.device: {"downlinkData": data}})
        await asyncio.sleep(0.1)
    return Response(status_code=204)
