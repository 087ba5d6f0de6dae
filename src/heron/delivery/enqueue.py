"""What the outbox is owed, in the caller's transaction: the rows of freshly stored messages
(`enqueue_messages`), of events that are not messages (`enqueue_event`), and the copies
sendDuplicate callbacks owe when a delivery starts (`owe_duplicates`)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from heron.db.bulk_insert import insert_rows
from heron.delivery.models import PENDING, Callback, Delivery
from heron.delivery.variables import best_reception
from heron.messages.models import Reception
from heron.unique import unique_hex
from heron.uplink.store import StoredMessage

# Which callbacks a stored frame owes, by frame type: (callback type, subtype, due after the horizon?)
_OWED = {
    "DATA": (("DATA", "UPLINK", False), ("DATA", "BIDIR", False), ("SERVICE", "DATA_ADVANCED", True)),
    "KEEPALIVE": (("SERVICE", "STATUS", False),),
    "REPEATER": (("SERVICE", "REPEATER", False),),
}
_DUPLICATED = frozenset({"UPLINK", "BIDIR"})  # the deliveries a sendDuplicate callback copies


def new_key() -> str:
    return unique_hex()


def enqueue_messages(
    session: Session, messages: Sequence[StoredMessage], *, dedup_window: timedelta, horizon: timedelta
) -> int:
    """Outbox rows for freshly stored messages, in the caller's transaction."""
    if not messages:
        return 0
    type_ids = sorted({m.device_type_id for m in messages})
    wanted: dict[tuple[int, str, str | None], list[int]] = defaultdict(list)
    for cb_id, dt_id, cb_type, subtype in session.execute(
        select(Callback.id, Callback.device_type_id, Callback.callback_type, Callback.callback_subtype).where(
            Callback.device_type_id.in_(type_ids), Callback.enabled.is_(True)
        )
    ):
        wanted[(dt_id, cb_type, subtype)].append(cb_id)
    if not wanted:
        return 0
    rows = []
    for m in messages:
        for cb_type, subtype, advanced in _OWED.get(m.frame_type, ()):
            due = m.arrived_at + (horizon if advanced else dedup_window)  # the windows run on arrival
            for cb_id in wanted.get((m.device_type_id, cb_type, subtype), ()):
                rows.append(
                    {
                        "key": new_key(),
                        "callback_id": cb_id,
                        "device_type_id": m.device_type_id,
                        "device_id": m.device_id,
                        "message_id": m.id,
                        "event": subtype or cb_type,
                        "state": PENDING,
                        "attempts": 0,
                        "next_at": due,
                        "created_at": m.arrived_at,
                    }
                )
    insert_rows(session, cast(Table, Delivery.__table__), rows)
    return len(rows)


def enqueue_event(
    session: Session,
    *,
    device_type_id: int,
    device_id: int | None,
    callback_type: str,
    subtype: str | None,
    variables: dict[str, object],
    now: datetime,
) -> int:
    """Outbox rows for something that is not a message (an ERROR callback of a lost device, a
    SERVICE ACKNOWLEDGE): one per enabled callback of the device type and kind, carrying the
    values its templates render (`time` as epoch seconds, as for messages)."""
    ids = list(
        session.scalars(
            select(Callback.id).where(
                Callback.device_type_id == device_type_id,
                Callback.enabled.is_(True),
                Callback.callback_type == callback_type,
                Callback.callback_subtype.is_(None) if subtype is None else Callback.callback_subtype == subtype,
            )
        )
    )
    if not ids:
        return 0
    encoded = json.dumps(variables)
    session.execute(
        insert(Delivery),
        [
            {
                "key": new_key(),
                "callback_id": cb_id,
                "device_type_id": device_type_id,
                "device_id": device_id,
                "message_id": None,
                "event": subtype or callback_type,
                "variables": encoded,
                "state": PENDING,
                "attempts": 0,
                "next_at": now,
                "created_at": now,
            }
            for cb_id in ids
        ],
    )
    return len(ids)


def owe_duplicates(session: Session, owed: Iterable[Any], callbacks: Mapping[int, Callback], now: datetime) -> int:
    """The copies sendDuplicate callbacks owe for the deliveries `owed` (outbox rows, as `Owed`
    or ORM objects), written in the transaction that starts those deliveries: one per reception
    of the message within the dedup window other than the best one (which the delivery itself
    carries), due `now`, waiting behind the original in its callback and device's order. Copies
    already owed are not owed again (the unique (duplicate_of, reception_id) index holds that
    whatever the caller). Returns how many were written."""
    if not any(cb.send_duplicate for cb in callbacks.values()):
        return 0
    originals = [
        d
        for d in owed
        if d.message_id is not None
        and d.duplicate_of is None
        and d.event in _DUPLICATED
        and d.callback_id in callbacks
        and callbacks[d.callback_id].send_duplicate
    ]
    if not originals:
        return 0
    conn = session.connection()
    rc, table = cast(Table, Reception.__table__), cast(Table, Delivery.__table__)
    heard: dict[int, list[tuple[Any, None]]] = defaultdict(list)
    for row in conn.execute(
        select(rc.c.id, rc.c.message_id, rc.c.rssi)
        .where(rc.c.message_id.in_({d.message_id for d in originals}), rc.c.late.is_(False))
        .order_by(rc.c.id)
    ):
        heard[row.message_id].append((row, None))
    made = set(
        conn.execute(
            select(table.c.duplicate_of, table.c.reception_id).where(
                table.c.duplicate_of.is_not(None), table.c.duplicate_of.in_([d.id for d in originals])
            )
        ).tuples()
    )
    rows = []
    for d in originals:
        receptions = heard.get(d.message_id, [])
        best = best_reception(receptions)
        for pair in receptions:
            r = pair[0]
            if pair is best or (d.id, r.id) in made:
                continue
            rows.append(
                {
                    "key": new_key(),
                    "callback_id": d.callback_id,
                    "device_type_id": callbacks[d.callback_id].device_type_id,
                    "device_id": d.device_id,
                    "message_id": d.message_id,
                    "duplicate_of": d.id,
                    "reception_id": r.id,
                    "event": d.event,
                    "state": PENDING,
                    "attempts": 0,
                    "next_at": now,
                    "created_at": d.created_at,
                }
            )
    return insert_rows(session, table, rows)
