"""/api/v2/contracts (management, `contract:write`) and /api/v2/contract-infos (the Sigfox v2
read view, `contract:read`).

Allocations are replaced as a whole with `PUT /contracts/{id}/allocations` and the body
`{"allocations": [{"groupId": "7", "maxTokens": 100}, {"deviceTypeId": "3", "maxTokens": 20}]}`
(an object, like every other body, rather than a bare array); `GET /contracts/{id}` lists them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from heron.api import cursor
from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import (
    SIGFOX_IGNORED,
    ApiModel,
    GroupIdsFilter,
    Limit,
    NameFilter,
    Offset,
    UpdateModel,
    id_list,
)
from heron.api.v2 import PREFIX, wire
from heron.api.v2 import devices as device_routes
from heron.errors import InvalidInput
from heron.registry import contracts, device_queries
from heron.tenancy.owned import KEEP, MAX_EPOCH_MS
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/contracts", tags=["contracts"])
infos_router = APIRouter(prefix=PREFIX + "/contract-infos", tags=["contracts"])

MAX_INT = 2**31 - 1
# Fields of the Sigfox contract bodies that Heron accepts and ignores (billing lives elsewhere).
CONTRACT_IGNORED = SIGFOX_IGNORED | {
    "userId",
    "orderId",
    "orderName",
    "pricingModel",
    "subscriptionPlan",
    "activationEndTime",
    "communicationEndTime",
    "highPriorityDownlink",
    "automaticRenewal",
    "renewalDuration",
    "options",
    "blacklistedTerritories",
}


class ContractCreate(ApiModel):
    ignored_fields = CONTRACT_IGNORED

    name: str = Field(max_length=100)
    group_id: str = Field(max_length=20)
    contract_id: str | None = Field(default=None, max_length=64, description="external (BSS) id")
    bidir: bool = False
    max_tokens: int = Field(default=0, ge=0, le=MAX_INT, description="0 = unlimited")
    max_uplink_frames: int = Field(default=140, ge=0, le=contracts.MAX_FRAMES, description="per day")
    max_downlink_frames: int = Field(default=4, ge=0, le=contracts.MAX_FRAMES, description="per day")
    token_duration: int = Field(default=12, ge=0, le=contracts.MAX_TOKEN_DURATION, description="months; 0 = unlimited")
    start_time: int | None = Field(default=None, ge=0, le=MAX_EPOCH_MS, description="epoch ms; default now")
    end_time: int | None = Field(default=None, ge=0, le=MAX_EPOCH_MS, description="epoch ms")
    timezone: str | None = Field(default=None, max_length=64, description="the day boundary; default the group's")
    geolocation: bool = False
    message_retention_days: int = Field(default=30, ge=1, le=3650, description="days messages are kept")


class ContractUpdate(UpdateModel):
    ignored_fields = CONTRACT_IGNORED
    unsettable = frozenset({"contract_id", "end_time"})

    name: str | None = Field(default=None, max_length=100)
    contract_id: str | None = Field(default=None, max_length=64)
    bidir: bool | None = None
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_uplink_frames: int | None = Field(default=None, ge=0, le=contracts.MAX_FRAMES)
    max_downlink_frames: int | None = Field(default=None, ge=0, le=contracts.MAX_FRAMES)
    token_duration: int | None = Field(default=None, ge=0, le=contracts.MAX_TOKEN_DURATION)
    start_time: int | None = Field(default=None, ge=0, le=MAX_EPOCH_MS)
    end_time: int | None = Field(default=None, ge=0, le=MAX_EPOCH_MS)
    timezone: str | None = Field(default=None, max_length=64)
    geolocation: bool | None = None
    message_retention_days: int | None = Field(default=None, ge=1, le=3650)


class AllocationIn(ApiModel):
    group_id: str | None = Field(default=None, max_length=20)
    device_type_id: str | None = Field(default=None, max_length=20)
    max_tokens: int = Field(ge=1, le=MAX_INT)

    def parsed(self, index: int) -> contracts.AllocationIn:
        where = f"allocations[{index}]"
        return contracts.AllocationIn(
            parse_id(self.group_id, f"{where}.groupId", "body") if self.group_id is not None else None,
            parse_id(self.device_type_id, f"{where}.deviceTypeId", "body") if self.device_type_id is not None else None,
            self.max_tokens,
        )


class AllocationsBody(ApiModel):
    # Required, but checked after the path id so that a bad id is the error reported first.
    allocations: list[AllocationIn] | None = Field(default=None, max_length=1000)


@router.get("")
async def list_contracts(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    name: NameFilter = None,
    group_ids: GroupIdsFilter = None,
    deep: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    with ctx.db.read() as session:
        rows, has_more = contracts.list_contracts(
            session, actor, name=name, group_ids=gids or None, deep=deep, limit=limit, offset=offset
        )
        allocs = contracts.allocations_of(session, [v.contract.id for v in rows])
        data = [wire.contract(v, allocs[v.contract.id]) for v in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


def _terms(body: ContractCreate | ContractUpdate) -> dict[str, Any]:
    """The contract's terms, as create and update both take them."""
    return {
        "bidir": body.bidir,
        "max_tokens": body.max_tokens,
        "max_uplink_frames": body.max_uplink_frames,
        "max_downlink_frames": body.max_downlink_frames,
        "token_duration": body.token_duration,
        "start_ms": body.start_time,
        "timezone": body.timezone,
        "geolocation": body.geolocation,
        "message_retention_days": body.message_retention_days,
    }


@router.post("", status_code=201)
async def create_contract(body: ContractCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view = contracts.create(
            session,
            actor,
            group_id=parse_id(body.group_id, "groupId", "body"),
            name=body.name,
            external_id=body.contract_id,
            **_terms(body),
            end_ms=body.end_time,
        )
        return {"id": str(view.contract.id)}


@router.get("/{contract_id}")
async def get_contract(contract_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        view = contracts.get(session, actor, parse_id(contract_id))
        return wire.contract(view, contracts.allocations_of(session, [view.contract.id])[view.contract.id])


@router.put("/{contract_id}", status_code=204)
async def update_contract(contract_id: str, body: ContractUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    given = body.model_fields_set
    with ctx.db.write() as session:
        contracts.update(
            session,
            actor,
            parse_id(contract_id),
            name=body.name,
            external_id=body.contract_id if "contract_id" in given else KEEP,
            **_terms(body),
            end_ms=body.end_time if "end_time" in given else KEEP,
        )
    return Response(status_code=204)


@router.delete("/{contract_id}", status_code=204)
async def delete_contract(contract_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        contracts.delete(session, actor, parse_id(contract_id))
    return Response(status_code=204)


@router.put("/{contract_id}/allocations", status_code=204)
async def set_allocations(contract_id: str, body: AllocationsBody, actor: CurrentActor, ctx: Ctx) -> Response:
    cid = parse_id(contract_id)
    if body.allocations is None:
        raise InvalidInput.field("allocations", "field required")
    wanted = [a.parsed(i) for i, a in enumerate(body.allocations)]
    with ctx.db.write() as session:
        contracts.set_allocations(session, actor, cid, wanted)
    return Response(status_code=204)


@infos_router.get("")
async def list_contract_infos(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    name: NameFilter = None,
    group_id: Annotated[str | None, Query(alias="groupId", max_length=20)] = None,
    deep: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    gid = parse_id(group_id, "groupId", "query") if group_id is not None else None
    with ctx.db.read() as session:
        rows, has_more = contracts.list_infos(
            session, actor, name=name, group_id=gid, deep=deep, limit=limit, offset=offset
        )
        data = [wire.contract_info(i) for i in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@infos_router.get("/{contract_id}")
async def get_contract_info(contract_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return wire.contract_info(contracts.get_info(session, actor, parse_id(contract_id)))


@infos_router.get("/{contract_id}/devices")
async def list_contract_devices(
    contract_id: str,
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    device_type_id: Annotated[str | None, Query(alias="deviceTypeId", max_length=20)] = None,
    limit: Limit = 100,
    with_total: Annotated[bool, Query(alias="withTotal")] = False,
    page_id: Annotated[str | None, Query(alias="pageId", max_length=cursor.MAX_TOKEN)] = None,
) -> Response:
    """The devices holding a token on the contract, among those the caller may read; pages by
    `pageId` (`limit` and `pageId` only, as in the Sigfox document)."""
    cid = parse_id(contract_id)
    dtid = parse_id(device_type_id, "deviceTypeId", "query") if device_type_id is not None else None
    scope = device_routes.cursor_scope(f"contract-infos/{cid}/devices", "id")
    after = device_routes.read_page_id(page_id, ctx, scope, "id")
    with ctx.db.read() as session:
        contracts.get_info(session, actor, cid)
        result = device_queries.list_devices(
            session,
            actor,
            device_queries.DeviceFilter(contract_id=cid, device_type_id=dtid),
            limit=limit,
            after=after,
            with_total=with_total,
        )
        return device_routes.page_of_devices(request, ctx, result, scope=scope, limit=limit, with_total=with_total)
