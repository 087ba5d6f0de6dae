"""/api/v2/profiles: the catalog of profiles (see docs/PROFILES.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from heron.api.context import Ctx, CurrentActor
from heron.api.paging import page
from heron.api.schemas import Limit, Offset
from heron.api.v2 import PREFIX, wire
from heron.errors import NotFound
from heron.tenancy import groups
from heron.tenancy.models import Group
from heron.tenancy.profiles import ACTIONS, PROFILES
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/profiles", tags=["profiles"])


def _profile(pid: str, group: Group | None) -> dict[str, Any]:
    p = PROFILES[pid]
    out: dict[str, Any] = {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "roles": [{"id": a, "name": ACTIONS[a]} for a in ACTIONS if a in p.actions],
    }
    if group is not None:
        out["group"] = wire.min_group(group)
    return out


@router.get("")
async def list_profiles(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    group_id: Annotated[str | None, Query(alias="groupId", max_length=20)] = None,
    inherit: bool | None = None,
    fields: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
    authorizations: bool | None = None,
) -> dict[str, Any]:
    group = None
    if group_id is not None:
        with ctx.db.read() as session:
            group = groups.get(session, actor, parse_id(group_id, "groupId", "query"))
    ids = list(PROFILES)[offset : offset + limit + 1]
    data = [_profile(pid, group) for pid in ids[:limit]]
    return page(request, ctx, data, has_more=len(ids) > limit, limit=limit, offset=offset)


@router.get("/{profile_id}")
async def get_profile(profile_id: str, actor: CurrentActor) -> dict[str, Any]:
    if profile_id not in PROFILES:
        raise NotFound("profile not found")
    return _profile(profile_id, None)
