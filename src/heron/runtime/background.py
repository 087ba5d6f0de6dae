"""The lifecycle every per-process worker shares (job runner, delivery worker, downlink decider,
WAL checkpointer): a daemon thread running `_loop`, stopped by an event it watches, woken early
by another."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def fast_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop factory where it is installed (it comes with uvicorn[standard]);
    None: asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the fast loop: a worker's own event loop (its HTTP client spends a
    good part of its time in the loop's transports, which uvloop makes several times cheaper)."""
    with asyncio.Runner(loop_factory=fast_event_loop()) as runner:
        return runner.run(main)


class BackgroundThread:
    thread_name = "heron-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end, and wait for it (its current round finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        raise NotImplementedError
