"""What a stored batch of messages starts, in the transaction that stores them: nothing stored
is ever left without its deliveries, its downlink decision or its events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from heron.delivery.enqueue import enqueue_messages
from heron.downlink.decider import open_downlinks
from heron.events import service as events
from heron.radio import Network
from heron.uplink.store import StoredMessage


def hand_off(
    session: Session,
    network: Network,
    stored: Sequence[StoredMessage],
    now: datetime,
    *,
    dedup_window: timedelta,
    horizon: timedelta,
) -> None:
    # The outbox rows: one per message and callback.
    enqueue_messages(session, stored, dedup_window=dedup_window, horizon=horizon)
    # The downlinks they ask for (DECIDING until the dedup window closes).
    open_downlinks(session, network, stored, now, dedup_window)
    # Keep-alive recovery, overusage, per-device-day counters.
    events.after_uplinks(session, stored, now)
