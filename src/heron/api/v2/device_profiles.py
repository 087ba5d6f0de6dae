"""/api/v2/device-profiles: LoRaWAN device profiles (Heron's addition; the Senet `profId`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import (
    ApiModel,
    GroupIdsFilter,
    Limit,
    NameFilter,
    Offset,
    UpdateModel,
    id_list,
)
from heron.api.v2 import PREFIX, wire
from heron.registry import device_profiles
from heron.registry.device_profiles import ProfileFields
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/device-profiles", tags=["device profiles"])


class _Radio(ApiModel):
    name: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=8, description="EU868 or US915")
    mac_version: str | None = Field(default=None, max_length=8, description="1.0.0 to 1.0.4, 1.1.0")
    reg_params_revision: str | None = Field(default=None, max_length=16, description="default: per MAC version")
    device_class: str | None = Field(default=None, max_length=1, description="A, B or C")
    rx1_delay: int | None = Field(default=None, description="seconds, 1-15")
    rx2_data_rate: int | None = Field(default=None, description="EU868 DR0-7 (default 0), US915 DR8-13 (default 8)")
    rx2_frequency: float | None = Field(default=None, ge=0, le=10_000, description="MHz")
    adr_enabled: bool | None = None
    sub_band: int | None = Field(default=None, description="US915 only, 1-8")

    def fields(self) -> ProfileFields:
        return ProfileFields(
            name=self.name,
            region=self.region,
            mac_version=self.mac_version,
            reg_params_revision=self.reg_params_revision,
            device_class=self.device_class,
            rx1_delay=self.rx1_delay,
            rx2_data_rate=self.rx2_data_rate,
            rx2_frequency_mhz=self.rx2_frequency,
            adr_enabled=self.adr_enabled,
            sub_band=self.sub_band,
        )


class ProfileCreate(_Radio):
    group_id: str = Field(max_length=20)
    name: str = Field(max_length=100)  # type: ignore[assignment]
    region: str = Field(max_length=8)  # type: ignore[assignment]
    mac_version: str = Field(max_length=8)  # type: ignore[assignment]


class ProfileUpdate(_Radio, UpdateModel):
    unsettable = frozenset({"sub_band"})


@router.get("")
async def list_profiles(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    name: NameFilter = None,
    group_ids: GroupIdsFilter = None,
    deep: bool = False,
    region: Literal["EU868", "US915"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    with ctx.db.read() as session:
        rows, has_more = device_profiles.list_profiles(
            session, actor, name=name, group_ids=gids or None, deep=deep, region=region, limit=limit, offset=offset
        )
        data = [wire.device_profile(v) for v in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_profile(body: ProfileCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view = device_profiles.create(
            session, actor, group_id=parse_id(body.group_id, "groupId", "body"), fields=body.fields()
        )
        return {"id": str(view.profile.id)}


@router.get("/{device_profile_id}")
async def get_profile(device_profile_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return wire.device_profile(device_profiles.get(session, actor, parse_id(device_profile_id)))


@router.put("/{device_profile_id}", status_code=204)
async def update_profile(device_profile_id: str, body: ProfileUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        device_profiles.update(
            session, actor, parse_id(device_profile_id), body.fields(), unset_sub_band=body.unset("sub_band")
        )
    return Response(status_code=204)


@router.delete("/{device_profile_id}", status_code=204)
async def delete_profile(device_profile_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        device_profiles.delete(session, actor, parse_id(device_profile_id))
    return Response(status_code=204)
