"""The outbox's retry schedule and limits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


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
