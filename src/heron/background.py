"""The lifecycle every per-process worker shares (job runner, delivery worker, downlink decider,
WAL checkpointer): a daemon thread running `_loop`, stopped by an event it watches, woken early
by another."""

from __future__ import annotations

import threading


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
