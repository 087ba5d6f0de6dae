"""The outbox's caps, enforced every `sweep_every`: a callback's pending rows beyond
`max_pending_per_callback` (the oldest), and pending rows nobody tried past `give_up`, become
FAILED with `outbox overflow: ...` (and are alerted)."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import cast

from sqlalchemy import and_, func, select, update

from heron.db.driver import rowcount
from heron.db.engine import Database
from heron.delivery.metrics import GIVEN_UP, label
from heron.delivery.models import FAILED, PENDING, Delivery
from heron.delivery.policy import Policy

log = logging.getLogger("heron.delivery")

OVERFLOW = "outbox overflow"


def sweep(db: Database, policy: Policy, now: datetime) -> dict[int, list[str]]:
    """The caps, set-based: per callback, pending rows beyond `max_pending_per_callback` (the
    oldest), and pending rows due but nobody tried past `give_up`, become FAILED."""
    cap = policy.max_pending_per_callback
    alerts: dict[int, list[str]] = defaultdict(list)
    with db.write() as session:
        over = session.execute(
            select(Delivery.callback_id, func.count())
            .where(Delivery.state == PENDING, Delivery.callback_id.is_not(None))
            .group_by(Delivery.callback_id)
            .having(func.count() > cap)
        ).all()
        for cb_id, count in over:
            cutoff = session.scalar(
                select(Delivery.id)
                .where(Delivery.callback_id == cb_id, Delivery.state == PENDING)
                .order_by(Delivery.id)
                .offset(count - cap - 1)
                .limit(1)
            )
            if cutoff is None:
                continue
            error = f"{OVERFLOW}: more than {cap} deliveries pending for this callback"
            dropped = rowcount(
                session.execute(
                    update(Delivery)
                    .where(Delivery.callback_id == cb_id, Delivery.state == PENDING, Delivery.id <= cutoff)
                    .values(state=FAILED, last_error=error, leased_by=None)
                    .execution_options(synchronize_session=False)
                )
            )
            GIVEN_UP.labels(label(cb_id), "overflow").inc(dropped)
            alerts[cast(int, cb_id)].append(f"{dropped} oldest pending deliveries recorded as failed ({error})")
            log.warning("delivery.overflow", extra={"callback": cb_id, "dropped": dropped})
        stale = and_(Delivery.state == PENDING, Delivery.next_at <= now, Delivery.created_at <= now - policy.give_up)
        expired = session.execute(
            select(Delivery.callback_id, func.count()).where(stale).group_by(Delivery.callback_id)
        ).all()
        if expired:
            error = f"{OVERFLOW}: not delivered within {policy.give_up.total_seconds() / 3600:g} h"
            session.execute(
                update(Delivery)
                .where(stale)
                .values(state=FAILED, last_error=error, leased_by=None)
                .execution_options(synchronize_session=False)
            )
            for cb_id, count in expired:
                GIVEN_UP.labels(label(cb_id), "expired").inc(count)
                if cb_id is not None:
                    alerts[cb_id].append(f"{count} deliveries recorded as failed ({error})")
    return alerts
