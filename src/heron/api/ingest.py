"""The base-station ingest: `POST /ingest/sigfox`, many receptions per request, authenticated
with the station's credential (HTTP Basic: station id, secret). A 200 means every reception
of the request is committed (see heron.pipeline); a malformed reception refuses the whole
request with 400 naming it, and nothing of it is stored. Protocol: docs/INGEST.md."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from heron.api.context import AppContext, Ctx, parse_authorization
from heron.api.schemas import SIGFOX_IGNORED, ApiModel
from heron.db.base import utcnow
from heron.errors import InvalidInput, NotAuthenticated
from heron.messages.store import HeardFrame
from heron.network.sigfox import stations
from heron.pipeline import Refused
from heron.registry.identifiers import SigfoxId

router = APIRouter(prefix="/ingest", tags=["ingest"])

MAX_RECEPTIONS = 1000
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}){0,12}")
_NORMAL_ID = re.compile(r"[1-9A-F][0-9A-F]{0,7}|0")
MAX_MS = 253_402_300_799_999


class ReceptionIn(BaseModel):
    """`ApiModel`'s rules (camelCase, unknown fields refused, the Sigfox fields it ignores
    dropped) without its per-field NUL check, which costs more than the rest of a reception's
    validation: the only strings here (device, frameType, data) are refused by their own checks
    when they hold anything but hex digits or a frame type. This runs for every reception."""

    model_config = ApiModel.model_config
    ignored_fields: ClassVar[frozenset[str]] = SIGFOX_IGNORED

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

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if isinstance(data, dict) and not cls.ignored_fields.isdisjoint(data):
            return {k: v for k, v in data.items() if k not in cls.ignored_fields}
        return data

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if _NORMAL_ID.fullmatch(value):  # already as SigfoxId.parse would make it
            return value
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


@dataclass(frozen=True)
class _Credential:
    station_id: int
    identifier: str
    secret: str
    cached: bool  # let in on a recent check: the writer checks it again before storing


# Authorization header -> (station id, identifier, secret, checked at): a station posts many
# requests a second with one credential, and each database look-up on the event loop costs a
# GIL hand-over with the writer thread. A cached credential is checked again by the writer
# (once per batch) before anything is stored, so a renewed secret or a disabled station is
# refused (401, nothing stored) as soon as without the cache; the cache only decides which of
# 401 and 400 a request with a refused credential and a malformed body gets, for CACHE_SECONDS.
CACHE_SECONDS = 5.0
CACHE_MAX = 10_000
_credentials: dict[tuple[str, str], tuple[int, str, str, float]] = {}  # key: (database URL, header)


async def _station(request: Request, ctx: Ctx) -> int:
    """The station of the request's credential, read from the database (401 if none). Async,
    so no thread hop: one indexed SELECT on this thread's own connection (heron.db.fastpath)."""
    parsed = parse_authorization(request.headers.get("authorization", ""))
    if parsed is None or parsed[0] is None:
        raise NotAuthenticated("station credential required")
    station_id = stations.authenticate(ctx.db, parsed[0], parsed[1])
    if station_id is None:
        raise NotAuthenticated("station credential required")
    return station_id


async def _station_credential(request: Request, ctx: Ctx) -> _Credential:
    """`_station` through the cache (the ingest's: the writer checks a cached one again)."""
    header = request.headers.get("authorization", "")
    key = (ctx.db.url, header)
    now = time.monotonic()
    hit = _credentials.get(key)
    if hit is not None and now - hit[3] < CACHE_SECONDS:
        return _Credential(hit[0], hit[1], hit[2], cached=True)
    try:
        station_id = await _station(request, ctx)
    except NotAuthenticated:
        _credentials.pop(key, None)
        raise
    parsed = parse_authorization(header)
    assert parsed is not None and parsed[0] is not None
    if len(_credentials) >= CACHE_MAX:
        _credentials.clear()
    _credentials[key] = (station_id, parsed[0], parsed[1], now)
    return _Credential(station_id, parsed[0], parsed[1], cached=False)


def _inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, for an `openapi_extra` body."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


class Accepted(BaseModel):
    accepted: int


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides whether a body is JSON: no content type, or application/json or +json."""
    if not content_type:
        return True
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _body(raw: bytes, content_type: str | None) -> IngestBody:
    """The request body, parsed and validated in one pass (pydantic-core reads the JSON itself:
    cheaper than FastAPI's json.loads then validation); errors located as FastAPI's
    (`body.receptions[1].data`) and answered by the same 400 handler."""
    if not _is_json(content_type):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": "a JSON object is expected", "input": None}]
        )
    try:
        return IngestBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = [dict(e) | {"loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=raw) from None


def _frames(body: IngestBody, station_id: int, arrived: datetime) -> list[HeardFrame]:
    return [
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


# The route takes the bare request: FastAPI's dependency and body machinery cost more than the
# rest of a 20-reception request (this runs hundreds of times a second). The credential is
# checked before the body is read, as before; the body and answer are documented below.
@router.post(
    "/sigfox",
    response_model=Accepted,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _inlined_schema(IngestBody)}}}
    },
)
async def ingest_sigfox(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    credential = await _station_credential(request, ctx)
    arrived = utcnow()
    frames = _frames(_body(await request.body(), request.headers.get("content-type")), credential.station_id, arrived)
    accepted = Response(b'{"accepted":%d}' % len(frames), media_type="application/json")
    if not credential.cached:
        await ctx.uplinks.store(frames)
        return accepted
    db, identifier, secret, station_id = ctx.db, credential.identifier, credential.secret, credential.station_id

    def still_allowed() -> bool:
        return stations.authenticate(db, identifier, secret) == station_id

    try:
        await ctx.uplinks.store(frames, still_allowed=still_allowed, check_key=(identifier, secret))
    except Refused:
        for key, hit in list(_credentials.items()):
            if hit[1:3] == (identifier, secret):
                _credentials.pop(key, None)
        raise NotAuthenticated("station credential required") from None
    return accepted
