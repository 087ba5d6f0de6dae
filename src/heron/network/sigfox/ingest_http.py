"""The base-station ingest: `POST /ingest/sigfox`, many receptions per request, authenticated
with the station's credential (HTTP Basic: station id, secret). A 200 means every reception
of the request is committed (see heron.uplink.writer); a malformed reception refuses the whole
request with 400 naming it, and nothing of it is stored. Protocol: docs/INGEST.md."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.types import ASGIApp, Receive, Scope, Send

from heron.api.context import Ctx, parse_authorization
from heron.errors import NotAuthenticated
from heron.network.sigfox import stations
from heron.network.sigfox.radio import NETWORK
from heron.network.sigfox.stations import StationRecheck
from heron.runtime.context import AppContext
from heron.uplink.store import HeardFrame
from heron.uplink.writer import Refused

router = APIRouter(prefix="/ingest", tags=["ingest"])

MAX_RECEPTIONS = 1000
_NORMAL_ID = re.compile(r"[1-9A-F][0-9A-F]{0,7}|0")
MAX_MS = 253_402_300_799_999


_DEVICE_PATTERN = r"^(?:0[xX])?[0-9A-Fa-f]{1,8}$"
_DATA_PATTERN = r"^(?:[0-9A-Fa-f]{2}){0,12}$"
# What a pattern refusal says, by the field it refuses (pydantic's own names the pattern).
_PATTERN_MESSAGES = {
    "device": "must be 1 to 8 hex digits (a Sigfox device id)",
    "data": "must be 0 to 12 bytes as an even number of hex digits",
}


class ReceptionIn(BaseModel):
    """One reception. Every check is a pydantic-core constraint (no Python validator): this runs
    for every reception, and a Python validator per field cost more than the rest together
    (measured: 117 -> 46 us for a 20-reception request). `_frames` normalizes the device id
    and the payload's case. Unknown fields are refused, as everywhere."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True)

    device: str = Field(max_length=10, pattern=_DEVICE_PATTERN, description="hex device id")
    seq_number: int = Field(ge=0, le=4095, description="12 bits")
    frame_type: Literal["DATA", "KEEPALIVE", "REPEATER"] = "DATA"
    data: str = Field(default="", max_length=24, pattern=_DATA_PATTERN, description="payload, 0 to 12 bytes in hex")
    ack_required: bool = False
    time: int | None = Field(default=None, ge=0, le=MAX_MS, description="epoch ms of the reception at the station")
    rssi: float | None = Field(default=None, ge=-200, le=50, description="dBm")
    snr: float | None = Field(default=None, ge=-50, le=100, description="dB")
    freq: float | None = Field(default=None, ge=0, le=10_000_000_000, description="Hz")
    rep: int = Field(default=1, ge=1, le=3, description="repetitions of the frame heard")
    battery: float | None = Field(default=None, ge=0, le=100, description="V (keep-alive frames)")
    temperature: float | None = Field(default=None, ge=-100, le=200, description="degrees C (keep-alive frames)")


class IngestBody(BaseModel):
    """No Python validator here either: a model-level one makes pydantic parse the JSON into
    objects first instead of validating as it reads."""

    model_config = ConfigDict(extra="forbid", strict=True)

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


def _station_of(ctx: AppContext, authorization: str) -> int:
    """The station of an `Authorization` header's credential, read from the database (401 if
    none): one indexed SELECT on this thread's own connection (heron.db.fastpath), no thread hop."""
    parsed = parse_authorization(authorization)
    if parsed is None or parsed[0] is None:
        raise NotAuthenticated("station credential required")
    station_id = stations.authenticate(ctx.db, parsed[0], parsed[1])
    if station_id is None:
        raise NotAuthenticated("station credential required")
    return station_id


async def _station(request: Request, ctx: Ctx) -> int:
    """`_station_of` the request's credential (the downlink long poll's check: uncached)."""
    return _station_of(ctx, request.headers.get("authorization", ""))


def _credential(ctx: AppContext, authorization: str) -> _Credential:
    """The station of an `Authorization` header's credential (401 if none), through the cache:
    a cached one is checked again by the writer (`_store`). A miss costs one indexed SELECT on
    this thread's own connection (heron.db.fastpath), no thread hop. Shared by the HTTP route
    and the UDP form (heron.network.sigfox.ingest_udp), so both are let in and refused alike."""
    key = (ctx.db.url, authorization)
    now = time.monotonic()
    hit = _credentials.get(key)
    if hit is not None and now - hit[3] < CACHE_SECONDS:
        return _Credential(hit[0], hit[1], hit[2], cached=True)
    try:
        station_id = _station_of(ctx, authorization)
    except NotAuthenticated:
        _credentials.pop(key, None)
        raise
    parsed = parse_authorization(authorization)
    assert parsed is not None and parsed[0] is not None  # _station_of let it in
    if len(_credentials) >= CACHE_MAX:
        _credentials.clear()
    _credentials[key] = (station_id, parsed[0], parsed[1], now)
    return _Credential(station_id, parsed[0], parsed[1], cached=False)


async def _store(ctx: AppContext, frames: list[HeardFrame], credential: _Credential) -> None:
    """Store `frames` of a request let in on `credential`; return once they are committed. A
    cached credential is checked again by the writer: refused there, it is forgotten, nothing
    is stored, and this raises NotAuthenticated."""
    if not credential.cached:
        await ctx.uplinks.store(frames, network=NETWORK)
        return
    try:
        await ctx.uplinks.store(
            frames,
            network=NETWORK,
            recheck=StationRecheck(credential.identifier, credential.secret, credential.station_id),
        )
    except Refused:
        for key, hit in list(_credentials.items()):
            if hit[1:3] == (credential.identifier, credential.secret):
                _credentials.pop(key, None)
        raise NotAuthenticated("station credential required") from None


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
        raise _invalid(exc, raw) from None


def _invalid(exc: ValidationError, raw: bytes) -> RequestValidationError:
    """A body's validation errors located as FastAPI's (`body.receptions[1].data`), with the
    ingest's own words for a device id or payload that is not hex."""
    errors = []
    for e in exc.errors(include_url=False):
        error = dict(e) | {"loc": ("body", *e["loc"])}
        if e["type"] == "string_pattern_mismatch" and e["loc"][-1] in _PATTERN_MESSAGES:
            error |= {"type": "value_error", "msg": _PATTERN_MESSAGES[str(e["loc"][-1])]}
        errors.append(error)
    return RequestValidationError(errors, body=raw)


def _frames(body: IngestBody, station_id: int) -> list[HeardFrame]:
    """The receptions as the store takes them: device ids as `SigfoxId` writes them, payloads in
    lower case, no time where the station gives none (the store takes the arrival: the writer's
    clock, the one the message's arrival and the device's last communication are read from).
    Positional: a named tuple built with keywords costs twice as much."""
    frames = []
    for r in body.receptions:
        device = r.device
        if not _NORMAL_ID.fullmatch(device):  # already as SigfoxId.parse would make it
            device = device.removeprefix("0x").removeprefix("0X").upper().lstrip("0") or "0"
        frames.append(
            HeardFrame(
                station_id,
                device,
                r.seq_number,
                r.frame_type,
                r.data.lower(),
                r.ack_required,
                None if r.time is None else datetime.fromtimestamp(r.time / 1000, UTC),
                r.rssi,
                r.snr,
                r.freq,
                r.rep,
                r.battery,
                r.temperature,
            )
        )
    return frames


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
    credential = _credential(ctx, request.headers.get("authorization", ""))
    frames = _frames(_body(await request.body(), request.headers.get("content-type")), credential.station_id)
    await _store(ctx, frames, credential)
    return Response(b'{"accepted":%d}' % len(frames), media_type="application/json")


class IngestLane:
    """ASGI middleware, inside the edge one (request id, metrics, access log): it serves
    `POST /ingest/sigfox` itself, answering errors with the app's own exception handlers, and
    hands everything else on. FastAPI's router and route wrappers cost the API process more
    than the ingest's own work (measured: about 40% of its event loop under load); the route
    stays declared above, for the OpenAPI document and as the only definition of the handler."""

    PATH = router.prefix + "/sigfox"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = next(r for r in router.routes if getattr(r, "path", None) == self.PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        scope["route"] = self.route  # the metrics' route label, as the router would set it
        request = Request(scope, receive)
        try:
            response = await ingest_sigfox(request)
        except Exception as exc:
            handler = next((app.exception_handlers[k] for k in type(exc).__mro__ if k in app.exception_handlers), None)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
