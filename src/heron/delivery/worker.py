"""The delivery worker: claims what the outbox owes (due rows, leased, in batches as their
channels send them), sends it through the channels and records the outcomes, in a background
thread with its own event loop; the caps, lease take-backs and alert mails run between rounds."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import aiohttp
from sqlalchemy import Table, and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from heron.db.base import utcnow
from heron.db.driver import bind_processor
from heron.db.engine import Database
from heron.delivery import alerts, caps, leases, metrics, outcomes
from heron.delivery.channels import JOB, Channel, Item, Owed, Result, failed
from heron.delivery.channels.batch_url import BatchUrlChannel
from heron.delivery.channels.email import EmailChannel, SmtpConfig
from heron.delivery.channels.url import Http, JobChannel, UrlChannel
from heron.delivery.enqueue import owe_duplicates
from heron.delivery.http import new_session
from heron.delivery.models import PENDING, Callback, Delivery
from heron.delivery.policy import Policy
from heron.delivery.ssrf import IPNetwork
from heron.delivery.variables import load_items
from heron.keys import Keyring
from heron.runtime.background import BackgroundThread, run_async
from heron.unique import unique_hex

log = logging.getLogger("heron.delivery")


class DeliveryWorker(BackgroundThread):
    """Sends what the outbox owes, in a background thread with its own event loop; `run_once`
    does one round in the caller's thread (tests drive it with an injected clock)."""

    thread_name = "heron-delivery"

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        allow: tuple[IPNetwork, ...] = (),
        policy: Policy | None = None,
        clock: Callable[[], datetime] = utcnow,
        idle_poll: float = 0.05,
        smtp: SmtpConfig | None = None,
    ) -> None:
        self.db, self.keyring, self.allow = db, keyring, allow
        self.policy = policy or Policy()
        self.smtp = smtp or SmtpConfig()
        self.clock, self.idle_poll = clock, idle_poll
        super().__init__()
        self._next_sweep: datetime | None = None
        self._next_due: datetime | None = None  # the earliest pending row, when none was due
        self._found_work = False  # the last claim took rows
        self._next_take_back: datetime | None = None
        self._token = unique_hex()[:6]
        with db.read() as session:  # the dialect's, known without connecting
            self._time_to_driver = bind_processor(session, cast(Table, Delivery.__table__).c.next_at)
        metrics.watch(self)

    @property
    def holder(self) -> str:
        """What this worker writes on the rows it leases (`leases.holder`)."""
        return leases.holder(self._token)

    def _loop(self) -> None:
        async def main() -> None:
            async with new_session(self.policy.concurrency) as client:
                # Round N's results are recorded while round N+1 claims and sends: its rows
                # stay leased (and block younger rows of their callback and device) until then.
                settling: asyncio.Task[None] | None = None
                while not self._stop.is_set():
                    try:
                        await self._upkeep()
                        batches = await asyncio.to_thread(self._claim, self.clock())
                        if batches:
                            results = await self._send(client, batches)
                            if settling is not None:
                                await settling
                            settling = asyncio.create_task(self._settle(batches, results))
                            continue
                        if settling is not None:
                            task, settling = settling, None
                            await task
                            continue
                    except Exception:
                        log.exception("delivery.round_failed")
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
                if settling is not None:
                    await settling

        run_async(main())

    def _idle_wait(self) -> float:
        """Until the next row comes due (known from the last claim), at most `idle_poll`: rows
        due when a dedup window closes go out at that moment, not at the next poll."""
        if self._next_due is None:
            return self.idle_poll
        return min(self.idle_poll, max(0.0, (self._next_due - self.clock()).total_seconds()))

    def run_once(self) -> int:
        """One claim-send-record round (and the caps when due); the number of deliveries attempted."""

        async def once() -> int:
            async with new_session() as client:
                return await self._round(client)

        return run_async(once())

    def depth(self) -> tuple[int, datetime | None]:
        """Pending rows and the oldest one's creation time (the metrics' one query)."""
        with self.db.read() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(Delivery.created_at)).where(Delivery.state == PENDING)
            ).one()
        return int(count), oldest

    def channels(self, client: aiohttp.ClientSession) -> dict[str, Channel]:
        http = Http(client, self.keyring, self.allow, self.policy.timeout)
        return {
            "URL": UrlChannel(http),
            "BATCH_URL": BatchUrlChannel(http),
            "EMAIL": EmailChannel(self.smtp, self.keyring),
            JOB: JobChannel(http),
        }

    # one round
    async def _round(self, client: aiohttp.ClientSession) -> int:
        await self._take_back_when_due()
        batches = await asyncio.to_thread(self._claim, self.clock())
        if batches:
            await self._settle(batches, await self._send(client, batches))
        await self._upkeep()
        return sum(len(b) for b in batches)

    async def _settle(self, batches: list[list[Item]], results: list[list[Result]]) -> None:
        """Record a round's outcomes, then mail what they alert about."""
        due = await asyncio.to_thread(
            outcomes.record, self.db, self.policy, self.holder, self._time_to_driver, batches, results, self.clock()
        )
        await self._alert_safely(due)

    async def _upkeep(self) -> None:
        """Leases of dead local workers taken back (at start, then every `take_back_every`);
        the caps, when due."""
        await self._take_back_when_due()
        now = self.clock()
        if self._next_sweep is None or now >= self._next_sweep:
            self._next_sweep = now + self.policy.sweep_every
            await self._alert_safely(await asyncio.to_thread(caps.sweep, self.db, self.policy, now))

    async def _take_back_when_due(self) -> None:
        now = self.clock()
        if self._next_take_back is None or now >= self._next_take_back:
            self._next_take_back = now + self.policy.take_back_every
            await asyncio.to_thread(leases.take_back, self.db, now)

    def _renew(self, ids: list[int]) -> None:
        leases.renew(self.db, ids, self.holder, self.clock() + self.policy.lease)

    async def _alert_safely(self, due: dict[int, list[str]]) -> None:
        if due:
            try:
                await alerts.send_alerts(self.db, self.smtp, self.policy, due, self.clock())
            except Exception:
                log.exception("delivery.alert_failed")

    async def _send(self, client: aiohttp.ClientSession, batches: list[list[Item]]) -> list[list[Result]]:
        channels = self.channels(client)
        limit = asyncio.Semaphore(self.policy.concurrency)

        async def one(batch: list[Item]) -> list[Result]:
            channel = channels.get(batch[0].channel)
            if channel is None:
                return failed(batch, f"the {batch[0].channel} channel is not available")
            async with limit:
                try:
                    results = await channel.send(batch)
                except Exception as exc:
                    log.exception("delivery.channel_failed", extra={"channel": batch[0].channel})
                    return failed(batch, f"internal error: {type(exc).__name__}")
            if len(results) != len(batch):
                return failed(batch, f"internal error: {len(results)} results for {len(batch)} deliveries")
            return results

        ids = [item.delivery.id for batch in batches for item in batch]
        renewing = asyncio.create_task(self._keep_leased(ids))
        try:
            return list(await asyncio.gather(*(one(b) for b in batches)))
        finally:
            renewing.cancel()

    async def _keep_leased(self, ids: list[int]) -> None:
        """While a round's requests are in flight, its rows stay leased: no other worker (nor
        this one's next claim, which runs while a round is recorded) may send them again."""
        every = self.policy.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self._renew, ids)
            except Exception:
                log.exception("delivery.renew_failed")

    def _claim(self, now: datetime) -> list[list[Item]]:
        """Due rows, leased; in batches as their channels send them."""
        policy = self.policy
        older = aliased(Delivery)
        same_pair = and_(
            older.callback_id == Delivery.callback_id,
            older.device_id == Delivery.device_id,
            older.state == PENDING,
            older.id < Delivery.id,
        )
        live = or_(Callback.dead.is_(False), and_(Callback.probe_at.is_not(None), Callback.probe_at <= now))
        # One at a time: URL and EMAIL rows (behind no older pending row of their callback and
        # device), job callbacks (no callback: no order, no circuit).
        single = (
            select(Delivery.id)
            .outerjoin(Callback, Callback.id == Delivery.callback_id)
            .where(
                Delivery.state == PENDING,
                Delivery.next_at <= now,
                or_(
                    Delivery.callback_id.is_(None),
                    and_(Callback.enabled.is_(True), live, Callback.channel != "BATCH_URL", ~exists().where(same_pair)),
                ),
            )
            .order_by(Delivery.next_at, Delivery.id)
            .limit(policy.batch)
        )
        # BATCH_URL: callbacks whose oldest due row has gathered long enough, or enough rows.
        # Asked per callback (a few), each through its own rows of the order index, and
        # bounded: a drain's backlog is not counted whole every round.
        batch_callbacks = select(Callback.id).where(Callback.channel == "BATCH_URL", Callback.enabled.is_(True), live)

        def due_of(cb_id: int, before: datetime) -> Any:
            return select(Delivery.id).where(
                Delivery.callback_id == cb_id, Delivery.state == PENDING, Delivery.next_at <= before
            )

        # A batch takes a callback's due rows oldest first, skipping those behind an older row
        # that is not due (in backoff, or leased): so each device's rows stay in order.
        waiting = exists().where(same_pair, older.next_at > now)
        # Polled often: read first (the partial due index), take the write lock only for work.
        self._next_due = None
        if not self._found_work:  # after a round that found work, more is likely due: no need to ask
            with self.db.read() as session:
                first = session.scalar(select(func.min(Delivery.next_at)).where(Delivery.state == PENDING))
                if first is None or first > now:
                    self._next_due = first
                    return []
        self._found_work = False
        with self.db.write() as session:
            # FOR UPDATE SKIP LOCKED: PostgreSQL skips rows another worker is claiming; SQLite
            # (one writer at a time) renders no such clause.
            picked = list(session.scalars(single.with_for_update(of=Delivery, skip_locked=True)))
            for cb_id in session.scalars(batch_callbacks).all():
                if len(picked) >= policy.batch + 4 * policy.batch_lines:
                    break  # the rest next round
                gathered = session.scalar(due_of(cb_id, now - policy.gather).limit(1)) is not None
                if not gathered:
                    enough = select(func.count()).select_from(due_of(cb_id, now).limit(policy.batch_lines).subquery())
                    if (session.scalar(enough) or 0) < policy.batch_lines:
                        continue  # still gathering
                rows = (
                    select(Delivery.id)
                    .where(Delivery.callback_id == cb_id, Delivery.state == PENDING, Delivery.next_at <= now, ~waiting)
                    .order_by(Delivery.id)
                    .limit(policy.batch_lines)
                )
                picked += session.scalars(rows.with_for_update(skip_locked=True))
            if not picked:
                return []
            self._found_work = True
            # Core rows, not ORM objects: a round claims hundreds, and the identity map and
            # unit of work cost more than the queries.
            table = cast(Table, Delivery.__table__)
            conn = session.connection()
            owed = [
                Owed(*row)
                for row in conn.execute(
                    select(*(table.c[name] for name in Owed.COLUMNS)).where(table.c.id.in_(picked)).order_by(table.c.id)
                )
            ]
            cb_ids = {d.callback_id for d in owed if d.callback_id is not None}
            cbs = {c.id: c for c in session.scalars(select(Callback).where(Callback.id.in_(cb_ids)))}
            # A dead callback gets one probe per round: its oldest due delivery (a BATCH_URL
            # callback's batch is one request: it is the probe).
            kept = []
            probed: set[int] = set()
            for d in owed:
                cb = cbs.get(d.callback_id) if d.callback_id is not None else None
                if cb is not None and cb.dead:
                    if cb.id in probed and cb.channel != "BATCH_URL":
                        continue
                    probed.add(cb.id)
                    cb.probe_at = now + policy.probe_interval(cb.failures + 1)
                kept.append(d)
            if owe_duplicates(session, kept, cbs, now):
                kept += self._riding_copies(conn, kept, cbs)
            if kept:
                conn.execute(
                    update(table)
                    .where(table.c.id.in_([d.id for d in kept]))
                    .values(next_at=now + policy.lease, leased_by=self.holder)
                )
            items = load_items(session, kept, cbs)
            session.flush()
            session.expunge_all()
        singles: list[list[Item]] = []
        grouped: dict[int, list[Item]] = {}
        for item in items:
            if item.callback is not None and item.callback.channel in ("BATCH_URL", "EMAIL"):
                grouped.setdefault(item.callback.id, []).append(item)
            else:
                singles.append([item])
        return singles + list(grouped.values())

    def _riding_copies(self, conn: Any, kept: list[Owed], cbs: dict[int, Callback]) -> list[Owed]:
        """BATCH_URL: the copies just owed for a batch's rows join the batch (one more line
        each), as far as `batch_lines` allows; the rest go in a later batch."""
        lines: dict[int, int] = defaultdict(int)
        for d in kept:
            cb = cbs.get(d.callback_id) if d.callback_id is not None else None
            if cb is not None and cb.channel == "BATCH_URL" and cb.send_duplicate:
                lines[cb.id] += 1
        if not lines:
            return []
        table = cast(Table, Delivery.__table__)
        taken = {d.id for d in kept}
        originals = [d.id for d in kept if d.callback_id in lines and d.duplicate_of is None]
        copies = []
        for row in conn.execute(
            select(*(table.c[name] for name in Owed.COLUMNS))
            .where(table.c.duplicate_of.is_not(None), table.c.duplicate_of.in_(originals), table.c.state == PENDING)
            .order_by(table.c.id)
        ):
            copy = Owed(*row)
            cb_id = cast(int, copy.callback_id)
            if copy.id not in taken and lines[cb_id] < self.policy.batch_lines:
                lines[cb_id] += 1
                copies.append(copy)
        return copies
