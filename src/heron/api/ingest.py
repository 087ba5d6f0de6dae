"""The base-station ingest: `POST /ingest/sigfox`, many receptions per request, authenticated
with the station's credential (HTTP Basic: station id, secret). A 200 means every reception
of the request is committed (see heron.pipeline); a malformed reception refuses the whole
request with 400 naming it, and nothing of it is stored. Protocol: docs/INGEST.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field, field_validator

from heron.api.context import Ctx, parse_authorization
from heron.api.schemas import ApiModel
from heron.db.base import utcnow
from heron.errors import InvalidInput, NotAuthenticated
from heron.messages.store import HeardFrame
from heron.network.sigfox import stations
from heron.registry.identifiers import SigfoxId

router = APIRouter(prefix="/ingest", tags=["ingest"])

MAX_RECEPTIONS = 1000
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}){0,12}")
MAX_MS = 253_402_300_799_999


class ReceptionIn(ApiModel):
    device: str = Field(max_length=10, description="hex device id")
    seq_number: int = Field(ge=0, le=4095, description="12 bits")
    frame_type: Literal["DATA", "KEEPALIVE", "REPEATER"] = "DATA"
    data: str = Field(default="", max_length=24, description="payload, 0 to 12 bytes in hex")
    ack_required: bool = False
    time: int | None = Field(default=None, ge=0, le=MAX_MS, description="epoch ms of the reception at the station")
    rssi: float | None = Field(default=None, ge=-200, le=50, description="dBm")
    snr: float | None = Field(default=None, ge=-50, le=100, description="dB")
    freq: float | None = Field(default=None, ge=0, le=10_000_000_000, description="Hz")
    rep: int = Field(default=1, ge=1, le=3, description="repetitions of the frame heard")
    battery: float | None = Field(default=None, ge=0, le=100, description="V (keep-alive frames)")
    temperature: float | None = Field(default=None, ge=-100, le=200, description="degrees C (keep-alive frames)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return str(SigfoxId.parse(value, "device"))
        except InvalidInput as exc:  # re-raised as pydantic's, so the error names receptions[i]
            raise ValueError(exc.errors[0].message if exc.errors else exc.message) from None

    @field_validator("data")
    @classmethod
    def _data(cls, value: str) -> str:
        if not _HEX.fullmatch(value):
            raise ValueError("must be 0 to 12 bytes as an even number of hex digits")
        return value.lower()


class IngestBody(ApiModel):
    receptions: Annotated[list[ReceptionIn], Field(min_length=1, max_length=MAX_RECEPTIONS)]


def _station(request: Request, ctx: Ctx) -> int:
    parsed = parse_authorization(request.headers.get("authorization", ""))
    if parsed is None or parsed[0] is None:
        raise NotAuthenticated("station credential required")
    station_id = stations.authenticate(ctx.db, parsed[0], parsed[1])
    if station_id is None:
        raise NotAuthenticated("station credential required")
    return station_id


@router.post("/sigfox")
async def ingest_sigfox(body: IngestBody, ctx: Ctx, station_id: Annotated[int, Depends(_station)]) -> dict[str, int]:
    arrived = utcnow()
    frames = [
        HeardFrame(
            station_id=station_id,
            device=r.device,
            seq_number=r.seq_number,
            frame_type=r.frame_type,
            data=r.data,
            ack_required=r.ack_required,
            time=datetime.fromtimestamp(r.time / 1000, UTC) if r.time is not None else arrived,
            rssi=r.rssi,
            snr=r.snr,
            freq=r.freq,
            rep=r.rep,
            battery=r.battery,
            temperature=r.temperature,
        )
        for r in body.receptions
    ]
    await ctx.uplinks.store(frames)
    return {"accepted": len(frames)}
