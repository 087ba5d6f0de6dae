"""The durable outbox: every request Heron owes a customer's server is a `deliveries` row, written
in the transaction that made it owed, and kept until the server has it.

- **Enqueue** (`enqueue_messages`): one row per (new message, enabled callback of its device
  type and kind). DATA UPLINK/BIDIR and SERVICE STATUS/REPEATER are due when the dedup window
  closes (so they carry every reception of it); DATA_ADVANCED when the horizon has passed.
  Events (`enqueue_event`) and job callbacks (`heron.jobs.notify`: no callback, event `JOB`, the
  URL, sealed headers and body in `variables`) are due at once.
- **Claim**: due rows whose (callback, device) has no older pending row (order is kept per
  callback and device), of callbacks that are not dead; a dead callback gets one probe per
  probe interval (its backoff after its consecutive failures, at most `probe_every`). BATCH_URL
  callbacks are claimed a whole batch at a time: once their oldest due row has waited `gather`
  (1 s) or `batch_lines` rows are due. Claimed rows are leased (see Leases) so another worker
  does not take them; on PostgreSQL the claim also skips rows another worker has locked.
- **Duplicates** (`owe_duplicates`): a DATA UPLINK/BIDIR delivery of a callback with
  `sendDuplicate` owes one copy per other station that heard the message within the dedup
  window (`{duplicate}` true, that station's `{station}`, `{rssi}`, `{snr}`, `{lat}`, `{lng}`);
  the delivery itself carries the best reception. The copies are written in the transaction
  that starts the delivery (the claim, or the downlink decider taking it over), when every
  in-window reception is known, so ingest pays nothing for them; a unique (delivery,
  reception) index makes a claim made again add none. Each copy is a delivery of its own (its
  own `webhook-id`, retries, order behind the original); in a BATCH_URL batch it rides with
  the original as one more line. Receptions after the window are DATA_ADVANCED's only.
- **Send**: through the callback's channel (`heron.delivery.channels`: URL, BATCH_URL, EMAIL,
  and the job callbacks), rendered at send time from the message and the callback as it is then.
- **Refused destinations**: a request the SSRF rules refuse (the URL's name resolves to a
  refused address) fails its delivery for good at once: FAILED with `destination refused: ...`,
  alerted, listed in `callbacks-not-delivered`, sent by a retry by hand once the allow-list
  opens it; it does not count toward the callback's circuit. (A literal refused host is refused
  when the callback is saved; a name that does not resolve is an ordinary, retried failure.)
- **Retry**: a failure (timeout, connection error, non-2xx, SMTP error) is tried again after an
  exponential backoff (base x 2^attempt, capped, with jitter) until `give_up` after its
  creation, then the row is FAILED and listed in `callbacks-not-delivered`. `FAILURES_TO_DEAD`
  consecutive failed requests mark the callback dead: its oldest row is then retried at the
  probe pace (the callback's backoff, at most a minute); its first success revives it and
  releases its backlog at once.
- **Leases**: a claimed row's `next_at` moves past the lease and `leased_by` names the worker
  (host:pid:token); the lease is renewed while the request is in flight, so no other worker
  (nor a retry by hand, nor a revived callback's release) sends it again meanwhile. A worker
  takes back at once, at start and every `take_back_every`, the rows of a dead process of its
  host (killed, crashed); other hosts' leases run out.
- **Caps**: every `sweep_every`, a callback's pending rows beyond `max_pending_per_callback`
  (the oldest) and pending rows nobody tried past `give_up` (a dead callback's backlog, rows
  waiting behind an older one) become FAILED with `outbox overflow: ...`.
- **Alerts**: failures, overflow and a callback going dead mail the device type's alert e-mail,
  at most once per `alert_every` (1 h) per callback (`Callback.alerted_at`, so a restart does
  not mail again).
- **Metrics** (`/metrics`): delivery latency (creation to delivery) and failed attempts per
  callback, rows given up per callback and reason; outbox depth and the oldest pending row's age,
  computed by one query at scrape time.

At-least-once: a request whose answer is lost (crash between send and record) is sent again
with the same `webhook-id`, for receivers to deduplicate."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import aiohttp
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from heron.db.base import utcnow
from heron.db.bulk_insert import insert_rows
from heron.db.engine import Database
from heron.delivery import templates
from heron.delivery.channels import JOB, Channel, Item, Owed, Result, failed
from heron.delivery.channels.batch_url import BatchUrlChannel
from heron.delivery.channels.email import EmailChannel, Mail, SmtpConfig, recipients, send_mails
from heron.delivery.channels.url import Http, JobChannel, Outgoing, UrlChannel, render, sign
from heron.delivery.http import new_session
from heron.delivery.models import DONE, FAILED, PENDING, Callback, Delivery
from heron.delivery.ssrf import IPNetwork
from heron.jobs.engine import _gone_from_this_host
from heron.keys import Keyring
from heron.messages.decoding import decode, grammar_of
from heron.messages.models import Message, Reception
from heron.observability import REGISTRY
from heron.radio import LQI_NAMES
from heron.registry.models import Device, DeviceType
from heron.runtime.background import BackgroundThread, run_async
from heron.stations.models import BaseStation
from heron.unique import unique_hex
from heron.uplink.store import StoredMessage

__all__ = [
    "DeliveryWorker",
    "Outgoing",
    "Policy",
    "enqueue_event",
    "enqueue_messages",
    "message_variables",
    "new_key",
    "owe_duplicates",
    "render",
    "sign",
]

log = logging.getLogger("heron.delivery")

FAILURES_TO_DEAD = 5
OVERFLOW = "outbox overflow"
# Which callbacks a stored frame owes, by frame type: (callback type, subtype, due after the horizon?)
_OWED = {
    "DATA": (("DATA", "UPLINK", False), ("DATA", "BIDIR", False), ("SERVICE", "DATA_ADVANCED", True)),
    "KEEPALIVE": (("SERVICE", "STATUS", False),),
    "REPEATER": (("SERVICE", "REPEATER", False),),
}
_DUPLICATED = frozenset({"UPLINK", "BIDIR"})  # the deliveries a sendDuplicate callback copies


@dataclass(frozen=True)
class Policy:
    """Retry schedule and limits (`HERON_DELIVERY_*`, `HERON_OUTBOX_*` settings)."""

    backoff_base: timedelta = timedelta(seconds=10)
    backoff_max: timedelta = timedelta(minutes=30)
    give_up: timedelta = timedelta(hours=48)
    probe_every: timedelta = timedelta(minutes=1)  # a dead callback is probed at least this often
    lease: timedelta = timedelta(seconds=60)  # renewed every third of it while the rows are in flight
    take_back_every: timedelta = timedelta(seconds=10)  # leases of dead local workers are taken back this often
    timeout: float = 10.0
    batch: int = 500
    concurrency: int = 64
    gather: timedelta = timedelta(seconds=1)  # BATCH_URL: how long a batch gathers
    batch_lines: int = 1000  # BATCH_URL: at most this many messages per request
    max_pending_per_callback: int = 1_000_000
    sweep_every: timedelta = timedelta(seconds=30)  # the caps are enforced this often
    alert_every: timedelta = timedelta(hours=1)  # at most one alert mail per callback per this

    def backoff(self, attempts: int) -> timedelta:
        seconds = min(self.backoff_max.total_seconds(), self.backoff_base.total_seconds() * 2 ** max(0, attempts - 1))
        return timedelta(seconds=seconds * random.uniform(0.9, 1.1))

    def probe_interval(self, failures: int) -> timedelta:
        """How long a dead callback waits for its next probe: its backoff after that many
        consecutive failures (capped at `backoff_max`), at most `probe_every`. So an endpoint
        back from an outage is found within the backoff the settings give, and within a minute
        however long the outage was."""
        return min(self.backoff(failures), self.probe_every)


# -- metrics ----------------------------------------------------------------------------------------
LATENCY = Histogram(
    "heron_delivery_latency_seconds",
    "From a delivery's creation (the message's time) to its receiver's success, by callback id"
    " ('job' for job callbacks).",
    ["callback"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
    registry=REGISTRY,
)
ATTEMPT_FAILURES = Counter(
    "heron_delivery_failures_total",
    "Failed delivery attempts (one per outbox row tried), by callback id ('job' for job callbacks).",
    ["callback"],
    registry=REGISTRY,
)
GIVEN_UP = Counter(
    "heron_delivery_given_up_total",
    "Outbox rows recorded as FAILED, by callback id and reason (give_up, overflow, expired, refused).",
    ["callback", "reason"],
    registry=REGISTRY,
)


def _label(callback_id: int | None) -> str:
    return str(callback_id) if callback_id is not None else "job"


class _OutboxCollector(Collector):
    """Outbox depth and the oldest pending row's age, by one query at scrape time, for the most
    recently built worker of the process."""

    def __init__(self) -> None:
        self.worker: weakref.ref[DeliveryWorker] | None = None

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("heron_outbox_depth", "Outbox rows pending (owed, not yet delivered)."),
            GaugeMetricFamily("heron_outbox_oldest_pending_age_seconds", "Age of the oldest pending outbox row."),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        worker = self.worker() if self.worker is not None else None
        if worker is None:
            return []
        try:
            depth, oldest = worker.depth()
        except Exception:
            log.exception("delivery.depth_failed")
            return []
        count, age = self._families()
        count.add_metric([], depth)
        age.add_metric([], max(0.0, (worker.clock() - oldest).total_seconds()) if oldest is not None else 0.0)
        return [count, age]


_COLLECTOR = _OutboxCollector()
REGISTRY.register(_COLLECTOR)


def new_key() -> str:
    return unique_hex()


# -- enqueue --------------------------------------------------------------------------------------
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
        best = _best(receptions)
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


# -- what a delivery renders -----------------------------------------------------------------------
def _epoch(t: datetime) -> int:
    return int(t.timestamp())


class Heard(NamedTuple):
    """What the variables read of a reception (`message_variables` takes these or Reception rows)."""

    late: bool
    rssi: float | None
    snr: float | None
    rep: int


class HeardBy(NamedTuple):
    """What the variables read of the station that heard it (these or BaseStation rows)."""

    identifier: str
    lat: float | None
    lng: float | None


# The message columns the variables read (the worker loads only these).
_MESSAGE_COLUMNS = (
    "id",
    "device_id",
    "device_type_id",
    "time",
    "data",
    "seq_number",
    "ack_required",
    "lqi",
    "service",
    "decoded",
    "loc_lat",
    "loc_lng",
    "loc_radius",
    "loc_source",
)


def _best(receptions: Sequence[tuple[Any, Any]]) -> tuple[Any, Any] | None:
    """The reception a message's delivery carries: the highest RSSI, the first of equals."""
    return max(receptions, key=lambda rs: rs[0].rssi if rs[0].rssi is not None else -1e9, default=None)


def _computed_location(message: Any) -> dict[str, object] | None:
    """`{computedLocation}`: the message's location (heron.geolocation) in the shape of Sigfox's
    DATA_ADVANCED object (`status` 1: a location was computed), or missing."""
    if message.loc_lat is None or message.loc_lng is None:
        return None
    return {
        "lat": message.loc_lat,
        "lng": message.loc_lng,
        "radius": message.loc_radius,
        "source": message.loc_source,
        "status": 1,
    }


def message_variables(
    message: Any,
    device: Any,
    receptions: Sequence[tuple[Any, Any]],
    grammar_config: str | None,
    *,
    duplicate: tuple[Any, Any] | None = None,
) -> dict[str, object]:
    """Every variable a message offers (sigfox-callbacks.md); each callback uses what it names.
    `message`, `device` and the (reception, station) pairs are ORM objects or Core rows with the
    same attribute names (`_MESSAGE_COLUMNS`, Device identifier/lat/lng, `Heard`, `HeardBy`).
    A sendDuplicate copy gives its (reception, station): the network values are that station's
    rather than the best reception's, and `duplicate` is true."""
    in_window = [(r, s) for r, s in receptions if not r.late] or receptions
    best = _best(in_window) if duplicate is None else duplicate
    snrs = [r.snr for r, _s in in_window if r.snr is not None]
    service = json.loads(message.service) if message.service else {}
    values: dict[str, object] = {
        "device": device.identifier,
        "time": _epoch(message.time),
        "data": message.data,
        "seqNumber": message.seq_number,
        "deviceTypeId": str(message.device_type_id),
        "station": best[1].identifier if best else None,
        "rssi": best[0].rssi if best else None,
        "snr": best[0].snr if best else None,
        "avgSnr": sum(snrs) / len(snrs) if snrs else None,
        "lat": device.lat if device.lat is not None else (best[1].lat if best else None),
        "lng": device.lng if device.lng is not None else (best[1].lng if best else None),
        "duplicate": duplicate is not None,
        "ack": message.ack_required,
        "longPolling": False,
        "temp": service.get("temperature"),
        "batt": service.get("battery"),
        "lqi": LQI_NAMES.get(message.lqi, "NA"),
        "linkQuality": message.lqi,
        "fixedLat": device.lat,
        "fixedLng": device.lng,
        "operatorName": "Heron",
        "countryCode": None,
        "computedLocation": _computed_location(message),
        "duplicates": [{"bsId": s.identifier, "nbRep": r.rep, "rssi": r.rssi, "snr": r.snr} for r, s in receptions],
    }
    fields: dict[str, Any] = {}
    if grammar_config:
        fields = decode(grammar_of(grammar_config), message.data)
    elif message.decoded:
        fields = json.loads(message.decoded)
    values.update({f"{templates.CUSTOM_PREFIX}{k}": v for k, v in fields.items()})
    return values


# -- the worker -----------------------------------------------------------------------------------
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
        _COLLECTOR.worker = weakref.ref(self)

    @property
    def holder(self) -> str:
        """What this worker writes on the rows it leases: host:pid:token, as the job runner's id
        (the pid read now: a worker built before a fork leases as the process that runs it)."""
        return f"{socket.gethostname()}:{os.getpid()}:{self._token}"

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
        alerts = await asyncio.to_thread(self._record, batches, results, self.clock())
        await self._alert_safely(alerts)

    async def _upkeep(self) -> None:
        """Leases of dead local workers taken back (at start, then every `take_back_every`);
        the caps, when due."""
        await self._take_back_when_due()
        now = self.clock()
        if self._next_sweep is None or now >= self._next_sweep:
            self._next_sweep = now + self.policy.sweep_every
            await self._alert_safely(await asyncio.to_thread(self._sweep, now))

    async def _take_back_when_due(self) -> None:
        now = self.clock()
        if self._next_take_back is None or now >= self._next_take_back:
            self._next_take_back = now + self.policy.take_back_every
            await asyncio.to_thread(self._take_back, now)

    def _take_back(self, now: datetime) -> int:
        """Rows leased by a worker process of this host that no longer exists (killed, crashed)
        are due again at once, instead of when their lease would have ended. A live process's
        leases, and other hosts' (whose processes cannot be asked), are left to run out."""
        with self.db.read() as session:
            holders = list(
                session.scalars(select(Delivery.leased_by).where(Delivery.leased_by.is_not(None)).distinct())
            )
        gone = [h for h in holders if h is not None and _gone_from_this_host(h)]
        if not gone:
            return 0
        with self.db.write() as session:
            taken = _rowcount(
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

    def _renew(self, ids: list[int]) -> None:
        """The lease of rows still in flight, pushed out again (a round may outlast one lease:
        hundreds of requests, each up to its timeout per redirect)."""
        with self.db.write() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.leased_by == self.holder, Delivery.state == PENDING)
                .values(next_at=self.clock() + self.policy.lease)
                .execution_options(synchronize_session=False)
            )

    async def _alert_safely(self, alerts: dict[int, list[str]]) -> None:
        if alerts:
            try:
                await self._alert(alerts, self.clock())
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
        locking = self.db.dialect == "postgresql"
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
            picked = list(session.scalars(single.with_for_update(of=Delivery, skip_locked=True) if locking else single))
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
                picked += session.scalars(rows.with_for_update(skip_locked=True) if locking else rows)
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
            items = self._prepare(session, kept, cbs)
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

    def _prepare(self, session: Session, owed: list[Owed], cbs: dict[int, Callback]) -> list[Item]:
        """Each delivery's values: from its message, or the ones it carries."""
        conn = session.connection()
        message_ids = [d.message_id for d in owed if d.message_id is not None]
        m, dv, rc, st = (cast(Table, model.__table__) for model in (Message, Device, Reception, BaseStation))
        messages = {
            row.id: row
            for row in conn.execute(select(*(m.c[n] for n in _MESSAGE_COLUMNS)).where(m.c.id.in_(message_ids)))
        }
        devices = {
            row.id: row
            for row in conn.execute(
                select(dv.c.id, dv.c.identifier, dv.c.lat, dv.c.lng).where(
                    dv.c.id.in_({row.device_id for row in messages.values()})
                )
            )
        }
        types = {
            t.id: t
            for t in session.scalars(
                select(DeviceType).where(DeviceType.id.in_({c.device_type_id for c in cbs.values()}))
            )
        }
        receptions: dict[int, list[tuple[Heard, HeardBy]]] = defaultdict(list)
        by_id: dict[int, tuple[Heard, HeardBy]] = {}  # what sendDuplicate copies carry
        for reception_id, message_id, late, rssi, snr, rep, identifier, lat, lng in conn.execute(
            select(
                rc.c.id, rc.c.message_id, rc.c.late, rc.c.rssi, rc.c.snr, rc.c.rep, st.c.identifier, st.c.lat, st.c.lng
            )
            .join(st, st.c.id == rc.c.station_id)
            .where(rc.c.message_id.in_(message_ids))
            .order_by(rc.c.id)
        ):
            heard = by_id[reception_id] = (Heard(late, rssi, snr, rep), HeardBy(identifier, lat, lng))
            receptions[message_id].append(heard)
        items = []
        for d in owed:
            cb = cbs.get(d.callback_id) if d.callback_id is not None else None
            dt = types.get(cb.device_type_id) if cb is not None else None
            try:
                if d.message_id is not None:
                    message = messages[d.message_id]
                    grammar = cb.payload_config if cb is not None else None
                    copied = None
                    if d.reception_id is not None and (copied := by_id.get(d.reception_id)) is None:
                        raise LookupError(f"reception {d.reception_id} of the message is gone")
                    values = message_variables(
                        message, devices[message.device_id], receptions[message.id], grammar, duplicate=copied
                    )
                else:
                    values = json.loads(d.variables or "{}")
                items.append(Item(d, cb, dt, values))
            except Exception as exc:  # a delivery that cannot render is a recorded failure
                log.warning("delivery.render_failed", extra={"delivery": d.id, "error": str(exc)})
                items.append(Item(d, cb, dt, None, f"cannot render the request: {exc}"))
        return items

    def _bind_time(self, when: datetime) -> Any:
        """A time as the `deliveries` columns store it (their type's bind processor)."""
        dialect = self.db.engine.dialect
        process = cast(Table, Delivery.__table__).c.next_at.type.dialect_impl(dialect).bind_processor(dialect)
        return process(when) if process is not None else when

    def _record(self, batches: list[list[Item]], results: list[list[Result]], now: datetime) -> dict[int, list[str]]:
        """Each row's outcome; the callbacks' circuits. Returns what to alert about, by callback."""
        policy = self.policy
        delivered, retried = [], []
        failures: dict[int, int] = defaultdict(int)  # failed requests (batches) per callback
        last_error: dict[int, str] = {}
        failed_ids: dict[int, list[int]] = defaultdict(list)
        refusals: dict[int, tuple[int, str]] = {}  # refused destinations per callback: (rows, last error)
        successes: set[int] = set()
        # Driver-level rows (id last): the values a batch shares (its time, its result's request)
        # are converted once, not once per row.
        stamp = self._bind_time(now)
        holder = self.holder
        for batch, outcomes in zip(batches, results, strict=True):
            # One schedule per batch: a BATCH_URL batch is retried whole, in order.
            retry_at = self._bind_time(now + policy.backoff(max(item.delivery.attempts for item in batch) + 1))
            batch_failed: set[int] = set()
            shared: dict[int, tuple[str | None, str]] = {}  # per Result object: (error, request JSON)
            for item, result in zip(batch, outcomes, strict=True):
                d = item.delivery
                cb_id = d.callback_id
                label = _label(cb_id)
                described = shared.get(id(result))
                if described is None:
                    described = shared[id(result)] = (result.describe(), json.dumps(result.request))
                error, request = described
                if result.ok:
                    if cb_id is not None:
                        successes.add(cb_id)
                    LATENCY.labels(label).observe(max(0.0, (now - d.created_at).total_seconds()))
                    delivered.append((d.attempts + 1, stamp, result.status, error, request, stamp, d.id))
                    continue
                ATTEMPT_FAILURES.labels(label).inc()
                # A refused destination (an address the SSRF rules refuse) fails for good: asking
                # again gets the same answer until the allow-list changes, then a retry by hand
                # sends it. It says nothing of the endpoint's health: the circuit ignores it.
                gave_up = result.refused or now - d.created_at >= policy.give_up
                if gave_up:
                    GIVEN_UP.labels(label, "refused" if result.refused else "give_up").inc()
                if cb_id is not None and result.refused:
                    refusals[cb_id] = (refusals.get(cb_id, (0, ""))[0] + 1, error or "")
                elif cb_id is not None:
                    batch_failed.add(cb_id)
                    failed_ids[cb_id].append(d.id)
                    last_error[cb_id] = error or ""
                state = FAILED if gave_up else PENDING
                retried.append((state, d.attempts + 1, retry_at, stamp, result.status, error, request, d.id, holder))
            for cb_id in batch_failed:
                failures[cb_id] += 1
        alerts: dict[int, list[str]] = defaultdict(list)
        for cb_id, (count, error) in refusals.items():
            alerts[cb_id].append(
                f"{count} deliveries failed for good: {error}; they are listed as not delivered and "
                "can be retried by hand once the destination is allowed (HERON_CALLBACK_ALLOW_CIDRS)"
            )
        with self.db.write() as session:
            conn = session.connection()
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            if delivered:  # delivered is the truth, whatever a sweep said meanwhile
                conn.exec_driver_sql(
                    f"UPDATE deliveries SET state = '{DONE}', attempts = {mark}, last_attempt_at = {mark}, "
                    f"last_status = {mark}, last_error = {mark}, last_request = {mark}, delivered_at = {mark}, "
                    f"leased_by = NULL WHERE id = {mark}",
                    delivered,
                )
            # A row the caps failed meanwhile stays failed; a row whose lease this worker lost
            # (it stalled past the lease: another worker has it now) is the other's to record.
            if retried:
                conn.exec_driver_sql(
                    f"UPDATE deliveries SET state = {mark}, attempts = {mark}, next_at = {mark}, "
                    f"last_attempt_at = {mark}, last_status = {mark}, last_error = {mark}, last_request = {mark}, "
                    f"delivered_at = NULL, leased_by = NULL WHERE id = {mark} AND state = '{PENDING}' "
                    f"AND leased_by = {mark}",
                    retried,
                )
            # A success resets its callback's failure count (one read when none has failed).
            unhealthy = (Callback.failures > 0) | Callback.dead.is_(True)
            for cb_id, was_dead in session.execute(
                select(Callback.id, Callback.dead).where(Callback.id.in_(sorted(successes)), unhealthy)
            ).all():
                session.execute(
                    update(Callback)
                    .where(Callback.id == cb_id)
                    .values(failures=0, dead=False, dead_since=None, probe_at=None)
                )
                if was_dead:  # revived: its backlog goes out now, in order (not rows in flight)
                    session.execute(
                        update(Delivery)
                        .where(
                            Delivery.callback_id == cb_id,
                            Delivery.state == PENDING,
                            Delivery.next_at > now,
                            Delivery.leased_by.is_(None),
                        )
                        .values(next_at=now)
                    )
            for cb_id, n in failures.items():
                if cb_id in successes:
                    continue
                cb = session.get(Callback, cb_id)
                if cb is None:
                    continue
                cb.failures += n
                alerts[cb_id].append(f"{n} failed request(s); last error: {last_error.get(cb_id)}")
                if not cb.dead and cb.failures >= FAILURES_TO_DEAD:
                    cb.dead, cb.dead_since, cb.probe_at = True, now, now + policy.probe_interval(cb.failures)
                    alerts[cb_id].append(
                        f"the callback is dead after {cb.failures} consecutive failures: it is probed at its "
                        f"backoff's pace (at most {policy.probe_every.total_seconds():g} s apart) and its backlog waits"
                    )
                    log.warning("delivery.callback_dead", extra={"callback": cb_id})
                if cb.dead and cb.probe_at is not None:  # a dead callback's probes keep their pace
                    session.execute(
                        update(Delivery)
                        .where(
                            Delivery.id.in_(failed_ids[cb_id]),
                            Delivery.state == PENDING,
                            Delivery.next_at > cb.probe_at,
                        )
                        .values(next_at=cb.probe_at)
                        .execution_options(synchronize_session=False)
                    )
        return alerts

    def _sweep(self, now: datetime) -> dict[int, list[str]]:
        """The caps, set-based: per callback, pending rows beyond `max_pending_per_callback` (the
        oldest), and pending rows due but nobody tried past `give_up`, become FAILED."""
        policy = self.policy
        cap = policy.max_pending_per_callback
        alerts: dict[int, list[str]] = defaultdict(list)
        with self.db.write() as session:
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
                dropped = _rowcount(
                    session.execute(
                        update(Delivery)
                        .where(Delivery.callback_id == cb_id, Delivery.state == PENDING, Delivery.id <= cutoff)
                        .values(state=FAILED, last_error=error, leased_by=None)
                        .execution_options(synchronize_session=False)
                    )
                )
                GIVEN_UP.labels(_label(cb_id), "overflow").inc(dropped)
                alerts[cast(int, cb_id)].append(f"{dropped} oldest pending deliveries recorded as failed ({error})")
                log.warning("delivery.overflow", extra={"callback": cb_id, "dropped": dropped})
            stale = and_(
                Delivery.state == PENDING, Delivery.next_at <= now, Delivery.created_at <= now - policy.give_up
            )
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
                    GIVEN_UP.labels(_label(cb_id), "expired").inc(count)
                    if cb_id is not None:
                        alerts[cb_id].append(f"{count} deliveries recorded as failed ({error})")
        return alerts

    # alerts
    async def _alert(self, alerts: dict[int, list[str]], now: datetime) -> None:
        if not self.smtp.configured:
            return
        mails = await asyncio.to_thread(self._claim_alerts, alerts, now)
        for error in await asyncio.to_thread(send_mails, self.smtp, mails):
            if error:
                log.warning("delivery.alert_not_sent", extra={"error": error})

    def _claim_alerts(self, alerts: dict[int, list[str]], now: datetime) -> list[Mail]:
        """The alert mails due: a callback alerted less than `alert_every` ago is skipped; the
        time is recorded first (at most one mail, even across workers and restarts)."""
        due = or_(Callback.alerted_at.is_(None), Callback.alerted_at <= now - self.policy.alert_every)
        mails = []
        with self.db.write() as session:
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
                if _rowcount(took) != 1:
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
                        f"{self.policy.alert_every.total_seconds() / 3600:g} h.",
                    ]
                )
                mails.append(Mail(to, subject, body))
        return mails


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
