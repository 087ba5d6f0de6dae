"""Groups: a tree of any depth under one root, stored as materialized paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, exists, func, literal, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.db.fastpath import FastQuery, utc
from heron.errors import Conflict, Forbidden, InvalidInput, NotFound
from heron.tenancy import audit
from heron.tenancy.access import Actor, in_any_subtree, in_subtree
from heron.tenancy.models import ApiUser, Group, UserRole
from heron.tenancy.validation import check_timezone, parse_id

GROUP_TYPES = {0, 2, 5, 6, 7, 8, 9, 10, 11}


class GroupRecord(Protocol):
    """What readers of a group need: an ORM `Group` or a fast-path `GroupRow`."""

    @property
    def id(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def depth(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def name_ci(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def type(self) -> int: ...
    @property
    def timezone(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def created_by(self) -> str | None: ...
    @property
    def updated_at(self) -> datetime | None: ...
    @property
    def updated_by(self) -> str | None: ...


# What makes a group "not empty": (label, function returning a select of one row that exists
# when the group holds such a thing). Later domains (device types, contracts...) register theirs.
ContentCheck = Callable[[int], Select[Any]]
_CONTENT_CHECKS: list[tuple[str, ContentCheck]] = [
    ("subgroups", lambda gid: select(Group.id).where(Group.parent_id == gid).limit(1)),
    ("API users", lambda gid: select(ApiUser.id).where(ApiUser.group_id == gid).limit(1)),
    ("user roles", lambda gid: select(UserRole.user_id).where(UserRole.group_id == gid).limit(1)),
]


def register_content_check(label: str, check: ContentCheck) -> None:
    _CONTENT_CHECKS.append((label, check))


def get_root(session: Session) -> Group | None:
    return session.scalar(select(Group).where(Group.parent_id.is_(None)))


def create_root(session: Session, name: str = "Root") -> Group:
    group = Group(
        parent_id=None,
        path="/new/",
        depth=0,
        name=name,
        name_ci=name.lower(),
        type=0,
        timezone="UTC",
        created_at=utcnow(),
        created_by="system",
    )
    session.add(group)
    session.flush()
    group.path = f"/{group.id}/"
    return group


def _load(session: Session, group_id: int) -> Group:
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound("group not found")
    return group


def get(session: Session, actor: Actor, group_id: int, action: str = "group:read") -> Group:
    group = _load(session, group_id)
    actor.require(action, group.path, "group")
    return group


def resolve(session: Session, actor: Actor, ref: str) -> Group:
    """A group named by id, or `root` for the caller's topmost visible group (CLI convenience)."""
    if ref == "root":
        scopes = actor.scopes("group:read")
        if not scopes:
            raise NotFound("group not found")
        root = get_root(session) if scopes[0] == "/" else session.scalar(select(Group).where(Group.path == scopes[0]))
        if root is None:
            raise NotFound("group not found")
        return root
    return get(session, actor, parse_id(ref, "group"))


def ancestors(session: Session, actor: Actor, group: Group) -> list[Group]:
    """The group's ancestors visible to the caller, nearest first (the Sigfox `path` field)."""
    return ancestors_of_many(session, actor, [group])[group.id]


def ancestors_of_many(session: Session, actor: Actor, members: list[Group]) -> dict[int, list[Group]]:
    """`ancestors` for a whole page of groups in one query."""
    chains = {g.id: [int(x) for x in g.path.strip("/").split("/")[:-1]] for g in members}
    wanted = {i for chain in chains.values() for i in chain}
    if not wanted:
        return {gid: [] for gid in chains}
    rows = {g.id: g for g in session.scalars(select(Group).where(Group.id.in_(wanted)))}
    visible = {i: g for i, g in rows.items() if actor.actions_on(g.path)}
    return {gid: [visible[i] for i in reversed(chain) if i in visible] for gid, chain in chains.items()}


# A group and its whole ancestor chain in one statement: a recursive walk up `parent_id` (one
# primary-key lookup per level), each row with a child-exists flag. It runs on every
# `GET /groups/{id}`, so it goes through the fast path (see heron.db.fastpath).
_GROUP_CHAIN = FastQuery(
    "WITH RECURSIVE chain(id) AS ("
    " SELECT CAST(:gid AS INTEGER) UNION ALL"
    " SELECT g.parent_id FROM groups g JOIN chain ON g.id = chain.id WHERE g.parent_id IS NOT NULL)"
    " SELECT g.id, g.path, g.depth, g.name, g.name_ci, g.description, g.type, g.timezone,"
    " g.created_at, g.created_by, g.updated_at, g.updated_by,"
    " EXISTS (SELECT 1 FROM groups c WHERE c.parent_id = g.id)"
    " FROM groups g WHERE g.id IN (SELECT id FROM chain)"
)


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A group read through the fast path (same attributes as the ORM `Group` readers use)."""

    id: int
    path: str
    depth: int
    name: str
    name_ci: str
    description: str
    type: int
    timezone: str
    created_at: datetime
    created_by: str | None
    updated_at: datetime | None
    updated_by: str | None
    has_children: bool


def get_with_ancestors(db: Database, actor: Actor, group_id: int) -> tuple[GroupRow, list[GroupRow], bool]:
    """A group, its ancestors visible to the caller (nearest first) and whether it is a leaf."""
    rows: dict[int, GroupRow] = {}
    for gid, path, depth, name, name_ci, description, type_, tz, created, by, updated, up_by, kids in _GROUP_CHAIN.all(
        db, {"gid": group_id}
    ):
        created_at = utc(created)
        assert created_at is not None
        rows[gid] = GroupRow(
            gid, path, depth, name, name_ci, description, type_, tz, created_at, by, utc(updated), up_by, bool(kids)
        )
    group = rows.get(group_id)
    if group is None:
        raise NotFound("group not found")
    actor.require("group:read", group.path, "group")
    chain = sorted((r for r in rows.values() if r.id != group_id), key=lambda r: -r.depth)
    return group, [a for a in chain if actor.actions_on(a.path)], not group.has_children


@dataclass
class GroupPage:
    groups: list[Group]
    has_more: bool
    total: int | None
    leaves: set[int]


def list_groups(
    session: Session,
    actor: Actor,
    *,
    parent_ids: list[int] | None = None,
    deep: bool = False,
    name: str | None = None,
    types: list[int] | None = None,
    limit: int = 100,
    offset: int = 0,
    with_total: bool = False,
) -> GroupPage:
    """Visible groups in tree order (by path, an index scan). With `parent_ids`, their children
    (or whole subtrees with `deep`), else every group the caller can see."""
    conds = []
    if parent_ids:
        # Rights inherit down the tree, so a visible parent's whole subtree is visible: no
        # second range on the path (SQLite would pick one of the two and filter by the other).
        parents = [get(session, actor, pid) for pid in parent_ids]
        if deep:
            conds.append(in_any_subtree(Group.path, [p.path for p in parents]))
            conds.append(Group.id.not_in([p.id for p in parents]))
        else:
            conds.append(Group.parent_id.in_([p.id for p in parents]))
    else:
        conds.append(actor.visible_filter(Group.path, "group:read"))
    if name:
        conds.append(Group.name_ci.contains(name.lower(), autoescape=True))
    if types:
        conds.append(Group.type.in_(types))
    stmt = select(Group).where(*conds).order_by(Group.path).limit(limit + 1).offset(offset)
    rows = list(session.scalars(stmt))
    has_more = len(rows) > limit
    rows = rows[:limit]
    total = None
    if with_total:
        total = session.scalar(select(func.count()).select_from(Group).where(*conds))
    leaves: set[int] = set()
    if rows:
        ids = [g.id for g in rows]
        with_children = set(session.scalars(select(Group.parent_id).where(Group.parent_id.in_(ids)).distinct()))
        leaves = set(ids) - with_children
    return GroupPage(rows, has_more, total, leaves)


def _check_fields(name: str | None, type_: int | None, timezone: str | None) -> None:
    if name is not None and not (3 <= len(name.strip()) <= 100):
        raise InvalidInput.field("name", "must be 3 to 100 characters")
    if type_ is not None and type_ not in GROUP_TYPES:
        raise InvalidInput.field("type", f"unknown group type {type_}")
    if timezone is not None:
        check_timezone(timezone)


def create(
    session: Session,
    actor: Actor,
    *,
    parent_id: int,
    name: str,
    description: str = "",
    type_: int = 2,
    timezone: str = "UTC",
) -> Group:
    parent = _load_parent(session, actor, parent_id)
    _check_fields(name, type_, timezone)
    now = utcnow()
    group = Group(
        parent_id=parent.id,
        path=f"{parent.path}new/",
        depth=parent.depth + 1,
        name=name.strip(),
        name_ci=name.strip().lower(),
        description=description,
        type=type_,
        timezone=timezone,
        created_at=now,
    )
    session.add(group)
    session.flush()
    group.path = f"{parent.path}{group.id}/"
    audit.record(session, actor, "create", group, "group", group.path, {"name": group.name, "parentId": parent.id})
    return group


def _load_parent(session: Session, actor: Actor, parent_id: int) -> Group:
    parent = session.get(Group, parent_id)
    if parent is None or not actor.actions_on(parent.path):
        raise InvalidInput.field("parentId", "no such group")
    actor.require("group:write", parent.path, "group")
    return parent


def update(
    session: Session,
    actor: Actor,
    group_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    type_: int | None = None,
    timezone: str | None = None,
    parent_id: int | None = None,
) -> Group:
    group = get(session, actor, group_id, "group:write")
    _check_fields(name, type_, timezone)
    changes: dict[str, object] = {}
    if name is not None:
        group.name, group.name_ci = name.strip(), name.strip().lower()
        changes["name"] = group.name
    if description is not None:
        group.description = description
        changes["description"] = description
    if type_ is not None:
        group.type = type_
        changes["type"] = type_
    if timezone is not None:
        group.timezone = timezone
        changes["timezone"] = timezone
    if parent_id is not None and parent_id != group.parent_id:
        move(session, actor, group, parent_id)
        changes["parentId"] = parent_id
    audit.record(session, actor, "update", group, "group", group.path, changes)
    return group


def move(session: Session, actor: Actor, group: Group, new_parent_id: int) -> None:
    """Re-parent a group: one set-based UPDATE rewrites the paths of its whole subtree."""
    if group.parent_id is None:
        raise InvalidInput.field("parentId", "the root group cannot be moved")
    new_parent = _load_parent(session, actor, new_parent_id)
    if new_parent.path.startswith(group.path):
        raise InvalidInput.field("parentId", "a group cannot move under itself or its own subgroups")
    old_path = group.path
    new_path = f"{new_parent.path}{group.id}/"
    depth_delta = new_parent.depth + 1 - group.depth
    session.flush()
    session.execute(
        sql_update(Group)
        .where(in_subtree(Group.path, old_path))
        .values(
            path=literal(new_path) + func.substr(Group.path, len(old_path) + 1),
            depth=Group.depth + depth_delta,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(sql_update(Group).where(Group.id == group.id).values(parent_id=new_parent.id))
    session.expire_all()
    session.refresh(group)


def delete(session: Session, actor: Actor, group_id: int) -> None:
    group = get(session, actor, group_id, "group:write")
    if group.parent_id is None:
        raise Conflict("the root group cannot be deleted")
    if not actor.can("group:write", group.path[: group.path.rstrip("/").rfind("/") + 1]):
        raise Forbidden("deleting a group needs the right 'group:write' on its parent")
    for label, check in _CONTENT_CHECKS:
        if session.scalar(select(exists(check(group.id)))):
            raise Conflict(f"group {group.id} is not empty: it holds {label}")
    audit.record(session, actor, "delete", group, "group", group.path, {"name": group.name})
    session.delete(group)
