"""/api/v2/coverages: service prediction from the registered base stations (Sigfox's Global
Coverage API shapes, and Heron's grid for map layers). Margins and counts only: no answer names
or places a station (network/sigfox/coverage.py says which stations count)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.schemas import ApiModel, NoNul
from heron.api.v2 import PREFIX
from heron.api.v2.render import native_json
from heron.coverage.compute import DISC_SAMPLES, Grid, LinkField
from heron.db.base import to_ms
from heron.jobs import engine
from heron.network.sigfox import coverage
from heron.registry import bulk_jobs
from heron.runtime.context import AppContext
from heron.tenancy.access import Actor
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/coverages", tags=["coverages"])

# Above this many (station, point) pairs the computation leaves the event loop for a thread.
INLINE_PAIRS = 200_000
T = TypeVar("T")


async def _compute(pairs: int, fn: Callable[..., T], *args: Any) -> T:
    if pairs <= INLINE_PAIRS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _optional_id(value: str | None, field: str) -> int | None:
    return None if value is None else parse_id(value, field, "query")


class Location(ApiModel):
    lat: float = Field(allow_inf_nan=False)
    lng: float = Field(allow_inf_nan=False)


class CoverageRequest(ApiModel):
    """Sigfox's `globalCoverageRequest`."""

    locations: list[Location] = Field(max_length=coverage.MAX_BULK_LOCATIONS)
    radius: float = Field(default=coverage.DEFAULT_RADIUS_M, allow_inf_nan=False, description="metres")
    group_id: str | None = Field(default=None, max_length=20)

    def points(self) -> list[tuple[float, float]]:
        return [(loc.lat, loc.lng) for loc in self.locations]


@router.get("/global/predictions", summary="Coverage margins at a location (Sigfox globalCoverage)")
async def prediction(
    actor: CurrentActor,
    ctx: Ctx,
    lat: float,
    lng: float,
    radius: float = coverage.DEFAULT_RADIUS_M,
    group_id: Annotated[str | None, Query(alias="groupId", max_length=20), NoNul] = None,
) -> dict[str, Any]:
    """`margins`: the outdoor margins (dB) of a class 0U device at its best, second and third
    station, averaged over `radius` metres; Heron adds them per device class (`deviceClasses`)."""
    coverage.check_position(lat, lng)
    radius = coverage.check_radius(radius)
    gid = _optional_id(group_id, "groupId")
    model = coverage.model_of(ctx.settings)
    with ctx.db.read() as session:
        coverage.check_group(session, actor, gid)
        field = coverage.load_field(session, model, lats=_arr([lat]), lngs=_arr([lng]))
    result = coverage.predict(field, [lat], [lng], radius)[0].as_wire()
    return {k: v for k, v in result.items() if k not in ("lat", "lng")}


@router.post("/global/predictions", summary="Coverage margins at up to 1,000 locations (Sigfox)")
async def predictions(body: CoverageRequest, actor: CurrentActor, ctx: Ctx) -> Response:
    points = body.points()
    coverage.check_locations(points, coverage.MAX_LOCATIONS)
    radius = coverage.check_radius(body.radius, "body")
    gid = None if body.group_id is None else parse_id(body.group_id, "groupId", "body")
    model = coverage.model_of(ctx.settings)
    lats, lngs = [p[0] for p in points], [p[1] for p in points]
    with ctx.db.read() as session:
        coverage.check_group(session, actor, gid, "body")
        field = coverage.load_field(session, model, lats=_arr(lats), lngs=_arr(lngs))
    found = await _compute(len(field) * len(points) * DISC_SAMPLES, coverage.predict, field, lats, lngs, radius)
    return native_json({"data": [p.as_wire() for p in found]})


@router.post("/global/predictions/bulk", status_code=201, summary="Coverage margins of many locations (a job)")
async def predictions_bulk(body: CoverageRequest, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    radius = coverage.check_radius(body.radius, "body")
    gid = None if body.group_id is None else parse_id(body.group_id, "groupId", "body")
    with ctx.db.write() as session:
        coverage.check_group(session, actor, gid, "body")
        job = coverage.submit_bulk(session, actor, coverage.model_of(ctx.settings), body.points(), radius)
        job_id = job.req_id
    ctx.jobs.wake()
    return {"jobId": job_id}


@router.get("/global/predictions/bulk/{job_id}", summary="A bulk prediction job's status and results")
async def predictions_bulk_status(job_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        job = bulk_jobs.get_job(session, actor, job_id, [coverage.BULK])
        report = engine.report(session, job, max_messages=coverage.MAX_BULK_LOCATIONS)
    done = report.job.state in engine.FINISHED
    body = {
        "jobDone": done,
        "time": to_ms(report.job.ended_at if done else report.job.created_at),
        "results": coverage.bulk_results(report),
    }
    return native_json(body)


@router.get("/operators/redundancy", summary="Stations in reach at a location (Sigfox redundancy)")
async def operator_redundancy(
    actor: CurrentActor,
    ctx: Ctx,
    lat: float,
    lng: float,
    operator_id: Annotated[str | None, Query(alias="operatorId", max_length=20), NoNul] = None,
    device_situation: Annotated[str, Query(alias="deviceSituation", max_length=20), NoNul] = "INDOOR",
    device_class_id: Annotated[int, Query(alias="deviceClassId")] = 0,
) -> dict[str, int]:
    """0 to 3 (three or more) stations hearing a device of the class with the situation's
    margin (OUTDOOR 0 dB, INDOOR 20 dB, UNDERGROUND 30 dB); `operatorId`: that operator group's
    stations only."""
    coverage.check_position(lat, lng)
    penalty, cls = coverage.situation_margin(device_situation), coverage.device_class(device_class_id)
    field = _field(actor, ctx, operator_id, [lat], [lng])
    return {"redundancy": coverage.redundancy(field, lat, lng, cls, penalty)}


@router.get("/global/grid", summary="Margins and redundancy over a bounding box (Heron, for map layers)")
async def coverage_grid(
    actor: CurrentActor,
    ctx: Ctx,
    bbox: Annotated[str, Query(max_length=200), NoNul],
    step: float,
    operator_id: Annotated[str | None, Query(alias="operatorId", max_length=20), NoNul] = None,
    device_situation: Annotated[str, Query(alias="deviceSituation", max_length=20), NoNul] = "INDOOR",
    device_class_id: Annotated[int, Query(alias="deviceClassId")] = 0,
) -> Response:
    """`bbox=minLng,minLat,maxLng,maxLat` and `step` in degrees. Points run west to east from
    minLng and north to south from maxLat (row-major, image order); `margins` holds each
    class's best outdoor margin (dB, 0 = none), `redundancy` the stations in reach (0-3) for
    `deviceClassId` in `deviceSituation`, as /operators/redundancy counts them."""
    g = coverage.grid_of(bbox, step, ctx.settings.coverage_grid_max_points)
    penalty, cls = coverage.situation_margin(device_situation), coverage.device_class(device_class_id)
    field = _field(actor, ctx, operator_id, [g.min_lat, g.max_lat], [g.min_lng, g.max_lng])
    pairs = len(field) * g.rows * g.cols
    return await _compute(pairs, _grid_response, field, g, cls, penalty, device_situation)


def _field(actor: Actor, ctx: AppContext, operator_id: str | None, lats: list[float], lngs: list[float]) -> LinkField:
    """The stations (all, or `operatorId`'s) in reach of the box around these points."""
    oid = _optional_id(operator_id, "operatorId")
    model = coverage.model_of(ctx.settings)
    with ctx.db.read() as session:
        path = coverage.operator_path(session, actor, oid)
        return coverage.load_field(session, model, operator=path, lats=_arr(lats), lngs=_arr(lngs))


def _grid_response(field: LinkField, g: Grid, cls: int, penalty: float, situation: str) -> Response:
    result = coverage.grid(field, g, cls, penalty)
    body = {
        "bbox": [g.min_lng, g.min_lat, g.max_lng, g.max_lat],
        "step": g.step,
        "cols": g.cols,
        "rows": g.rows,
        "order": "row-major, rows north to south from maxLat, columns west to east from minLng",
        "margins": {coverage.CLASS_NAMES[c]: m for c, m in result.margins.items()},
        "redundancy": result.redundancy,
        "deviceClassId": cls,
        "deviceSituation": situation,
    }
    return native_json(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _arr(values: list[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(values, dtype=np.float64)
