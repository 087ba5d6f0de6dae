"""/api/v2/api-users"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import ApiModel, GroupIdsFilter, Limit, NoNul, Offset, UpdateModel, id_list
from heron.api.v2 import PREFIX, wire
from heron.db.base import to_ms
from heron.tenancy import api_users
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/api-users", tags=["api-users"])

ProfileId = Annotated[str, Field(max_length=32)]


class ApiUserCreate(ApiModel):
    group_id: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=100)
    timezone: str = Field(max_length=64)
    profile_ids: list[ProfileId] = Field(min_length=1, max_length=20)
    device_type_id: str | None = Field(default=None, max_length=20, description="the bound Senet application")


class ApiUserUpdate(UpdateModel):
    unsettable = frozenset({"device_type_id"})

    name: str | None = Field(default=None, min_length=1, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    profile_ids: list[ProfileId] | None = Field(default=None, min_length=1, max_length=20)
    device_type_id: str | None = Field(default=None, max_length=20, description="null unbinds")


class ProfileIds(ApiModel):
    profile_ids: list[ProfileId] = Field(min_length=1, max_length=20)


def _api_user(view: api_users.ApiUserView) -> dict[str, Any]:
    a = view.api_user
    return {
        "id": str(a.id),
        "name": a.name,
        "timezone": a.timezone,
        "group": wire.min_group(view.group),
        "creationTime": to_ms(a.created_at),
        "createdBy": a.created_by,
        "lastEditedBy": a.updated_by,
        "lastEditionTime": to_ms(a.updated_at),
        "lastUsedTime": to_ms(a.last_used_at),
        "profiles": [wire.min_profile(p) for p in view.profile_ids],
        "deviceTypeId": None if a.device_type_id is None else str(a.device_type_id),
    }


@router.get("")
async def list_api_users(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    group_ids: GroupIdsFilter = None,
    profile_id: Annotated[str | None, Query(alias="profileId", max_length=32), NoNul] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    fields: str | None = None,
    authorizations: bool | None = None,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    with ctx.db.read() as session:
        rows, has_more = api_users.list_api_users(
            session, actor, group_ids=gids or None, profile_id=profile_id, limit=limit, offset=offset
        )
    return page(request, ctx, [_api_user(v) for v in rows], has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_api_user(body: ApiUserCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view, secret = api_users.create(
            session,
            actor,
            group_id=parse_id(body.group_id, "groupId", "body"),
            name=body.name,
            timezone=body.timezone,
            profile_ids=body.profile_ids,
            device_type_id=None
            if body.device_type_id is None
            else parse_id(body.device_type_id, "deviceTypeId", "body"),
        )
        return {"id": str(view.api_user.id), "accessToken": secret}


@router.get("/{api_user_id}")
async def get_api_user(api_user_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _api_user(api_users.get(session, actor, parse_id(api_user_id)))


@router.put("/{api_user_id}", status_code=204)
async def update_api_user(api_user_id: str, body: ApiUserUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    binding: Any = api_users.KEEP_BINDING
    if "device_type_id" in body.model_fields_set:
        binding = None if body.device_type_id is None else parse_id(body.device_type_id, "deviceTypeId", "body")
    with ctx.db.write() as session:
        api_users.update(
            session,
            actor,
            parse_id(api_user_id),
            name=body.name,
            timezone=body.timezone,
            profile_ids=body.profile_ids,
            device_type_id=binding,
        )
    return Response(status_code=204)


@router.delete("/{api_user_id}", status_code=204)
async def delete_api_user(api_user_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        api_users.delete(session, actor, parse_id(api_user_id))
    return Response(status_code=204)


@router.put("/{api_user_id}/profiles", status_code=204)
async def add_profiles(api_user_id: str, body: ProfileIds, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        api_users.add_profiles(session, actor, parse_id(api_user_id), body.profile_ids)
    return Response(status_code=204)


@router.delete("/{api_user_id}/profiles/{profile_id}", status_code=204)
async def remove_profile(api_user_id: str, profile_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        api_users.remove_profile(session, actor, parse_id(api_user_id), profile_id)
    return Response(status_code=204)


@router.put("/{api_user_id}/renew-credential")
async def renew_credential(api_user_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        return {"accessToken": api_users.renew_credential(session, actor, parse_id(api_user_id))}
