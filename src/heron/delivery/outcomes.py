"""A round's outcomes recorded: each row delivered, retried after its backoff or failed for good,
and the callbacks' circuits (`FAILURES_TO_DEAD` consecutive failed requests mark a callback dead;
its first success revives it and releases its backlog)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from heron.db.driver import update_many
from heron.db.engine import Database
from heron.delivery.channels import Item, Result
from heron.delivery.metrics import ATTEMPT_FAILURES, GIVEN_UP, LATENCY, label
from heron.delivery.models import DONE, FAILED, PENDING, Callback, Delivery
from heron.delivery.policy import Policy

log = logging.getLogger("heron.delivery")

FAILURES_TO_DEAD = 5


def record(
    db: Database,
    policy: Policy,
    holder: str,
    time_to_driver: Callable[[datetime], Any],
    batches: list[list[Item]],
    results: list[list[Result]],
    now: datetime,
) -> dict[int, list[str]]:
    """Each row's outcome (`time_to_driver`: a time as the driver takes it for the `deliveries`
    columns); the callbacks' circuits. Returns what to alert about, by callback."""
    delivered, retried = [], []
    failures: dict[int, int] = defaultdict(int)  # failed requests (batches) per callback
    last_error: dict[int, str] = {}
    failed_ids: dict[int, list[int]] = defaultdict(list)
    refusals: dict[int, tuple[int, str]] = {}  # refused destinations per callback: (rows, last error)
    successes: set[int] = set()
    # Driver-level rows (id last): the values a batch shares (its time, its result's request)
    # are converted once, not once per row.
    stamp = time_to_driver(now)
    for batch, outcomes in zip(batches, results, strict=True):
        # One schedule per batch: a BATCH_URL batch is retried whole, in order.
        retry_at = time_to_driver(now + policy.backoff(max(item.delivery.attempts for item in batch) + 1))
        batch_failed: set[int] = set()
        shared: dict[int, tuple[str | None, str]] = {}  # per Result object: (error, request JSON)
        for item, result in zip(batch, outcomes, strict=True):
            d = item.delivery
            cb_id = d.callback_id
            cb_label = label(cb_id)
            described = shared.get(id(result))
            if described is None:
                described = shared[id(result)] = (result.describe(), json.dumps(result.request))
            error, request = described
            if result.ok:
                if cb_id is not None:
                    successes.add(cb_id)
                LATENCY.labels(cb_label).observe(max(0.0, (now - d.created_at).total_seconds()))
                delivered.append((d.attempts + 1, stamp, result.status, error, request, stamp, d.id))
                continue
            ATTEMPT_FAILURES.labels(cb_label).inc()
            # A refused destination (an address the SSRF rules refuse) fails for good: asking
            # again gets the same answer until the allow-list changes, then a retry by hand
            # sends it. It says nothing of the endpoint's health: the circuit ignores it.
            gave_up = result.refused or now - d.created_at >= policy.give_up
            if gave_up:
                GIVEN_UP.labels(cb_label, "refused" if result.refused else "give_up").inc()
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
    with db.write() as session:
        if delivered:  # delivered is the truth, whatever a sweep said meanwhile
            update_many(
                session,
                f"UPDATE deliveries SET state = '{DONE}', attempts = {{0}}, last_attempt_at = {{0}}, "
                "last_status = {0}, last_error = {0}, last_request = {0}, delivered_at = {0}, "
                "leased_by = NULL WHERE id = {0}",
                delivered,
            )
        # A row the caps failed meanwhile stays failed; a row whose lease this worker lost
        # (it stalled past the lease: another worker has it now) is the other's to record.
        if retried:
            update_many(
                session,
                "UPDATE deliveries SET state = {0}, attempts = {0}, next_at = {0}, "
                "last_attempt_at = {0}, last_status = {0}, last_error = {0}, last_request = {0}, "
                f"delivered_at = NULL, leased_by = NULL WHERE id = {{0}} AND state = '{PENDING}' "
                "AND leased_by = {0}",
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
