"""The durable outbox: every request Heron owes a customer's server is a `deliveries` row, written
in the transaction that made it owed, and kept until the server has it.

- **Enqueue** (`enqueue_messages`): one row per (new message, enabled callback of its device
  type and kind). DATA UPLINK/BIDIR and SERVICE STATUS/REPEATER are due when the dedup window
  closes (so they carry every reception of it); DATA_ADVANCED when the horizon has passed.
- **Claim**: due rows whose (callback, device) has no older pending row (order is kept per
  callback and device), of callbacks that are not dead; a dead callback gets one probe per
  probe interval. Claimed rows are leased (their `next_at` moves past the lease) so another
  worker does not take them; on PostgreSQL the claim also skips rows another worker has locked.
- **Send**: rendered at send time from the message and the callback as it is then, through the
  guarded HTTP request (SSRF rules), 10 s timeout. Each request carries `webhook-id` (the
  delivery's key, stable across retries) and `webhook-timestamp`, and `webhook-signature` when
  the callback has a signing secret (Standard Webhooks).
- **Retry**: a failure (timeout, connection error, non-2xx) is tried again after an exponential
  backoff (base x 2^attempt, capped, with jitter) until `give_up` after its creation, then the
  row is FAILED and listed in `callbacks-not-delivered`. `FAILURES_TO_DEAD` consecutive failures
  mark the callback dead; its first success revives it and releases its backlog at once.

At-least-once: a request whose answer is lost (crash between send and record) is sent again
with the same `webhook-id`, for receivers to deduplicate."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, and_, bindparam, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.delivery import callbacks as callbacks_service
from heron.delivery import templates
from heron.delivery.http import HttpResult, send
from heron.delivery.models import DONE, FAILED, PENDING, Callback, Delivery
from heron.delivery.ssrf import IPNetwork
from heron.keys import Keyring
from heron.messages.decoding import decode, grammar_of
from heron.messages.models import Message, Reception
from heron.messages.store import StoredMessage
from heron.network.sigfox.lqi import LQI_NAMES
from heron.network.sigfox.models import BaseStation
from heron.registry.models import Device, DeviceType

log = logging.getLogger("heron.delivery")

FAILURES_TO_DEAD = 5
# Which callbacks a stored frame owes, by frame type: (callback type, subtype, due after the horizon?)
_OWED = {
    "DATA": (("DATA", "UPLINK", False), ("DATA", "BIDIR", False), ("SERVICE", "DATA_ADVANCED", True)),
    "KEEPALIVE": (("SERVICE", "STATUS", False),),
    "REPEATER": (("SERVICE", "REPEATER", False),),
}


@dataclass(frozen=True)
class Policy:
    """Retry schedule and limits (`HERON_DELIVERY_*` settings)."""

    backoff_base: timedelta = timedelta(seconds=10)
    backoff_max: timedelta = timedelta(minutes=30)
    give_up: timedelta = timedelta(hours=48)
    probe_every: timedelta = timedelta(minutes=1)
    lease: timedelta = timedelta(seconds=60)
    timeout: float = 10.0
    batch: int = 500
    concurrency: int = 64

    def backoff(self, attempts: int) -> timedelta:
        seconds = min(self.backoff_max.total_seconds(), self.backoff_base.total_seconds() * 2 ** max(0, attempts - 1))
        return timedelta(seconds=seconds * random.uniform(0.9, 1.1))


def new_key() -> str:
    return uuid.uuid4().hex


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
            due = m.time + (horizon if advanced else dedup_window)
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
                        "created_at": m.time,
                    }
                )
    if rows:
        session.execute(insert(Delivery), rows)
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


# -- what a delivery sends -------------------------------------------------------------------------
@dataclass
class Outgoing:
    """A rendered request (URL channels)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


def message_variables(
    message: Message, device: Device, receptions: list[tuple[Reception, BaseStation]], grammar_config: str | None
) -> dict[str, object]:
    """Every variable a message offers (sigfox-callbacks.md); each callback uses what it names."""
    in_window = [(r, s) for r, s in receptions if not r.late] or receptions
    best = max(in_window, key=lambda rs: rs[0].rssi if rs[0].rssi is not None else -1e9, default=None)
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
        "duplicate": False,
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
        "computedLocation": None,
        "duplicates": [{"bsId": s.identifier, "nbRep": r.rep, "rssi": r.rssi, "snr": r.snr} for r, s in receptions],
    }
    fields: dict[str, Any] = {}
    if grammar_config:
        fields = decode(grammar_of(grammar_config), message.data)
    elif message.decoded:
        fields = json.loads(message.decoded)
    values.update({f"{templates.CUSTOM_PREFIX}{k}": v for k, v in fields.items()})
    return values


@dataclass
class _Compiled:
    url: templates.Template
    headers: dict[str, templates.Template]
    body: templates.Template | None


_COMPILED: dict[tuple[int, datetime | None, datetime], _Compiled] = {}


def _compiled(keyring: Keyring, cb: Callback, dt: DeviceType) -> _Compiled:
    """A callback's templates, compiled once per version of the callback."""
    key = (cb.id, cb.updated_at, cb.created_at)
    found = _COMPILED.get(key)
    if found is None:
        available = templates.variables_for(
            cb.callback_type, cb.callback_subtype, custom_fields=callbacks_service.custom_fields(cb, dt)
        )
        context = callbacks_service.CONTENT_CONTEXTS.get(cb.content_type or "", "text")
        found = _Compiled(
            templates.compile_template(cb.url or "", "url", available, "url"),
            {
                k: templates.compile_template(v, "header", available, k)
                for k, v in callbacks_service.stored_headers(keyring, cb).items()
            },
            templates.compile_template(cb.body_template, context, available, "bodyTemplate")
            if cb.body_template is not None and cb.http_method != "GET"
            else None,
        )
        if len(_COMPILED) > 4096:
            _COMPILED.clear()
        _COMPILED[key] = found
    return found


def render(keyring: Keyring, cb: Callback, dt: DeviceType, values: dict[str, object]) -> Outgoing:
    compiled = _compiled(keyring, cb, dt)
    headers = {k: t.render(values) for k, t in compiled.headers.items()}
    credentials = callbacks_service.stored_credentials(keyring, cb)
    if credentials is not None and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    body = None
    if cb.http_method in ("POST", "PUT"):
        body = compiled.body.render(values).encode() if compiled.body is not None else b""
        headers["Content-Type"] = cb.content_type or callbacks_service.DEFAULT_CONTENT_TYPE
    return Outgoing(cb.http_method or "POST", compiled.url.render(values), headers, body)


def sign(secret: str, key: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret
    (`whsec_` + base64 key bytes; any other text is used as UTF-8 bytes)."""
    raw = secret.removeprefix("whsec_")
    try:
        secret_bytes = base64.b64decode(raw, validate=True) if secret.startswith("whsec_") else secret.encode()
    except ValueError:
        secret_bytes = secret.encode()
    signed = f"{key}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_bytes, signed, hashlib.sha256).digest()).decode()


# -- the worker -----------------------------------------------------------------------------------
@dataclass
class _Job:
    delivery: Delivery
    callback: Callback
    outgoing: Outgoing | None
    error: str | None = None  # set when nothing could be rendered


class DeliveryWorker:
    """Sends what the outbox owes, in a background thread with its own event loop; `run_once`
    does one round in the caller's thread (tests drive it with an injected clock)."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        allow: tuple[IPNetwork, ...] = (),
        policy: Policy | None = None,
        clock: Callable[[], datetime] = utcnow,
        idle_poll: float = 0.05,
    ) -> None:
        self.db, self.keyring, self.allow = db, keyring, allow
        self.policy = policy or Policy()
        self.clock, self.idle_poll = clock, idle_poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="heron-delivery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        async def main() -> None:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=self.policy.concurrency)) as client:
                while not self._stop.is_set():
                    try:
                        sent = await self._round(client)
                    except Exception:
                        log.exception("delivery.round_failed")
                        sent = 0
                    if not sent:
                        self._wake.wait(self.idle_poll)
                        self._wake.clear()

        asyncio.run(main())

    def run_once(self) -> int:
        """One claim-send-record round; the number of deliveries attempted."""

        async def once() -> int:
            async with httpx.AsyncClient() as client:
                return await self._round(client)

        return asyncio.run(once())

    # one round
    async def _round(self, client: httpx.AsyncClient) -> int:
        now = self.clock()
        jobs = await asyncio.to_thread(self._claim, now)
        if not jobs:
            return 0
        limit = asyncio.Semaphore(self.policy.concurrency)

        async def attempt(job: _Job) -> HttpResult:
            if job.outgoing is None:
                return HttpResult(None, job.error or "nothing to send")
            async with limit:
                return await self._send(client, job)

        results = await asyncio.gather(*(attempt(j) for j in jobs))
        await asyncio.to_thread(self._record, jobs, results, self.clock())
        return len(jobs)

    def _claim(self, now: datetime) -> list[_Job]:
        policy = self.policy
        older = aliased(Delivery)
        blocked = exists().where(
            older.callback_id == Delivery.callback_id,
            older.device_id == Delivery.device_id,
            older.state == PENDING,
            older.id < Delivery.id,
        )
        live = or_(Callback.dead.is_(False), and_(Callback.probe_at.is_not(None), Callback.probe_at <= now))
        query = (
            select(Delivery.id)
            .join(Callback, Callback.id == Delivery.callback_id)
            .where(Delivery.state == PENDING, Delivery.next_at <= now, Callback.enabled.is_(True), live, ~blocked)
            .order_by(Delivery.next_at, Delivery.id)
            .limit(policy.batch)
        )
        with self.db.write() as session:
            if self.db.dialect == "postgresql":
                query = query.with_for_update(of=Delivery, skip_locked=True)
            picked = list(session.scalars(query))
            probed: set[int] = set()
            if not picked:
                return []
            deliveries = list(session.scalars(select(Delivery).where(Delivery.id.in_(picked)).order_by(Delivery.id)))
            cbs = {
                c.id: c
                for c in session.scalars(select(Callback).where(Callback.id.in_({d.callback_id for d in deliveries})))
            }
            # A dead callback gets one probe per round: its oldest due delivery.
            kept = []
            for d in deliveries:
                cb = cbs[cast(int, d.callback_id)]
                if cb.dead:
                    if cb.id in probed:
                        continue
                    probed.add(cb.id)
                    cb.probe_at = now + policy.probe_every
                kept.append(d)
            lease_until = now + policy.lease
            for d in kept:
                d.next_at = lease_until
            jobs = self._prepare(session, kept, cbs)
            session.flush()
            session.expunge_all()
        return jobs

    def _prepare(self, session: Session, deliveries: list[Delivery], cbs: dict[int, Callback]) -> list[_Job]:
        """Render each delivery's request from its message and callback."""
        message_ids = [d.message_id for d in deliveries if d.message_id is not None]
        messages = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(message_ids)))}
        device_ids = {m.device_id for m in messages.values()}
        devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(device_ids)))}
        types = {
            t.id: t
            for t in session.scalars(
                select(DeviceType).where(DeviceType.id.in_({c.device_type_id for c in cbs.values()}))
            )
        }
        receptions: dict[int, list[tuple[Reception, BaseStation]]] = defaultdict(list)
        for r, s in session.execute(
            select(Reception, BaseStation)
            .join(BaseStation, BaseStation.id == Reception.station_id)
            .where(Reception.message_id.in_(message_ids))
            .order_by(Reception.id)
        ):
            receptions[r.message_id].append((r, s))
        jobs = []
        for d in deliveries:
            cb = cbs[cast(int, d.callback_id)]
            dt = types[cb.device_type_id]
            try:
                if d.message_id is not None:
                    m = messages[d.message_id]
                    values = message_variables(m, devices[m.device_id], receptions[m.id], cb.payload_config)
                else:
                    values = json.loads(d.variables or "{}")
                if cb.channel != "URL":
                    raise NotImplementedError(f"the {cb.channel} channel is not available yet")
                jobs.append(_Job(d, cb, render(self.keyring, cb, dt, values)))
            except Exception as exc:  # a callback that cannot render is a recorded failure
                log.warning("delivery.render_failed", extra={"delivery": d.id, "error": str(exc)})
                jobs.append(_Job(d, cb, None, f"cannot render the request: {exc}"))
        return jobs

    async def _send(self, client: httpx.AsyncClient, job: _Job) -> HttpResult:
        out = job.outgoing
        assert out is not None
        timestamp = int(time.time())
        headers = dict(out.headers) | {"webhook-id": job.delivery.key, "webhook-timestamp": str(timestamp)}
        secret = callbacks_service.stored_signing_secret(self.keyring, job.callback)
        if secret:
            headers["webhook-signature"] = sign(secret, job.delivery.key, timestamp, out.body or b"")
        return await send(
            client,
            out.method,
            out.url,
            headers=headers,
            content=out.body,
            allow=self.allow,
            timeout=self.policy.timeout,
            send_sni=job.callback.send_sni,
        )

    def _record(self, jobs: list[_Job], results: list[HttpResult], now: datetime) -> None:
        policy = self.policy
        rows = []
        failures: dict[int, int] = defaultdict(int)
        successes: set[int] = set()
        for job, result in zip(jobs, results, strict=True):
            d = job.delivery
            attempts = d.attempts + 1
            request = json.dumps({"method": job.outgoing.method, "url": job.outgoing.url} if job.outgoing else {})
            if result.ok:
                successes.add(job.callback.id)
                state, next_at, delivered = DONE, d.next_at, now
            else:
                failures[job.callback.id] += 1
                gave_up = now - d.created_at >= policy.give_up
                state, next_at, delivered = (FAILED if gave_up else PENDING), now + policy.backoff(attempts), None
            rows.append(
                {
                    "b_id": d.id,
                    "b_state": state,
                    "b_attempts": attempts,
                    "b_next": next_at,
                    "b_at": now,
                    "b_status": result.status,
                    "b_error": (result.error or (None if result.ok else f"HTTP {result.status}"))[:1000]
                    if not result.ok
                    else None,
                    "b_request": request,
                    "b_delivered": delivered,
                }
            )
        table = cast(Table, Delivery.__table__)
        with self.db.write() as session:
            session.connection().execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(
                    state=bindparam("b_state"),
                    attempts=bindparam("b_attempts"),
                    next_at=bindparam("b_next"),
                    last_attempt_at=bindparam("b_at"),
                    last_status=bindparam("b_status"),
                    last_error=bindparam("b_error"),
                    last_request=bindparam("b_request"),
                    delivered_at=bindparam("b_delivered"),
                ),
                rows,
            )
            for cb_id in successes:
                was_dead = session.scalar(select(Callback.dead).where(Callback.id == cb_id))
                session.execute(
                    update(Callback)
                    .where(Callback.id == cb_id)
                    .values(failures=0, dead=False, dead_since=None, probe_at=None)
                )
                if was_dead:  # revived: its backlog goes out now, in order
                    session.execute(
                        update(Delivery)
                        .where(Delivery.callback_id == cb_id, Delivery.state == PENDING, Delivery.next_at > now)
                        .values(next_at=now)
                    )
            for cb_id, n in failures.items():
                if cb_id in successes:
                    continue
                cb = session.get(Callback, cb_id)
                if cb is None:
                    continue
                cb.failures += n
                if not cb.dead and cb.failures >= FAILURES_TO_DEAD:
                    cb.dead, cb.dead_since, cb.probe_at = True, now, now + policy.probe_every
                    log.warning("delivery.callback_dead", extra={"callback": cb_id})
