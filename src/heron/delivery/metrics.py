"""The delivery metrics: latency, failed attempts and rows given up per callback (counted as
rounds are recorded), and the outbox's depth and oldest pending age, by one query at scrape time."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from heron.observability import REGISTRY

log = logging.getLogger("heron.delivery")

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


def label(callback_id: int | None) -> str:
    return str(callback_id) if callback_id is not None else "job"


class Watched(Protocol):
    """What the depth gauges read of a worker."""

    clock: Callable[[], datetime]

    def depth(self) -> tuple[int, datetime | None]: ...


class _OutboxCollector(Collector):
    """Outbox depth and the oldest pending row's age, by one query at scrape time, for the most
    recently built worker of the process."""

    def __init__(self) -> None:
        self.worker: weakref.ref[Watched] | None = None

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


def watch(worker: Watched) -> None:
    """The worker whose outbox the depth gauges show: the most recently built one."""
    _COLLECTOR.worker = weakref.ref(worker)
