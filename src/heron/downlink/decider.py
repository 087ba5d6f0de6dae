"""The downlink decision: when an uplink asks for an answer, the device type's downlink mode
decides it once the dedup window has closed (so the best station is known), and the best
station's network hands it over in time for the device's receive window (the network's
`downlink_delay` after the uplink; Sigfox's stations collect it: heron.network.sigfox.downlinks).

- DIRECT: the device type's 8-byte template is rendered (`{time}`, `{tapId}`, `{rssi}`).
- CALLBACK: the device type's downlink callback (a DATA BIDIR URL callback) is called, and its
  answer `{"<deviceId>": {"downlinkData": "<16 hex>"}}` is the downlink (204: none). That call is
  also the callback's data delivery for this message: the decider takes over the outbox row
  (as long as the outbox has not started on it) and records the attempt on it; a failed call
  then follows the normal retries, with no downlink. An answer that comes late (after
  `answer_timeout`, or past the decision deadline), is malformed, or is not 8 bytes means no
  downlink and a recorded error. A batched answer may carry other devices waiting for a
  decision: they take theirs from it.
- NONE: nothing is sent.
Downlinks count against the contract's downlinks/day (in its timezone); one over is refused."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from heron.db.base import utcnow
from heron.db.driver import upsert_insert
from heron.db.engine import Database
from heron.delivery import callbacks as callbacks_service
from heron.delivery.channels import Result
from heron.delivery.channels.url import Http, Outgoing, render
from heron.delivery.enqueue import new_key, owe_duplicates
from heron.delivery.http import new_session
from heron.delivery.models import DONE, PENDING, Callback, Delivery
from heron.delivery.policy import Policy
from heron.delivery.ssrf import IPNetwork
from heron.delivery.variables import message_variables
from heron.downlink import templates as downlink_template
from heron.downlink.models import ACKNOWLEDGED, DECIDING, FAILED, NONE, OPEN, SENT, Downlink
from heron.downlink.models import PENDING as DL_PENDING
from heron.keys import Keyring
from heron.messages.models import Message, Reception
from heron.radio import Network
from heron.registry.identifiers import is_hex
from heron.registry.models import Contract, Device, DeviceType
from heron.runtime.background import BackgroundThread
from heron.stations.models import BaseStation
from heron.stations.scope import of_type, serves
from heron.tenancy.models import Group
from heron.uplink.store import StoredMessage

log = logging.getLogger("heron.downlinks")

COLLECT_MARGIN = timedelta(seconds=2)  # a station must have it this long before transmit time
MODES = {0: "DIRECT", 1: "CALLBACK", 2: "NONE"}
SWEEP_EVERY = timedelta(seconds=5)  # the catch-up sweep for messages opened by nobody


@dataclass
class _Decision:
    downlink: Downlink
    message: Message
    device: Device
    device_type: DeviceType
    best_station: BaseStation | None
    best_rssi: float | None
    callback: Callback | None = None
    delivery: Delivery | None = None
    outgoing: Outgoing | None = None


class DownlinkDecider(BackgroundThread):
    """Finds uplinks asking for an answer, decides them when their window closes, expires what
    stations did not collect. A background thread with its own event loop; `run_once` does one
    round (tests drive it with an injected clock)."""

    thread_name = "heron-downlinks"

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        dedup_window: timedelta,
        networks: Sequence[Network],
        allow: tuple[IPNetwork, ...] = (),
        answer_timeout: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        poll: float = 0.1,
    ) -> None:
        self.db, self.keyring, self.dedup_window, self.allow = db, keyring, dedup_window, allow
        self.answer_timeout, self.clock, self.poll = answer_timeout, clock, poll
        self.policy = Policy()
        self.networks = {n.name: n for n in networks}
        # The catch-up sweep's reach: past the longest receive delay, no downlink can be made.
        self.reach = max((n.downlink_delay for n in networks), default=timedelta(0))
        self._next_sweep: datetime | None = None
        super().__init__()

    def _loop(self) -> None:
        async def main() -> None:
            async with new_session() as client:
                while not self._stop.is_set():
                    try:
                        await self._round(client)
                    except Exception:
                        log.exception("downlinks.round_failed")
                    await asyncio.to_thread(self._wake.wait, self.poll)
                    self._wake.clear()

        asyncio.run(main())

    def run_once(self) -> None:
        async def once() -> None:
            async with new_session() as client:
                await self._round(client)

        asyncio.run(once())

    async def _round(self, client: aiohttp.ClientSession) -> None:
        now = self.clock()
        if self._next_sweep is None or now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            await asyncio.to_thread(self._open, now)
        decisions = await asyncio.to_thread(self._due, now)
        if decisions:
            calls = [d for d in decisions if d.outgoing is not None]
            results = await asyncio.gather(*(self._call(client, d) for d in calls))
            await asyncio.to_thread(self._record, decisions, dict(zip((id(d) for d in calls), results, strict=True)))
        await asyncio.to_thread(self._expire, self.clock())

    # 1. uplinks asking for an answer get a DECIDING row (one per message, whatever the process).
    # The uplink writer opens them in the transaction that stores the messages (`open_downlinks`);
    # this sweep only catches messages stored without it (by an older version, say), so it runs
    # every `SWEEP_EVERY` rather than every round: scanning the last 20 s of asking messages ten
    # times a second cost more than deciding them.
    def _open(self, now: datetime) -> None:
        with self.db.read() as session:
            asking = session.execute(
                select(
                    Message.id,
                    Message.device_id,
                    Message.device_type_id,
                    Message.arrived_at,
                    DeviceType.downlink_mode,
                    DeviceType.network,
                )
                .join(DeviceType, DeviceType.id == Message.device_type_id)
                .where(
                    Message.ack_required,  # bare: as ix_messages_ack_time's condition, or SQLite scans
                    Message.frame_type == "DATA",
                    # The index's range (time <= arrived_at; a frame heard longer ago than the reach
                    # is past the device's receive window anyway), then the arrival the decider runs on.
                    Message.time >= now - self.reach,
                    Message.arrived_at >= now - self.reach,
                    ~select(Downlink.id).where(Downlink.message_id == Message.id).exists(),
                )
            ).all()
        if not asking:
            return
        with self.db.write() as session:
            _insert_deciding(
                session,
                [
                    _Asking(m, d, t, time, MODES.get(mode, "NONE"), self.networks[network].downlink_delay)
                    for m, d, t, time, mode, network in asking
                    if network in self.networks
                ],
                now,
                self.dedup_window,
            )

    # 2. decisions whose window has closed
    def _due(self, now: datetime) -> list[_Decision]:
        """Decide what is due. Too late and NONE need nothing but the row: set-based updates;
        DIRECT and CALLBACK are loaded and decided one by one (CALLBACK's call comes after)."""
        out: list[_Decision] = []
        due = and_(OPEN, Downlink.state == DECIDING, Downlink.decide_at <= now)
        with self.db.read() as session:
            if session.scalar(select(Downlink.id).where(due).limit(1)) is None:
                return out
        with self.db.write() as session:
            session.execute(
                update(Downlink)
                .where(due, Downlink.transmit_at < now + COLLECT_MARGIN)
                .values(state=FAILED, reason="decided too late for the device's receive window", decided_at=now)
            )
            session.execute(update(Downlink).where(due, Downlink.mode == "NONE").values(state=NONE, decided_at=now))
            rows = session.execute(
                select(Downlink, Message, Device, DeviceType)
                .join(Message, Message.id == Downlink.message_id)
                .join(Device, Device.id == Downlink.device_id)
                .join(DeviceType, DeviceType.id == Downlink.device_type_id)
                .where(due)
            ).all()
            station_group, device_group = aliased(Group), aliased(Group)
            for dl, message, device, dt in rows:
                # Among the stations that heard it, those that serve the device now.
                best = session.execute(
                    select(BaseStation, Reception.rssi)
                    .join(Reception, Reception.station_id == BaseStation.id)
                    .join(station_group, station_group.id == BaseStation.group_id)
                    .join(device_group, device_group.id == device.group_id)
                    .where(Reception.message_id == message.id, serves(station_group.path, device_group.path))
                    .where(of_type(BaseStation.device_type_id, device.device_type_id))
                    .order_by(Reception.rssi.desc().nulls_last(), Reception.id)
                    .limit(1)
                ).first()
                decision = _Decision(dl, message, device, dt, best[0] if best else None, best[1] if best else None)
                dl.decided_at = now
                if (refusal := _over_daily_limit(session, device, now)) is not None:
                    dl.fail(refusal)
                elif dl.mode == "DIRECT":
                    self._direct(decision)
                else:
                    self._prepare_call(session, decision, now)
                    # Leased while the call is in flight: the next rounds leave it alone.
                    dl.decide_at = now + timedelta(seconds=self.answer_timeout + 5)
                out.append(decision)
            session.flush()
            session.expunge_all()
        return out

    def _direct(self, d: _Decision) -> None:
        values: dict[str, int | float] = {
            "time": int(d.message.time.timestamp()),
            "tapId": int(d.best_station.identifier, 16) if d.best_station else 0,
            "rssi": d.best_rssi if d.best_rssi is not None else 0,
        }
        try:
            data = downlink_template.render(d.device_type.downlink_data_string or "", values)
        except downlink_template.TemplateError as exc:
            d.downlink.fail(f"DIRECT template: {exc}")
            return
        _queue(d, data.hex())

    def _prepare_call(self, session: Session, d: _Decision, now: datetime) -> None:
        hook = session.scalar(
            select(Callback).where(
                Callback.device_type_id == d.device_type.id,
                Callback.downlink_hook.is_(True),
                Callback.enabled.is_(True),
            )
        )
        if hook is None:
            d.downlink.fail("downlink mode CALLBACK but no downlink callback is selected")
            return
        d.callback = hook
        d.downlink.callback_id = hook.id
        d.delivery = session.scalar(
            select(Delivery).where(
                Delivery.message_id == d.message.id,
                Delivery.callback_id == hook.id,
                Delivery.duplicate_of.is_(None),  # the message's own delivery, not a sendDuplicate copy
                Delivery.state == PENDING,
                Delivery.attempts == 0,
                Delivery.next_at > d.downlink.decide_at,
                Delivery.leased_by.is_(None),  # not one a delivery worker is sending right now
            )
        )
        if d.delivery is not None:  # the call starts this delivery: a sendDuplicate callback's copies are owed
            owe_duplicates(session, [d.delivery], {hook.id: hook}, now)
        receptions = list(
            session.execute(
                select(Reception, BaseStation)
                .join(BaseStation, BaseStation.id == Reception.station_id)
                .where(Reception.message_id == d.message.id)
                .order_by(Reception.id)
            ).tuples()
        )
        values = message_variables(d.message, d.device, receptions, hook.payload_config)
        try:
            d.outgoing = render(self.keyring, hook, d.device_type, values)
        except Exception as exc:
            d.downlink.fail(f"cannot render the downlink callback: {exc}")

    async def _call(self, client: aiohttp.ClientSession, d: _Decision) -> Result:
        """The downlink callback's request, as the URL channel sends every callback's."""
        assert d.outgoing is not None and d.callback is not None
        http = Http(client, self.keyring, self.allow, self.answer_timeout)
        key = d.delivery.key if d.delivery is not None else new_key()
        secret = callbacks_service.stored_signing_secret(self.keyring, d.callback)
        return await http.request(d.outgoing, key, secret=secret, send_sni=d.callback.send_sni)

    def _record(self, decisions: list[_Decision], results: dict[int, Result]) -> None:
        now = self.clock()
        answers: dict[str, Any] = {}
        for d in decisions:
            result = results.get(id(d))
            if result is None:
                continue
            self._record_delivery(d, result, now)
            if not result.ok:
                d.downlink.fail(f"downlink callback: {result.describe()}")
                continue
            if now > d.downlink.transmit_at - COLLECT_MARGIN:
                d.downlink.fail("downlink callback answered too late")
                continue
            if result.status == 204:
                d.downlink.state = NONE
                continue
            try:
                body = json.loads(result.body)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                d.downlink.fail("downlink callback answer is not the JSON object Sigfox defines")
                continue
            answers.update(body)
        for d in decisions:
            if id(d) not in results or d.downlink.state != DECIDING:
                continue
            entry = answers.get(d.device.identifier)
            data = entry.get("downlinkData") if isinstance(entry, dict) else None
            if entry is None:
                d.downlink.fail(f"downlink callback answer has no entry for device {d.device.identifier}")
            elif not isinstance(data, str) or not is_hex(data, 16):
                d.downlink.fail(f"downlinkData must be 16 hex digits (8 bytes), got {str(data)[:40]!r}")
            else:
                _queue(d, data.lower())
        # Only the called ones changed since `_due` committed the others.
        called = [d for d in decisions if id(d) in results]
        if not called:
            return
        with self.db.write() as session:
            for d in called:
                session.merge(d.downlink)
                if d.delivery is not None:
                    session.merge(d.delivery)

    def _record_delivery(self, d: _Decision, result: Result, now: datetime) -> None:
        """The call was the callback's data delivery: record the attempt on its outbox row."""
        delivery = d.delivery
        if delivery is None:
            return
        delivery.attempts += 1
        delivery.last_attempt_at, delivery.last_status = now, result.status
        delivery.last_request = json.dumps({"method": d.outgoing.method, "url": d.outgoing.url} if d.outgoing else {})
        if result.ok:
            delivery.state, delivery.delivered_at, delivery.last_error = DONE, now, None
        else:
            delivery.next_at = now + self.policy.backoff(delivery.attempts)
            delivery.last_error = (result.describe() or "")[:1000]

    # 3. what stations did not collect or report in time
    def _expire(self, now: datetime) -> None:
        # Read first: an idle system must not take the write lock ten times a second.
        overdue = and_(
            OPEN,
            or_(
                and_(Downlink.state == DL_PENDING, Downlink.transmit_at < now),
                and_(Downlink.state == SENT, Downlink.transmit_at < now - timedelta(minutes=1)),
            ),
        )
        with self.db.read() as session:
            if session.scalar(select(Downlink.id).where(overdue).limit(1)) is None:
                return
        with self.db.write() as session:
            session.execute(
                update(Downlink)
                .where(OPEN, Downlink.state == DL_PENDING, Downlink.transmit_at < now)
                .values(state=FAILED, reason="the station did not collect it before the receive window")
            )
            session.execute(
                update(Downlink)
                .where(OPEN, Downlink.state == SENT, Downlink.transmit_at < now - timedelta(minutes=1))
                .values(state=FAILED, reason="the station did not report the emission")
            )


@dataclass(frozen=True)
class _Asking:
    message_id: int
    device_id: int
    device_type_id: int
    time: datetime  # the message's arrival (arrived_at): the decision and receive window run from it
    mode: str  # DIRECT, CALLBACK, NONE: the device type's, when the message was stored
    delay: timedelta  # when the device listens after its uplink (its network's)


def open_downlinks(
    session: Session, network: Network, messages: Sequence[StoredMessage], now: datetime, dedup_window: timedelta
) -> int:
    """DECIDING rows for the freshly stored messages that ask for a downlink, in the writer's
    transaction (after their outbox rows): the decider then only has to decide them, and a
    CALLBACK type's outbox row is held for the decider before the outbox can send it. Nothing
    to do, and no query, when none asks."""
    asking = [m for m in messages if m.ack_required and m.frame_type == "DATA"]
    if not asking:
        return 0
    modes = dict(
        session.execute(
            select(DeviceType.id, DeviceType.downlink_mode).where(
                DeviceType.id.in_(sorted({m.device_type_id for m in asking}))
            )
        )
        .tuples()
        .all()
    )
    rows = [
        _Asking(
            m.id,
            m.device_id,
            m.device_type_id,
            m.arrived_at,
            MODES.get(modes.get(m.device_type_id, -1), "NONE"),
            network.downlink_delay,
        )
        for m in asking
    ]
    _insert_deciding(session, rows, now, dedup_window)
    return len(rows)


def _insert_deciding(session: Session, asking: list[_Asking], now: datetime, dedup_window: timedelta) -> None:
    rows = [
        {
            "device_id": a.device_id,
            "device_type_id": a.device_type_id,
            "message_id": a.message_id,
            "mode": a.mode,
            "state": DECIDING,
            "decide_at": a.time + dedup_window,
            "transmit_at": a.time + a.delay,
            "created_at": now,
        }
        for a in asking
    ]
    stmt = upsert_insert(session, Downlink).on_conflict_do_nothing(index_elements=["message_id"])
    session.execute(stmt, rows)
    # Hold the downlink callback's outbox row for the decider (unless the outbox has started on it).
    for a in asking:
        if a.mode != "CALLBACK":
            continue
        session.execute(
            update(Delivery)
            .where(
                Delivery.message_id == a.message_id,
                Delivery.callback_id.in_(_hook_ids(a.device_type_id)),
                Delivery.state == PENDING,
                Delivery.attempts == 0,
                Delivery.next_at <= a.time + dedup_window,
            )
            .values(next_at=a.time + a.delay + timedelta(seconds=30))
        )


def _hook_ids(device_type_id: int) -> Any:
    return select(Callback.id).where(Callback.device_type_id == device_type_id, Callback.downlink_hook.is_(True))


def _queue(d: _Decision, data: str) -> None:
    if d.best_station is None:
        d.downlink.fail("no station heard the uplink")
        return
    d.downlink.state, d.downlink.data, d.downlink.station_id = DL_PENDING, data, d.best_station.id


def _over_daily_limit(session: Session, device: Device, now: datetime) -> str | None:
    if device.contract_id is None:
        return None
    contract = session.get(Contract, device.contract_id)
    if contract is None or contract.max_downlink_frames <= 0:
        return None if contract is None else f"contract {contract.name!r} allows no downlinks"
    local = now.astimezone(ZoneInfo(contract.timezone or "UTC"))
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    used = session.scalar(
        select(func.count())
        .select_from(Downlink)
        .where(
            Downlink.device_id == device.id,
            Downlink.created_at >= day_start,
            Downlink.state.in_((DL_PENDING, SENT, ACKNOWLEDGED)),
        )
    )
    if (used or 0) >= contract.max_downlink_frames:
        return f"over contract {contract.name!r}'s {contract.max_downlink_frames} downlinks per day"
    return None
