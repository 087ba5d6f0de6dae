"""Alert mails: failures, overflow and a callback going dead mail the device type's alert
e-mail, at most once per `alert_every` per callback (`Callback.alerted_at`, so neither another
worker nor a restart mails again)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import func, or_, select, update

from heron.db.driver import rowcount
from heron.db.engine import Database
from heron.delivery.channels.email import Mail, SmtpConfig, recipients, send_mails
from heron.delivery.models import PENDING, Callback, Delivery
from heron.delivery.policy import Policy
from heron.registry.models import DeviceType

log = logging.getLogger("heron.delivery")


async def send_alerts(
    db: Database, smtp: SmtpConfig, policy: Policy, alerts: dict[int, list[str]], now: datetime
) -> None:
    """Mail what `alerts` says, by callback, to the callbacks whose alert is due."""
    if not smtp.configured:
        return
    mails = await asyncio.to_thread(claim_alerts, db, policy, alerts, now)
    for error in await asyncio.to_thread(send_mails, smtp, mails):
        if error:
            log.warning("delivery.alert_not_sent", extra={"error": error})


def claim_alerts(db: Database, policy: Policy, alerts: dict[int, list[str]], now: datetime) -> list[Mail]:
    """The alert mails due: a callback alerted less than `alert_every` ago is skipped; the
    time is recorded first (at most one mail, even across workers and restarts)."""
    due = or_(Callback.alerted_at.is_(None), Callback.alerted_at <= now - policy.alert_every)
    mails = []
    with db.write() as session:
        found = session.execute(
            select(Callback, DeviceType)
            .join(DeviceType, DeviceType.id == Callback.device_type_id)
            .where(Callback.id.in_(list(alerts)), DeviceType.alert_email.is_not(None), due)
        ).all()
        for cb, dt in found:
            to = recipients(dt.alert_email)
            if not to:
                continue
            took = session.execute(
                update(Callback)
                .where(Callback.id == cb.id, due)
                .values(alerted_at=now)
                .execution_options(synchronize_session=False)
            )
            if rowcount(took) != 1:
                continue
            pending = session.scalar(
                select(func.count()).where(Delivery.callback_id == cb.id, Delivery.state == PENDING)
            )
            kind = "/".join(p for p in (cb.callback_type, cb.callback_subtype) if p)
            name = " ".join(dt.name.split())  # a subject is one line: a name may hold line breaks
            subject = f"[Heron] Callback {cb.id} ({cb.channel} {kind}) of device type {name}: deliveries failing"
            body = "\n".join(
                [
                    f"Callback {cb.id} ({cb.channel} {kind}) of device type {dt.name} (id {dt.id}) "
                    f"has delivery problems ({now:%Y-%m-%d %H:%M:%S} UTC):",
                    "",
                    *(f"- {reason}" for reason in alerts[cb.id]),
                    "",
                    f"State: {'dead (probed until it answers)' if cb.dead else 'alive'}; "
                    f"{cb.failures} consecutive failures; {pending} deliveries pending.",
                    "",
                    "Heron sends at most one such mail per callback per "
                    f"{policy.alert_every.total_seconds() / 3600:g} h.",
                ]
            )
            mails.append(Mail(to, subject, body))
    return mails
