"""Consumption per day (Sigfox `deviceConsumption`): `/devices/{id}/consumption/{year}[/{month}]`
and Heron's same reads for a device type and a group (its subtree), from the per-device-day
counters (heron.events.consumption)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from heron.api.context import Ctx, CurrentActor
from heron.api.v2 import PREFIX
from heron.events import consumption
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX, tags=["consumption"])
# Checked by the service after the object's id (a bad id is named first, like everywhere).
Year = Annotated[str, Path(description="1970 to 9999")]
Month = Annotated[str, Path(description="1 to 12")]


def _answer(days: list[consumption.Day]) -> dict[str, Any]:
    """One item per day of the period, in order (the document's items carry no date: the
    position is the day; Heron adds `day`). No roaming in Heron: its counts are 0."""
    return {
        "deviceConsumptions": [
            {
                "day": d.day.isoformat(),
                "frameCount": d.uplinks,
                "downlinkFrameCount": d.downlinks,
                "roamingFrameCount": 0,
                "roamingDownlinkFrameCount": 0,
                "roamingDetails": [],
            }
            for d in days
        ]
    }


@router.get("/devices/{device_id}/consumption/{year}")
async def device_year(device_id: str, year: Year, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_device(session, actor, device_id, year))


@router.get("/devices/{device_id}/consumption/{year}/{month}")
async def device_month(device_id: str, year: Year, month: Month, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_device(session, actor, device_id, year, month))


@router.get("/device-types/{device_type_id}/consumption/{year}")
async def device_type_year(device_type_id: str, year: Year, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_device_type(session, actor, parse_id(device_type_id), year))


@router.get("/device-types/{device_type_id}/consumption/{year}/{month}")
async def device_type_month(
    device_type_id: str, year: Year, month: Month, actor: CurrentActor, ctx: Ctx
) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_device_type(session, actor, parse_id(device_type_id), year, month))


@router.get("/groups/{group_id}/consumption/{year}")
async def group_year(group_id: str, year: Year, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_group(session, actor, parse_id(group_id), year))


@router.get("/groups/{group_id}/consumption/{year}/{month}")
async def group_month(group_id: str, year: Year, month: Month, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _answer(consumption.of_group(session, actor, parse_id(group_id), year, month))
