"""/api/v2/users"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, model_validator

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import (
    ApiModel,
    GroupIdsFilter,
    Limit,
    NameFilter,
    NoNul,
    Offset,
    UpdateModel,
    id_list,
)
from heron.api.v2 import PREFIX, wire
from heron.db.base import to_ms
from heron.tenancy import users
from heron.tenancy.access import Actor
from heron.tenancy.models import Group, User
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/users", tags=["users"])


class UserRoleIn(ApiModel):
    """`profileIds` (api.md) or a single `profileId` (the Sigfox document)."""

    group_id: str = Field(max_length=20)
    profile_ids: list[Annotated[str, Field(max_length=32)]] | None = Field(default=None, max_length=20)
    profile_id: str | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _one_form(self) -> UserRoleIn:
        if not self.profile_ids and not self.profile_id:
            raise ValueError("profileIds is required")
        return self

    def grant(self, index: int) -> users.RoleGrant:
        ids = list(self.profile_ids or []) + ([self.profile_id] if self.profile_id else [])
        return users.RoleGrant(parse_id(self.group_id, f"userRoles[{index}].groupId", "body"), tuple(ids))


class UserCreate(ApiModel):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: str = Field(max_length=250)
    timezone: str = Field(default="UTC", max_length=64)
    position: str = Field(default="", max_length=100)
    user_roles: list[UserRoleIn] = Field(min_length=1, max_length=50)
    password: str | None = Field(default=None, max_length=256)


class UserUpdate(UpdateModel):
    unsettable = frozenset({"position"})

    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    position: str | None = Field(default=None, max_length=100)
    locked: bool | None = None
    user_roles: list[UserRoleIn] | None = Field(default=None, min_length=1, max_length=50)
    password: str | None = Field(default=None, max_length=256)


class UserRolesIn(ApiModel):
    """`PUT /users/{id}/profiles` (Sigfox `addUserRoles`): roles to add."""

    user_roles: list[UserRoleIn] = Field(min_length=1, max_length=50)


def _user(actor: Actor, user: User, roles: list[tuple[Group, str]]) -> dict[str, Any]:
    # Roles on groups the caller cannot see stay hidden: they would name another tenant's group.
    roles = [(g, p) for g, p in roles if actor.actions_on(g.path)]
    return {
        "id": str(user.id),
        "firstName": user.first_name,
        "lastName": user.last_name,
        "email": user.email,
        "position": user.position,
        "timezone": user.timezone,
        "locked": user.disabled,
        "creationTime": to_ms(user.created_at),
        "lastLoginTime": to_ms(user.last_login_at),
        "createdBy": user.created_by,
        "lastEditedBy": user.updated_by,
        "lastEditionTime": to_ms(user.updated_at),
        "userRoles": [{"group": wire.min_group(g), "profile": wire.min_profile(p)} for g, p in roles],
    }


@router.get("")
async def list_users(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    group_ids: GroupIdsFilter = None,
    deep: bool = False,
    text: NameFilter = None,
    profile_id: Annotated[str | None, Query(alias="profileId", max_length=32), NoNul] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    fields: str | None = None,
    sort: str | None = None,
    authorizations: bool | None = None,
    page_id: Annotated[str | None, Query(alias="pageId")] = None,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    with ctx.db.read() as session:
        rows, has_more = users.list_users(
            session,
            actor,
            group_ids=gids or None,
            deep=deep,
            text=text,
            profile_id=profile_id,
            limit=limit,
            offset=offset,
        )
        roles = users.roles_of(session, [u.id for u in rows])
        data = [_user(actor, u, roles[u.id]) for u in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_user(body: UserCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        user = users.create(
            session,
            actor,
            email=body.email,
            first_name=body.first_name,
            last_name=body.last_name,
            timezone=body.timezone,
            position=body.position,
            password=body.password,
            roles=[r.grant(i) for i, r in enumerate(body.user_roles)],
        )
        return {"id": str(user.id)}


@router.get("/{user_id}")
async def get_user(user_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        user = users.get(session, actor, parse_id(user_id))
        return _user(actor, user, users.roles_of(session, [user.id])[user.id])


@router.put("/{user_id}", status_code=204)
async def update_user(user_id: str, body: UserUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        users.update(
            session,
            actor,
            parse_id(user_id),
            first_name=body.first_name,
            last_name=body.last_name,
            timezone=body.timezone,
            position="" if body.unset("position") else body.position,
            locked=body.locked,
            password=body.password,
            roles=[r.grant(i) for i, r in enumerate(body.user_roles)] if body.user_roles is not None else None,
        )
    return Response(status_code=204)


@router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        users.delete(session, actor, parse_id(user_id))
    return Response(status_code=204)


@router.put("/{user_id}/profiles", status_code=204)
async def add_roles(user_id: str, body: UserRolesIn, actor: CurrentActor, ctx: Ctx) -> Response:
    """Adds roles; `GET /users/{id}` lists them all (`userRoles`)."""
    with ctx.db.write() as session:
        users.add_roles(session, actor, parse_id(user_id), [r.grant(i) for i, r in enumerate(body.user_roles)])
    return Response(status_code=204)


@router.delete("/{user_id}/profiles/{profile_id}", status_code=204)
async def remove_profile(
    user_id: str,
    profile_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    group_id: Annotated[str | None, Query(alias="groupId", max_length=20)] = None,
) -> Response:
    gid = parse_id(group_id, "groupId", "query") if group_id is not None else None
    with ctx.db.write() as session:
        users.remove_profile(session, actor, parse_id(user_id), profile_id, gid)
    return Response(status_code=204)
