"""Unique ids without a system call each: a random per-process prefix and a counter, 32 hex
digits like a UUID's. `uuid4()` reads the kernel's random source every time, which the ingest
(a request id per request) and the outbox (a delivery id per row) paid thousands of times a
second. The prefix is drawn again in a forked child, so two processes never share one."""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = secrets.token_hex(8)
_counter = itertools.count()


def unique_hex() -> str:
    return f"{_prefix}{next(_counter):016x}"


def _redraw() -> None:
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(8), itertools.count()


os.register_at_fork(after_in_child=_redraw)
