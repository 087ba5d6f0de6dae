"""Periodic registry upkeep, run by every process's job runner (and `heron devices purge`):

- **Tokens that reach their end.** A device with automatic renewal on, whose contract has not
  ended, gets its token extended by the contract's token duration (as many times as needed to
  pass now) and `token_renewed_at` set (Sigfox `automaticRenewalStatus` RENEWED). Any other
  device gives its token back (OFF_CONTRACT; `automaticRenewalStatus` ENDED). An unsubscription
  (`PUT /devices/{id}/unsubscribe`, `/devices/bulk/unsubscribe`) sets `unsubscription_at` and
  makes it the token's end, so it lands here and is never renewed.
  A token given back this way writes a TOKEN_EXPIRED event (heron.events).
- **Purge.** Devices deleted longer ago than the retention are removed for good (until then
  they are listed under "deleted devices" and can be restored).

Each pass handles at most `limit` devices in one transaction. The due rows are read with
`FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite's writer transaction is exclusive already), so
two processes never renew or release the same token twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from heron.events import service as events
from heron.jobs.engine import Periodic
from heron.messages import retention
from heron.registry.bulk import Holder, add_months, release_tokens, update_devices
from heron.registry.models import HOLDS_TOKEN, IS_DELETED, Contract, Device

BATCH = 5000


def expire_tokens(session: Session, now: datetime, limit: int = BATCH) -> tuple[int, int]:
    """Renew or release the tokens whose end has come; (renewed, released)."""
    due = session.execute(
        select(
            Device.id,
            Device.contract_id,
            Device.token_alloc,
            Device.token_end_at,
            Device.automatic_renewal,
            Device.unsubscription_at,
            Contract.token_duration,
            Contract.end_at,
        )
        .join(Contract, Contract.id == Device.contract_id)
        .where(Device.token_end_at <= now, HOLDS_TOKEN)  # the partial index's own term
        .order_by(Device.token_end_at)
        .limit(limit)
        .with_for_update(of=Device, skip_locked=True)
    ).all()
    renewals: list[dict[str, object]] = []
    ending: list[Holder] = []
    for row in due:
        contract_open = row.end_at is None or row.end_at > now
        unsubscribed = row.unsubscription_at is not None
        if row.automatic_renewal and contract_open and row.token_duration and not unsubscribed:
            end = row.token_end_at
            while end <= now:
                end = add_months(end, row.token_duration)
            renewals.append({"b_id": row.id, "token_end_at": end, "token_renewed_at": now})
        else:
            ending.append(Holder(row.id, row.contract_id, row.token_alloc))
    update_devices(session, renewals)
    release_tokens(session, ending)
    events.tokens_expired(session, [(h.id, h.contract_id) for h in ending], now)
    return len(renewals), len(ending)


def purge_deleted(session: Session, deleted_before: datetime, limit: int = BATCH) -> int:
    """Remove devices deleted before the given time (their tokens were released on delete)."""
    ids = list(
        session.scalars(
            select(Device.id)
            .where(IS_DELETED, Device.deleted_at < deleted_before)  # the partial index's own term
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(delete(Device).where(Device.id.in_(ids)))
    return len(ids)


def periodic_tasks(
    every: float, deleted_retention: timedelta, station_offline: timedelta = timedelta(hours=1)
) -> list[Periodic]:
    """The registry's upkeep and the events' watches, for each process's job runner."""
    return [
        Periodic("registry.tokens", every, lambda session, now: expire_tokens(session, now)),
        Periodic("registry.purge", every, lambda session, now: purge_deleted(session, now - deleted_retention)),
        Periodic("messages.retention", every, lambda session, now: retention.purge_messages(session, now)),
        *events.periodic_tasks(every, station_offline),
    ]
