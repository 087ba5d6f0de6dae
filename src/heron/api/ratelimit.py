"""Per-credential token buckets (in-process; a shared store arrives with scale-out)."""

from __future__ import annotations

import math
import threading
import time

from heron.errors import RateLimited


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, rate: float, burst: int) -> None:
        if rate <= 0:
            return
        capacity = float(max(burst, 1, int(rate)))
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited("rate limit exceeded for this credential", math.ceil((1.0 - tokens) / rate))
            self._buckets[key] = (tokens - 1.0, now)
