"""/api/v2/base-stations: Sigfox-style receivers (Heron's addition), their ingest secret and
traffic. The secret is shown at creation and at renewal only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import ApiModel, GroupIdsFilter, Limit, NameFilter, Offset, id_list
from heron.api.v2 import PREFIX, wire
from heron.network.sigfox import stations
from heron.network.sigfox.stations import StationFields
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/base-stations", tags=["base stations"])


class _Settable(ApiModel):
    null_is_absent = False  # the update's null resets the antenna to the default (fields())

    name: str | None = Field(default=None, max_length=100)
    lat: float | None = None
    lng: float | None = None
    altitude: int | None = Field(default=None, description="metres")
    radio_zone: str | None = Field(default=None, max_length=4, description="RC1 to RC7 (default RC1)")
    enabled: bool | None = None
    antenna_height: float | None = Field(default=None, description="metres above ground; null: the default")
    antenna_gain: float | None = Field(default=None, description="dBi, net of cable loss; null: the default")

    def fields(self) -> StationFields:
        unset = {"antenna_height", "antenna_gain"} & {n for n in self.model_fields_set if getattr(self, n) is None}
        return StationFields(
            name=self.name,
            lat=self.lat,
            lng=self.lng,
            altitude=self.altitude,
            radio_zone=self.radio_zone,
            enabled=self.enabled,
            antenna_height=self.antenna_height,
            antenna_gain=self.antenna_gain,
            unset=frozenset(unset),
        )


class StationCreate(_Settable):
    id: str = Field(max_length=10, description="hex identifier, e.g. 1E6AB")
    group_id: str = Field(max_length=20)
    name: str = Field(max_length=100)  # type: ignore[assignment]


@router.get("")
async def list_stations(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    name: NameFilter = None,
    group_ids: GroupIdsFilter = None,
    deep: bool = False,
    state: Literal["NEW", "ONLINE", "OFFLINE"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    with ctx.db.read() as session:
        rows, has_more = stations.list_stations(
            session, actor, group_ids=gids or None, deep=deep, name=name, state=state, limit=limit, offset=offset
        )
        data = [wire.base_station(v) for v in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_station(body: StationCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view, secret = stations.create(
            session,
            actor,
            group_id=parse_id(body.group_id, "groupId", "body"),
            identifier=body.id,
            fields=body.fields(),
        )
        return {"id": view.station.identifier, "secret": secret}


@router.get("/{station_id}")
async def get_station(station_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return wire.base_station(stations.get(session, actor, station_id))


@router.put("/{station_id}", status_code=204)
async def update_station(station_id: str, body: _Settable, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        stations.update(session, actor, station_id, body.fields())
    return Response(status_code=204)


@router.put("/{station_id}/renew-credential")
async def renew_credential(station_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        return {"secret": stations.rotate_secret(session, actor, station_id)}


@router.delete("/{station_id}", status_code=204)
async def delete_station(station_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        stations.delete(session, actor, station_id)
    return Response(status_code=204)
