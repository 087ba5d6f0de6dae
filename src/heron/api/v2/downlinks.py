"""/api/v2/devices/{id}/downlinks: a device's downlinks, newest first (Heron's addition)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import Limit, Offset
from heron.api.v2 import PREFIX
from heron.db.base import to_ms
from heron.downlink.models import Downlink
from heron.messages.models import Message
from heron.registry import devices
from heron.stations.models import BaseStation

router = APIRouter(prefix=PREFIX, tags=["downlinks"])


@router.get("/devices/{device_id}/downlinks")
async def device_downlinks(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        view = devices.get_traffic(session, actor, device_id)
        rows = session.execute(
            select(Downlink, Message.seq_number, Message.time, BaseStation.identifier, BaseStation.name)
            .outerjoin(Message, Message.id == Downlink.message_id)
            .outerjoin(BaseStation, BaseStation.id == Downlink.station_id)
            .where(Downlink.device_id == view.device.id)
            .order_by(Downlink.created_at.desc(), Downlink.id.desc())
            .limit(limit + 1)
            .offset(offset)
        ).all()
        data = [
            {
                "id": str(dl.id),
                "state": dl.state,
                "mode": dl.mode,
                "data": dl.data,
                "baseStation": {"id": bs_id, "name": bs_name} if bs_id else None,
                "uplink": {"seqNumber": seq, "time": to_ms(up_time)} if seq is not None else None,
                "creationTime": to_ms(dl.created_at),
                "transmitTime": to_ms(dl.transmit_at),
                "sentTime": to_ms(dl.sent_at),
                "acknowledgedTime": to_ms(dl.acknowledged_at),
                "reason": dl.reason,
            }
            for dl, seq, up_time, bs_id, bs_name in rows[:limit]
        ]
    return page(request, ctx, data, has_more=len(rows) > limit, limit=limit, offset=offset)
