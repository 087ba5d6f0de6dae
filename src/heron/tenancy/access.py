"""The one permission check. Every service function receives the acting `Actor` and asks it,
for the group that owns the object, whether an action is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, false, or_
from sqlalchemy.orm import InstrumentedAttribute

from heron.errors import Forbidden, InvalidInput, NotFound
from heron.tenancy.profiles import PROFILES, actions_of


def subtree_upper_bound(path: str) -> str:
    """Paths end with '/'; every descendant of `path` sorts in [path, path[:-1] + '0')."""
    return path[:-1] + chr(ord("/") + 1)


def in_subtree(column: InstrumentedAttribute[str] | ColumnElement[str], path: str) -> ColumnElement[bool]:
    return and_(column >= path, column < subtree_upper_bound(path))


def in_any_subtree(
    column: InstrumentedAttribute[str] | ColumnElement[str], paths: Iterable[str]
) -> ColumnElement[bool]:
    clauses = [in_subtree(column, p) for p in paths]
    return or_(*clauses) if clauses else false()


@dataclass(frozen=True)
class Role:
    group_id: int
    path: str
    profiles: frozenset[str]
    actions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", actions_of(self.profiles))


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user, an API user, or the operator's own CLI (`system`)."""

    kind: str
    id: int | None
    name: str
    roles: tuple[Role, ...]
    bound_device_type_id: int | None = None

    @property
    def ref(self) -> str:
        return self.kind if self.id is None else f"{self.kind}:{self.id}"

    def actions_on(self, path: str) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for role in self.roles:
            if path.startswith(role.path):
                out |= role.actions
        return out

    def require(self, action: str, path: str, what: str = "object") -> None:
        """Raise NotFound when the caller cannot see `path` at all (so foreign objects are
        indistinguishable from missing ones), Forbidden when it sees it but lacks `action`."""
        actions = self.actions_on(path)
        if not actions:
            raise NotFound(f"{what} not found")
        if action not in actions:
            raise Forbidden(f"this credential lacks the right {action!r} here")

    def can(self, action: str, path: str) -> bool:
        return action in self.actions_on(path)

    def scopes(self, action: str) -> list[str]:
        """The minimal set of subtree roots where `action` is allowed."""
        paths = sorted({r.path for r in self.roles if action in r.actions})
        out: list[str] = []
        for p in paths:
            if not any(p.startswith(q) for q in out):
                out.append(p)
        return out

    def visible_filter(
        self, column: InstrumentedAttribute[str] | ColumnElement[str], action: str
    ) -> ColumnElement[bool]:
        return in_any_subtree(column, self.scopes(action))


SYSTEM = Actor("system", None, "system", (Role(0, "/", frozenset({"ADMIN", "NETWORK_OPERATOR"})),))


def check_no_escalation(actor: Actor, path: str, profile_ids: Iterable[str]) -> None:
    """Granting profiles on a group needs every action they carry, held by the granter there."""
    wanted = list(profile_ids)
    unknown = [p for p in wanted if p not in PROFILES]
    if unknown:
        raise InvalidInput.field("profileIds", f"unknown profile {unknown[0]!r}")
    missing = actions_of(wanted) - actor.actions_on(path)
    if missing:
        raise Forbidden("cannot grant more than you hold on this group: missing " + ", ".join(sorted(missing)))
