"""Users: people who sign in to the GUI, holding profiles per group."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Conflict, Forbidden, InvalidInput, NotFound
from heron.tenancy import audit
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, Role, check_no_escalation, in_any_subtree
from heron.tenancy.models import Group, User, UserRole
from heron.tenancy.passwords import hash_password
from heron.tenancy.validation import check_timezone

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,185}\.[^@\s]{1,63}$|^[^@\s]{1,64}@localhost$")


@dataclass(frozen=True)
class RoleGrant:
    group_id: int
    profile_ids: tuple[str, ...]


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 250 or not _EMAIL.match(email):
        raise InvalidInput.field("email", "not a valid email address")
    return email


def roles_of(session: Session, user_ids: list[int]) -> dict[int, list[tuple[Group, str]]]:
    out: dict[int, list[tuple[Group, str]]] = defaultdict(list)
    if not user_ids:
        return out
    rows = session.execute(
        select(UserRole.user_id, Group, UserRole.profile_id)
        .join(Group, Group.id == UserRole.group_id)
        .where(UserRole.user_id.in_(user_ids))
        .order_by(Group.path, UserRole.profile_id)
    )
    for uid, group, pid in rows:
        out[uid].append((group, pid))
    return out


def actor_for(session: Session, user: User) -> Actor:
    by_group: dict[int, tuple[str, set[str]]] = {}
    for group, pid in roles_of(session, [user.id])[user.id]:
        by_group.setdefault(group.id, (group.path, set()))[1].add(pid)
    roles = tuple(Role(gid, path, frozenset(pids)) for gid, (path, pids) in by_group.items())
    return Actor("user", user.id, user.email, roles)


def _visible_user_filter(actor: Actor, action: str) -> ColumnElement[bool]:
    visible_roles = (
        select(UserRole.user_id)
        .join(Group, Group.id == UserRole.group_id)
        .where(in_any_subtree(Group.path, actor.scopes(action)))
    )
    cond: ColumnElement[bool] = User.id.in_(visible_roles)
    if actor.kind == "user" and actor.id is not None:
        cond = or_(cond, User.id == actor.id)
    return cond


def get(session: Session, actor: Actor, user_id: int) -> User:
    user = session.scalar(select(User).where(User.id == user_id, _visible_user_filter(actor, "user:read")))
    if user is None:
        raise NotFound("user not found")
    return user


def _require_write(session: Session, actor: Actor, user: User) -> None:
    """Changing a user needs `user:write` on every group the user holds a role on, so a
    customer admin cannot touch an operator who also holds a role in the customer's group."""
    held = roles_of(session, [user.id])[user.id]
    if not held and actor.kind != "system":
        raise Forbidden("this user holds no role you administer")
    for group, _pid in held:
        if not actor.can("user:write", group.path):
            raise Forbidden("this user holds roles outside the groups you administer")


def _check_grants(session: Session, actor: Actor, grants: list[RoleGrant]) -> list[tuple[Group, str]]:
    out: list[tuple[Group, str]] = []
    if not grants:
        raise InvalidInput.field("userRoles", "at least one role is required")
    for i, grant in enumerate(grants):
        group = session.get(Group, grant.group_id)
        if group is None or not actor.actions_on(group.path):
            raise InvalidInput.field(f"userRoles[{i}].groupId", "no such group")
        actor.require("user:write", group.path, "group")
        if not grant.profile_ids:
            raise InvalidInput.field(f"userRoles[{i}].profileIds", "at least one profile is required")
        check_no_escalation(actor, group.path, grant.profile_ids)
        out += [(group, pid) for pid in dict.fromkeys(grant.profile_ids)]
    return out


def create(
    session: Session,
    actor: Actor,
    *,
    email: str,
    first_name: str,
    last_name: str,
    roles: list[RoleGrant],
    timezone: str = "UTC",
    position: str = "",
    password: str | None = None,
) -> User:
    email = normalize_email(email)
    check_timezone(timezone)
    granted = _check_grants(session, actor, roles)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("a user with this email already exists")
    user = User(
        email=email,
        first_name=first_name,
        last_name=last_name,
        position=position,
        timezone=timezone,
        password_hash=hash_password(password) if password else None,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("a user with this email already exists") from exc
    _replace_roles(session, user, granted)
    audit.record(session, actor, "create", user, "user", granted[0][0].path, {"email": email})
    return user


def _replace_roles(session: Session, user: User, granted: list[tuple[Group, str]]) -> None:
    session.execute(sql_delete(UserRole).where(UserRole.user_id == user.id))
    session.add_all(
        UserRole(user_id=user.id, group_id=gid, profile_id=pid)
        for gid, pid in dict.fromkeys((g.id, pid) for g, pid in granted)
    )


def _primary_path(session: Session, user: User) -> str:
    roles = roles_of(session, [user.id])[user.id]
    return roles[0][0].path if roles else "/"


def update(
    session: Session,
    actor: Actor,
    user_id: int,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    timezone: str | None = None,
    position: str | None = None,
    locked: bool | None = None,
    roles: list[RoleGrant] | None = None,
    password: str | None = None,
) -> User:
    user = get(session, actor, user_id)
    _require_write(session, actor, user)
    changes: dict[str, object] = {}
    if first_name is not None:
        user.first_name = changes["firstName"] = first_name  # type: ignore[assignment]
    if last_name is not None:
        user.last_name = changes["lastName"] = last_name  # type: ignore[assignment]
    if position is not None:
        user.position = changes["position"] = position  # type: ignore[assignment]
    if timezone is not None:
        user.timezone = changes["timezone"] = check_timezone(timezone)  # type: ignore[assignment]
    if locked is not None:
        if actor.kind == "user" and actor.id == user.id and locked:
            raise InvalidInput.field("locked", "you cannot lock your own account")
        user.disabled = changes["locked"] = locked  # type: ignore[assignment]
    if password is not None:
        user.password_hash = hash_password(password)
        changes["password"] = "changed"  # noqa: S105 - an audit note, not a secret
    if roles is not None:
        granted = _check_grants(session, actor, roles)
        _replace_roles(session, user, granted)
        changes["userRoles"] = [{"groupId": g.id, "profileId": p} for g, p in granted]
    audit.record(session, actor, "update", user, "user", _primary_path(session, user), changes)
    return user


def add_roles(session: Session, actor: Actor, user_id: int, roles: list[RoleGrant]) -> None:
    """`PUT /users/{id}/profiles`: the roles join those the user holds (checked as on create:
    `user:write` on each group, no escalation), as `api_users.add_profiles` does for a key."""
    user = get(session, actor, user_id)
    _require_write(session, actor, user)
    granted = _check_grants(session, actor, roles)
    _replace_roles(session, user, roles_of(session, [user.id])[user.id] + granted)
    details = {"addRoles": [{"groupId": g.id, "profileId": p} for g, p in granted]}
    audit.record(session, actor, "update", user, "user", _primary_path(session, user), details)


def remove_profile(session: Session, actor: Actor, user_id: int, profile_id: str, group_id: int | None = None) -> None:
    """`DELETE /users/{id}/profiles/{profileId}[?groupId=]`: the profile leaves the user's roles
    on that group (on every group without `groupId`); the user keeps at least one role, as an
    API user keeps a profile (`api_users.remove_profile`)."""
    user = get(session, actor, user_id)
    _require_write(session, actor, user)
    held = roles_of(session, [user.id])[user.id]
    remaining = [(g, p) for g, p in held if p != profile_id or (group_id is not None and g.id != group_id)]
    if len(remaining) == len(held):
        raise NotFound("profile not held by this user" + (" on this group" if group_id is not None else ""))
    if not remaining:
        raise InvalidInput.field("profileId", "a user keeps at least one role", "path")
    _replace_roles(session, user, remaining)
    details = {"removeProfile": profile_id, "groupId": group_id}
    audit.record(session, actor, "update", user, "user", _primary_path(session, user), details)


def delete(session: Session, actor: Actor, user_id: int) -> None:
    user = get(session, actor, user_id)
    _require_write(session, actor, user)
    if actor.kind == "user" and actor.id == user.id:
        raise InvalidInput.field("id", "you cannot delete your own account", "path")
    audit.record(session, actor, "delete", user, "user", _primary_path(session, user), {"email": user.email})
    session.execute(sql_delete(UserRole).where(UserRole.user_id == user.id))
    session.delete(user)


def list_users(
    session: Session,
    actor: Actor,
    *,
    group_ids: list[int] | None,
    deep: bool,
    text: str | None,
    profile_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[User], bool]:
    conds = [_visible_user_filter(actor, "user:read")]
    if group_ids:
        paths = [groups_service.get(session, actor, gid).path for gid in group_ids]
        in_groups = select(UserRole.user_id).join(Group, Group.id == UserRole.group_id)
        in_groups = (
            in_groups.where(in_any_subtree(Group.path, paths))
            if deep
            else in_groups.where(UserRole.group_id.in_(group_ids))
        )
        conds.append(User.id.in_(in_groups))
    if profile_id:
        conds.append(User.id.in_(select(UserRole.user_id).where(UserRole.profile_id == profile_id)))
    if text:
        needle = text.lower()
        conds.append(
            or_(
                User.email.contains(needle, autoescape=True),
                func.lower(User.first_name).contains(needle, autoescape=True),
                func.lower(User.last_name).contains(needle, autoescape=True),
            )
        )
    rows = list(session.scalars(select(User).where(*conds).order_by(User.id).limit(limit + 1).offset(offset)))
    return rows[:limit], len(rows) > limit
