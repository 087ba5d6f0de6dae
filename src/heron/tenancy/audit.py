"""The audit log: who changed what. The same call stamps the object's createdBy/lastEditedBy,
so those fields always agree with the log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Forbidden
from heron.observability import request_id_var
from heron.tenancy.access import Actor
from heron.tenancy.models import AuditEvent


def record(
    session: Session,
    actor: Actor,
    action: str,
    obj: Any,
    object_type: str,
    group_path: str,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    now = now or utcnow()
    if action == "create" and hasattr(obj, "created_by"):
        obj.created_by = actor.ref
    elif action != "delete" and hasattr(obj, "updated_by"):
        obj.updated_by = actor.ref
        obj.updated_at = now
    session.add(
        AuditEvent(
            time=now,
            actor=actor.ref,
            action=action,
            object_type=object_type,
            object_id=str(obj.id),
            group_path=group_path,
            request_id=request_id_var.get(),
            details=json.dumps(details or {}, default=str)[:4000],
        )
    )


def list_events(
    session: Session,
    actor: Actor,
    *,
    object_type: str | None,
    object_id: str | None,
    since: datetime | None,
    before: datetime | None,
    limit: int,
    offset: int,
) -> list[AuditEvent]:
    if not actor.scopes("audit:read"):
        raise Forbidden("reading the audit log needs the right 'audit:read'")
    stmt = select(AuditEvent).where(actor.visible_filter(AuditEvent.group_path, "audit:read"))
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if since:
        stmt = stmt.where(AuditEvent.time >= since)
    if before:
        stmt = stmt.where(AuditEvent.time < before)
    stmt = stmt.order_by(AuditEvent.time.desc(), AuditEvent.id.desc()).limit(limit + 1).offset(offset)
    return list(session.scalars(stmt))
