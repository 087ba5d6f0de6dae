"""Leases of claimed rows: a claimed row's `next_at` moves past the lease and `leased_by` names
the worker holding it (host:pid:token), renewed while its request is in flight; the rows of a
dead worker process of this host are taken back at once, other hosts' leases run out."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

from sqlalchemy import select, update

from heron.db.driver import rowcount
from heron.db.engine import Database
from heron.delivery.models import PENDING, Delivery
from heron.jobs.engine import _gone_from_this_host

log = logging.getLogger("heron.delivery")


def holder(token: str) -> str:
    """What a worker writes on the rows it leases: host:pid:token, as the job runner's id (the
    pid read now: a worker built before a fork leases as the process that runs it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def take_back(db: Database, now: datetime) -> int:
    """Rows leased by a worker process of this host that no longer exists (killed, crashed)
    are due again at once, instead of when their lease would have ended. A live process's
    leases, and other hosts' (whose processes cannot be asked), are left to run out."""
    with db.read() as session:
        holders = list(session.scalars(select(Delivery.leased_by).where(Delivery.leased_by.is_not(None)).distinct()))
    gone = [h for h in holders if h is not None and _gone_from_this_host(h)]
    if not gone:
        return 0
    with db.write() as session:
        taken = rowcount(
            session.execute(
                update(Delivery)
                .where(Delivery.leased_by.in_(gone), Delivery.state == PENDING, Delivery.next_at > now)
                .values(next_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        session.execute(
            update(Delivery)
            .where(Delivery.leased_by.in_(gone))
            .values(leased_by=None)
            .execution_options(synchronize_session=False)
        )
    log.warning("delivery.leases_taken_back", extra={"holders": gone, "deliveries": taken})
    return taken


def renew(db: Database, ids: list[int], holder: str, until: datetime) -> None:
    """The lease of rows still in flight, pushed out again (a round may outlast one lease:
    hundreds of requests, each up to its timeout per redirect)."""
    with db.write() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.leased_by == holder, Delivery.state == PENDING)
            .values(next_at=until)
            .execution_options(synchronize_session=False)
        )
