"""How tenancy objects look on the wire (Sigfox v2 shapes, times in epoch milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from heron.db.base import to_ms
from heron.tenancy.groups import GroupRecord
from heron.tenancy.models import Group
from heron.tenancy.profiles import PROFILES


def min_group(group: GroupRecord) -> dict[str, Any]:
    return {"id": str(group.id), "name": group.name, "type": group.type, "level": group.depth}


def min_profile(profile_id: str) -> dict[str, Any]:
    return {"id": profile_id, "name": PROFILES[profile_id].name}


def group_page(members: list[Group], paths: dict[int, list[Group]], leaves: set[int]) -> list[dict[str, Any]]:
    """A page of groups; ancestors shared by the page are rendered once."""
    rendered: dict[int, dict[str, Any]] = {}
    out = []
    for g in members:
        path = []
        for a in paths[g.id]:
            if a.id not in rendered:
                rendered[a.id] = min_group(a)
            path.append(rendered[a.id])
        out.append(group(g, path=path, leaf=g.id in leaves))
    return out


def group(g: GroupRecord, *, path: Sequence[GroupRecord | dict[str, Any]], leaf: bool) -> dict[str, Any]:
    return {
        "id": str(g.id),
        "name": g.name,
        "nameCI": g.name_ci,
        "description": g.description,
        "type": g.type,
        "timezone": g.timezone,
        "level": g.depth,
        "path": [a if isinstance(a, dict) else min_group(a) for a in path],
        "leaf": leaf,
        "createdBy": g.created_by,
        "creationTime": to_ms(g.created_at),
        "lastEditedBy": g.updated_by,
        "lastEditionTime": to_ms(g.updated_at),
    }
