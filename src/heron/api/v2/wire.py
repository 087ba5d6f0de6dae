"""How tenancy objects look on the wire (Sigfox v2 shapes, times in epoch milliseconds)."""

from __future__ import annotations

from typing import Any

from heron.db.base import to_ms
from heron.tenancy.models import Group
from heron.tenancy.profiles import PROFILES


def min_group(group: Group) -> dict[str, Any]:
    return {"id": str(group.id), "name": group.name, "type": group.type, "level": group.depth}


def min_profile(profile_id: str) -> dict[str, Any]:
    return {"id": profile_id, "name": PROFILES[profile_id].name}


def group(g: Group, *, path: list[Group], leaf: bool) -> dict[str, Any]:
    return {
        "id": str(g.id),
        "name": g.name,
        "nameCI": g.name_ci,
        "description": g.description,
        "type": g.type,
        "timezone": g.timezone,
        "level": g.depth,
        "path": [min_group(a) for a in path],
        "leaf": leaf,
        "createdBy": g.created_by,
        "creationTime": to_ms(g.created_at),
        "lastEditedBy": g.updated_by,
        "lastEditionTime": to_ms(g.updated_at),
    }
