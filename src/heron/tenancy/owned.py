"""Small helpers shared by the registry services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute, Session

from heron.errors import InvalidInput
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, in_any_subtree
from heron.tenancy.models import Group

MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def owning_group(session: Session, actor: Actor, group_id: int, action: str, field: str = "groupId") -> Group:
    """The group a new object goes into: an unknown or invisible group is a 400 naming the field
    (a reference in a body is input), then the one permission check."""
    group = session.get(Group, group_id)
    if group is None or not actor.actions_on(group.path):
        raise InvalidInput.field(field, "no such group")
    actor.require(action, group.path, "group")
    return group


def check_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput.field(field, "must be 1 to 100 characters")
    return name


def from_ms(value: int, field: str) -> datetime:
    if not 0 <= value <= MAX_EPOCH_MS:
        raise InvalidInput.field(field, "must be epoch milliseconds between 0 and year 9999")
    return datetime.fromtimestamp(value / 1000, UTC)


class _Keep:
    """Marks a field an update leaves as it is (None means "unset")."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


def in_groups(
    session: Session,
    actor: Actor,
    group_ids: list[int],
    deep: bool,
    group_id_column: InstrumentedAttribute[int],
    path_column: InstrumentedAttribute[str] = Group.path,
) -> ColumnElement[bool]:
    """The `groupIds` / `deep` list filter: objects directly in the named groups, or anywhere in
    their subtrees with `deep`. Each named group must be visible (else NotFound)."""
    parents = [groups_service.get(session, actor, gid) for gid in group_ids]
    if deep:
        return in_any_subtree(path_column, [p.path for p in parents])
    return group_id_column.in_([p.id for p in parents])
