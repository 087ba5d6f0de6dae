"""/api/v2/device-types (Sigfox v2 layout, plus Heron's LoRaWAN fields: `network`, `appEui`,
`joinEui`, `profId`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import (
    MAX_INT,
    ApiModel,
    GroupIdsFilter,
    Limit,
    NameFilter,
    Offset,
    UpdateModel,
    id_list,
)
from heron.api.v2 import PREFIX, wire
from heron.registry import device_types
from heron.registry.device_types import DeviceTypeFields
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/device-types", tags=["device types"])


class ContractRef(ApiModel):
    """The Sigfox `contractId` object: `{"id": "..."}`."""

    id: str = Field(max_length=20)


class _Settings(ApiModel):
    name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=300)
    contract_id: str | None = Field(default=None, max_length=20, description="the default contract")
    contracts: list[ContractRef] | None = Field(default=None, max_length=100, description="allowed contracts")
    keep_alive: int | None = Field(default=None, description="seconds: 0 (off) or >= 1800")
    alert_email: str | None = Field(default=None, max_length=250)
    downlink_mode: int | None = Field(default=None, description="0 DIRECT, 1 CALLBACK, 2 NONE")
    downlink_data_string: str | None = Field(default=None, max_length=200, description="8-byte DIRECT template")
    payload_type: int | None = Field(default=None, description="2 regular (raw), 3 custom grammar, 5 ASCII")
    payload_config: str | None = Field(default=None, max_length=4000)
    automatic_renewal: bool | None = None
    app_eui: str | None = Field(default=None, max_length=64, description="LORAWAN: the application EUI")
    join_eui: str | None = Field(default=None, max_length=64, description="LORAWAN: the default join server EUI")
    prof_id: str | None = Field(default=None, max_length=20, description="LORAWAN: the default device profile")

    def fields(self) -> DeviceTypeFields:
        """The given fields (absent ones stay KEEP), ids parsed and named as on the wire."""
        out = DeviceTypeFields()
        for name in self.model_fields_set & set(DeviceTypeFields.__dataclass_fields__) - {"contract_ids"}:
            value = getattr(self, name)
            if name in ("contract_id", "prof_id") and value is not None:
                value = parse_id(value, "contractId" if name == "contract_id" else "profId", "body")
            setattr(out, name, value)
        if "contracts" in self.model_fields_set:
            refs = self.contracts or []
            out.contract_ids = [parse_id(r.id, f"contracts[{i}].id", "body") for i, r in enumerate(refs)]
        return out


class DeviceTypeCreate(_Settings):
    name: str = Field(max_length=100)  # type: ignore[assignment]
    group_id: str = Field(max_length=20)
    network: str = Field(default="SIGFOX", max_length=8, description="SIGFOX or LORAWAN")


class DeviceTypeUpdate(_Settings, UpdateModel):
    unsettable = frozenset(
        {"description", "contract_id", "alert_email", "downlink_data_string", "payload_config", "join_eui", "prof_id"}
    )


@router.get("")
async def list_device_types(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    name: NameFilter = None,
    group_ids: GroupIdsFilter = None,
    deep: bool = False,
    contract_id: Annotated[str | None, Query(alias="contractId", max_length=20)] = None,
    payload_type: Annotated[int | None, Query(alias="payloadType", ge=0, le=MAX_INT)] = None,
    network: Literal["SIGFOX", "LORAWAN"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    cid = parse_id(contract_id, "contractId", "query") if contract_id is not None else None
    with ctx.db.read() as session:
        rows, has_more = device_types.list_device_types(
            session,
            actor,
            name=name,
            group_ids=gids or None,
            deep=deep,
            contract_id=cid,
            payload_type=payload_type,
            network=network,
            limit=limit,
            offset=offset,
        )
        contracts, profiles = device_types.references(session, rows)
        data = [wire.device_type(v, contracts, profiles) for v in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_device_type(body: DeviceTypeCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view = device_types.create(
            session,
            actor,
            group_id=parse_id(body.group_id, "groupId", "body"),
            network=body.network,
            fields=body.fields(),
        )
        return {"id": str(view.device_type.id)}


@router.get("/{device_type_id}")
async def get_device_type(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        view = device_types.get(session, actor, parse_id(device_type_id))
        contracts, profiles = device_types.references(session, [view])
        return wire.device_type(view, contracts, profiles)


@router.put("/{device_type_id}", status_code=204)
async def update_device_type(device_type_id: str, body: DeviceTypeUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        device_types.update(session, actor, parse_id(device_type_id), body.fields())
    return Response(status_code=204)


@router.put("/{device_type_id}/disengage", status_code=204)
@router.post("/{device_type_id}/disengage", status_code=204)  # the wording; the document says PUT
async def disengage_device_type(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    """The sequence-number check is off for the next message of each device of the type."""
    with ctx.db.write() as session:
        device_types.disengage(session, actor, parse_id(device_type_id))
    return Response(status_code=204)


@router.delete("/{device_type_id}", status_code=204)
async def delete_device_type(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        device_types.delete(session, actor, parse_id(device_type_id))
    return Response(status_code=204)
