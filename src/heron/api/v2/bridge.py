"""/api/v2/device-types/{id}/sigfox-bridge: enable (or renew the secret of), read and remove a
device type's Sigfox cloud bridge. The URL with its secret is shown when enabled only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from heron.api.context import Ctx, CurrentActor, base_url
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.network.sigfox import bridge
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/device-types/{device_type_id}/sigfox-bridge", tags=["Sigfox cloud bridge"])


@router.put("")
async def enable(request: Request, device_type_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        view, secret = bridge.enable(session, actor, parse_id(device_type_id))
    return {
        "url": f"{base_url(request, ctx)}/bridge/sigfox/{view.device_type_id}/{secret}",
        "baseStation": view.station_identifier,
    }


@router.get("")
async def status(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        view = bridge.get(session, actor, parse_id(device_type_id))
    return {"enabled": True, "baseStation": view.station_identifier, "creationTime": to_ms(view.created_at)}


@router.delete("", status_code=204)
async def disable(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        bridge.disable(session, actor, parse_id(device_type_id))
    return Response(status_code=204)
