"""API access: credentials owned by a group, with profiles. The secret is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import InvalidInput, NotFound
from heron.registry.models import DeviceType
from heron.tenancy import audit
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, check_no_escalation
from heron.tenancy.models import ApiUser, ApiUserProfile, Group
from heron.tenancy.validation import check_timezone


class _Keep:
    """An update argument left as it is."""


KEEP_BINDING = _Keep()
SECRET_BYTES = 16  # 128 random bits, 32 hex characters like Sigfox access tokens


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


@dataclass
class ApiUserView:
    api_user: ApiUser
    group: Group
    profile_ids: list[str]


def _profiles(session: Session, api_user_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in api_user_ids}
    if api_user_ids:
        rows = session.execute(
            select(ApiUserProfile.api_user_id, ApiUserProfile.profile_id)
            .where(ApiUserProfile.api_user_id.in_(api_user_ids))
            .order_by(ApiUserProfile.profile_id)
        )
        for uid, pid in rows:
            out[uid].append(pid)
    return out


def get(session: Session, actor: Actor, api_user_id: int, action: str = "api_user:read") -> ApiUserView:
    row = session.execute(
        select(ApiUser, Group).join(Group, Group.id == ApiUser.group_id).where(ApiUser.id == api_user_id)
    ).first()
    if row is None:
        raise NotFound("API user not found")
    api_user, group = row
    if not actor.can("api_user:read", group.path):
        raise NotFound("API user not found")
    actor.require(action, group.path, "API user")
    return ApiUserView(api_user, group, _profiles(session, [api_user.id])[api_user.id])


def _check_name(name: str) -> str:
    if not 1 <= len(name.strip()) <= 100:
        raise InvalidInput.field("name", "must be 1 to 100 characters")
    return name.strip()


def _bound_device_type(session: Session, actor: Actor, group: Group, device_type_id: int) -> int:
    """The application (a LORAWAN device type) an API user may be bound to: one the caller may
    write devices in, inside the API user's group subtree. Senet calls without `appEui` act on it."""
    row = session.execute(
        select(DeviceType.network, Group.path)
        .join(Group, Group.id == DeviceType.group_id)
        .where(DeviceType.id == device_type_id)
    ).first()
    if row is None or not actor.can("device:read", row.path) or not row.path.startswith(group.path):
        raise InvalidInput.field("deviceTypeId", "no such device type in this API user's group or below")
    if row.network != "LORAWAN":
        raise InvalidInput.field("deviceTypeId", "must be a LORAWAN device type (a Senet application)")
    actor.require("device:write", row.path, "device type")
    return device_type_id


def create(
    session: Session,
    actor: Actor,
    *,
    group_id: int,
    name: str,
    timezone: str,
    profile_ids: list[str],
    device_type_id: int | None = None,
) -> tuple[ApiUserView, str]:
    group = session.get(Group, group_id)
    if group is None or not actor.actions_on(group.path):
        raise InvalidInput.field("groupId", "no such group")
    actor.require("api_user:write", group.path, "group")
    if not profile_ids:
        raise InvalidInput.field("profileIds", "at least one profile is required")
    check_no_escalation(actor, group.path, profile_ids)
    check_timezone(timezone)
    bound = _bound_device_type(session, actor, group, device_type_id) if device_type_id is not None else None
    secret = new_secret()
    api_user = ApiUser(
        group_id=group.id,
        name=_check_name(name),
        timezone=timezone,
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
        roles_version=1,
        device_type_id=bound,
    )
    session.add(api_user)
    session.flush()
    pids = list(dict.fromkeys(profile_ids))
    session.add_all(ApiUserProfile(api_user_id=api_user.id, profile_id=p) for p in pids)
    details: dict[str, object] = {"name": name, "profileIds": pids}
    if bound is not None:
        details["deviceTypeId"] = bound
    audit.record(session, actor, "create", api_user, "api_user", group.path, details)
    return ApiUserView(api_user, group, sorted(pids)), secret


def update(
    session: Session,
    actor: Actor,
    api_user_id: int,
    *,
    name: str | None = None,
    timezone: str | None = None,
    profile_ids: list[str] | None = None,
    device_type_id: int | _Keep | None = KEEP_BINDING,
) -> ApiUserView:
    """`device_type_id`: KEEP_BINDING leaves the binding, None unbinds, an id binds."""
    view = get(session, actor, api_user_id, "api_user:write")
    changes: dict[str, object] = {}
    if name is not None:
        view.api_user.name = changes["name"] = _check_name(name)  # type: ignore[assignment]
    if timezone is not None:
        view.api_user.timezone = changes["timezone"] = check_timezone(timezone)  # type: ignore[assignment]
    if profile_ids is not None:
        set_profiles(session, actor, view, profile_ids)
        changes["profileIds"] = profile_ids
    if not isinstance(device_type_id, _Keep):
        bound = None if device_type_id is None else _bound_device_type(session, actor, view.group, device_type_id)
        view.api_user.device_type_id = changes["deviceTypeId"] = bound  # type: ignore[assignment]
    audit.record(session, actor, "update", view.api_user, "api_user", view.group.path, changes)
    return view


def set_profiles(session: Session, actor: Actor, view: ApiUserView, profile_ids: list[str]) -> None:
    if not profile_ids:
        raise InvalidInput.field("profileIds", "at least one profile is required")
    check_no_escalation(actor, view.group.path, profile_ids)
    pids = list(dict.fromkeys(profile_ids))
    session.execute(sql_delete(ApiUserProfile).where(ApiUserProfile.api_user_id == view.api_user.id))
    session.add_all(ApiUserProfile(api_user_id=view.api_user.id, profile_id=p) for p in pids)
    view.api_user.roles_version += 1
    view.profile_ids = sorted(pids)


def add_profiles(session: Session, actor: Actor, api_user_id: int, profile_ids: list[str]) -> None:
    view = get(session, actor, api_user_id, "api_user:write")
    set_profiles(session, actor, view, view.profile_ids + profile_ids)
    audit.record(session, actor, "update", view.api_user, "api_user", view.group.path, {"addProfiles": profile_ids})


def remove_profile(session: Session, actor: Actor, api_user_id: int, profile_id: str) -> None:
    view = get(session, actor, api_user_id, "api_user:write")
    if profile_id not in view.profile_ids:
        raise NotFound("profile not held by this API user")
    remaining = [p for p in view.profile_ids if p != profile_id]
    if not remaining:
        raise InvalidInput.field("profileId", "an API user keeps at least one profile", "path")
    set_profiles(session, actor, view, remaining)
    audit.record(session, actor, "update", view.api_user, "api_user", view.group.path, {"removeProfile": profile_id})


def renew_credential(session: Session, actor: Actor, api_user_id: int) -> str:
    view = get(session, actor, api_user_id, "api_user:write")
    secret = new_secret()
    view.api_user.secret_hash = hash_secret(secret)
    view.api_user.credential_renewed_at = utcnow()
    audit.record(session, actor, "credential.renew", view.api_user, "api_user", view.group.path)
    return secret


def delete(session: Session, actor: Actor, api_user_id: int) -> None:
    """Revoke: the row goes, so the secret fails on the very next request in every process."""
    view = get(session, actor, api_user_id, "api_user:write")
    audit.record(session, actor, "delete", view.api_user, "api_user", view.group.path, {"name": view.api_user.name})
    session.delete(view.api_user)


def list_api_users(
    session: Session,
    actor: Actor,
    *,
    group_ids: list[int] | None,
    profile_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[ApiUserView], bool]:
    conds = [actor.visible_filter(Group.path, "api_user:read")]
    if group_ids:
        for gid in group_ids:
            groups_service.get(session, actor, gid)
        conds.append(ApiUser.group_id.in_(group_ids))
    if profile_id:
        conds.append(ApiUser.id.in_(select(ApiUserProfile.api_user_id).where(ApiUserProfile.profile_id == profile_id)))
    rows = list(
        session.execute(
            select(ApiUser, Group)
            .join(Group, Group.id == ApiUser.group_id)
            .where(*conds)
            .order_by(ApiUser.id)
            .limit(limit + 1)
            .offset(offset)
        )
    )
    profiles = _profiles(session, [a.id for a, _ in rows[:limit]])
    return [ApiUserView(a, g, profiles[a.id]) for a, g in rows[:limit]], len(rows) > limit
