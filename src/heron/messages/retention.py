"""Message retention: each contract keeps its devices' messages `message_retention_days` (30 by
default, and for devices without a contract); older ones are purged in batches by a periodic
task, with their receptions, deliveries and downlinks (foreign keys cascade). Each device
records when a purge last removed some of its messages (`lastMessagePurge`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from heron.messages.models import Message
from heron.registry.models import Contract, Device

DEFAULT_RETENTION_DAYS = 30
BATCH = 5000


def purge_messages(session: Session, now: datetime, limit: int = BATCH) -> int:
    """Up to `limit` expired messages removed; the number removed."""
    retention: list[tuple[int | None, int]] = [
        (cid, days) for cid, days in session.execute(select(Contract.id, Contract.message_retention_days))
    ]
    retention.append((None, DEFAULT_RETENTION_DAYS))
    removed = 0
    for contract_id, days in retention:
        if removed >= limit:
            break
        holder = Device.contract_id.is_(None) if contract_id is None else Device.contract_id == contract_id
        rows = session.execute(
            select(Message.id, Message.device_id)
            .join(Device, Device.id == Message.device_id)
            .where(holder, Message.time < now - timedelta(days=days))
            .limit(limit - removed)
        ).all()
        if not rows:
            continue
        session.execute(delete(Message).where(Message.id.in_([r[0] for r in rows])))
        session.execute(update(Device).where(Device.id.in_({r[1] for r in rows})).values(messages_purged_at=now))
        removed += len(rows)
    return removed
