"""What stations do about downlinks (docs/INGEST.md, "Downlinks"): collect the downlinks they
should transmit (a long poll: the request returns as soon as there is one, or after `wait`
seconds with none), then report each emission. Same credential as the ingest."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from heron.api.context import Ctx
from heron.api.schemas import ApiModel
from heron.db.base import to_ms
from heron.errors import NotFound
from heron.network.sigfox import downlinks
from heron.network.sigfox.ingest_http import _station

router = APIRouter(prefix="/ingest/sigfox/downlinks", tags=["ingest"])
Station = Annotated[int, Depends(_station)]
POLL = 0.05


class EmissionReport(ApiModel):
    emitted: bool


@router.get("")
async def collect(
    ctx: Ctx, station_id: Station, wait: Annotated[float, Query(ge=0, le=25, description="seconds")] = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        now = ctx.downlinks.clock()
        # Read first: a station's poll comes back 20 times a second, and mostly finds nothing.
        with ctx.db.read() as session:
            found_any = downlinks.waiting(session, station_id, now)
        out = []
        if found_any:
            with ctx.db.write() as session:
                out = [
                    {
                        "id": str(dl.id),
                        "device": ident,
                        "seqNumber": seq,
                        "data": dl.data,
                        "transmitAt": to_ms(dl.transmit_at),
                    }
                    for dl, ident, seq in downlinks.collect(session, station_id, now)
                ]
        if out or time.monotonic() >= deadline:
            return {"downlinks": out}
        await asyncio.sleep(POLL)


@router.post("/{downlink_id}/report", status_code=204)
async def report(downlink_id: str, body: EmissionReport, ctx: Ctx, station_id: Station) -> Response:
    if not downlink_id.isdigit() or len(downlink_id) > 18:
        raise NotFound("downlink not found")
    with ctx.db.write() as session:
        done = downlinks.report(session, station_id, int(downlink_id), body.emitted, ctx.downlinks.clock())
        if done is None:
            raise NotFound("downlink not found (or not handed to this station)")
    ctx.deliveries.wake()
    return Response(status_code=204)
