"""/api/v2/groups"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import ApiModel, Limit, NameFilter, Offset, UpdateModel, id_list
from heron.api.v2 import PREFIX, wire
from heron.api.v2.render import native_json
from heron.tenancy import groups
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/groups", tags=["groups"])


class GroupCreate(ApiModel):
    name: str = Field(min_length=3, max_length=100)
    description: str = Field(max_length=300)
    type: int
    timezone: str = Field(max_length=64)
    parent_id: str = Field(max_length=20)


class GroupUpdate(UpdateModel):
    unsettable = frozenset({"description"})

    name: str | None = Field(default=None, min_length=3, max_length=100)
    description: str | None = Field(default=None, max_length=300)
    type: int | None = None
    timezone: str | None = Field(default=None, max_length=64)
    parent_id: str | None = Field(default=None, max_length=20, description="Heron: moves the group")


@router.get("")
async def list_groups(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    parent_ids: Annotated[list[str] | None, Query(alias="parentIds")] = None,
    deep: bool = False,
    name: NameFilter = None,
    types: Annotated[list[str] | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    with_total: Annotated[bool, Query(alias="withTotal")] = False,
    fields: str | None = None,
    sort: str | None = None,
    action: str | None = None,
    authorizations: bool | None = None,
    page_id: Annotated[str | None, Query(alias="pageId")] = None,
) -> dict[str, Any]:
    pids = [parse_id(p, "parentIds", "query") for p in id_list(parent_ids)]
    type_list = [parse_id(t, "types", "query") for t in id_list(types)]
    with ctx.db.read() as session:
        result = groups.list_groups(
            session,
            actor,
            parent_ids=pids or None,
            deep=deep,
            name=name,
            types=type_list or None,
            limit=limit,
            offset=offset,
            with_total=with_total,
        )
        paths = groups.ancestors_of_many(session, actor, result.groups)
        data = wire.group_page(result.groups, paths, result.leaves)
    extra = {"total": result.total} if with_total else None
    return page(request, ctx, data, has_more=result.has_more, limit=limit, offset=offset, extra=extra)


@router.post("", status_code=201)
async def create_group(body: GroupCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        group = groups.create(
            session,
            actor,
            parent_id=parse_id(body.parent_id, "parentId", "body"),
            name=body.name,
            description=body.description,
            type_=body.type,
            timezone=body.timezone,
        )
        return {"id": str(group.id)}


@router.get("/{group_id}")
async def get_group(group_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    group, ancestors, leaf = groups.get_with_ancestors(ctx.db, actor, parse_id(group_id))
    return native_json(wire.group(group, path=ancestors, leaf=leaf))


@router.put("/{group_id}", status_code=204)
async def update_group(group_id: str, body: GroupUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        groups.update(
            session,
            actor,
            parse_id(group_id),
            name=body.name,
            description="" if body.unset("description") else body.description,
            type_=body.type,
            timezone=body.timezone,
            parent_id=parse_id(body.parent_id, "parentId", "body") if body.parent_id is not None else None,
        )
    return Response(status_code=204)


@router.delete("/{group_id}", status_code=204)
async def delete_group(group_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        groups.delete(session, actor, parse_id(group_id))
    return Response(status_code=204)
