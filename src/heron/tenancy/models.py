"""Tables of the tenancy domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime, path_column_type


class Group(Base):
    """A node of the group tree. `path` is the materialized path of ids, `/1/5/23/`, so the
    subtree of a group is the index range [path, path-with-last-'/'-replaced-by-'0')."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"), index=True)
    path: Mapped[str] = mapped_column(path_column_type(), unique=True)
    depth: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    name_ci: Mapped[str] = mapped_column(String(100), index=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    type: Mapped[int] = mapped_column(Integer, default=2)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(250), unique=True)  # stored lower-case
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    position: Mapped[str] = mapped_column(String(100), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UserRole(Base):
    """A user holds a profile on a group (and so on its subgroups)."""

    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True, index=True)
    profile_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class ApiUser(Base):
    """API access: a credential owned by a group with profiles on it. Only the SHA-256 of the
    secret is kept; the secret has >= 128 random bits, so a fast hash is enough."""

    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    roles_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    credential_renewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The Senet "application" (a LORAWAN device type) calls without `appEui` act on.
    device_type_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id", ondelete="SET NULL"))


class ApiUserProfile(Base):
    __tablename__ = "api_user_profiles"

    api_user_id: Mapped[int] = mapped_column(ForeignKey("api_users.id", ondelete="CASCADE"), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class WebSession(Base):
    """A signed-in GUI session; the cookie carries the id, the table the truth (logout ends it)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LoginThrottle(Base):
    """Failed sign-ins per key (`email:<e>` or `addr:<ip>`), to lock out guessing."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEvent(Base):
    """Who changed what, when. `group_path` places the event in the tree for visibility."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_group_path_time", "group_path", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))  # "user:3", "api_user:7", "system"
    action: Mapped[str] = mapped_column(String(40))  # create, update, delete, credential.renew ...
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(64))
    group_path: Mapped[str] = mapped_column(path_column_type())
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(String(4000), default="{}")


__all__ = [
    "ApiUser",
    "ApiUserProfile",
    "AuditEvent",
    "Group",
    "LoginThrottle",
    "User",
    "UserRole",
    "WebSession",
]
