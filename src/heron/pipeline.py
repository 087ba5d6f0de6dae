"""The uplink pipeline's front door: ingest requests hand their validated frames to one writer
thread per process, which stores what has queued up in one transaction (group commit) and
only then answers each request. So a 2xx to a station means its frames are committed, and a
burst of small requests costs a few transactions instead of one each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.delivery.outbox import enqueue_messages
from heron.events import service as events
from heron.messages.store import HeardFrame, StoreResult, store_frames

log = logging.getLogger("heron.pipeline")

MAX_BATCH_FRAMES = 5000


@dataclass
class _Pending:
    frames: Sequence[HeardFrame]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[StoreResult]


class UplinkWriter:
    def __init__(
        self,
        db: Database,
        *,
        dedup_window: timedelta,
        horizon: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db, self.dedup_window, self.horizon, self.clock = db, dedup_window, horizon, clock
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="heron-uplink-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after storing what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    async def store(self, frames: Sequence[HeardFrame]) -> StoreResult:
        """Queue frames and wait until they are committed (or their transaction failed)."""
        if self._thread is None:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreResult] = loop.create_future()
        self._queue.put(_Pending(frames, loop, future))
        return await future

    def store_now(self, frames: Sequence[HeardFrame]) -> StoreResult:
        """Store in the caller's thread, in its own transaction (tools and tests)."""
        with self.db.write() as session:
            result = store_frames(session, frames, self.clock(), dedup_window=self.dedup_window, horizon=self.horizon)
            # The messages' outbox rows commit with them: nothing stored is ever left undelivered.
            enqueue_messages(session, result.new, dedup_window=self.dedup_window, horizon=self.horizon)
            events.after_uplinks(session, result.new, self.clock())
        return result

    def _loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch, count = [first], len(first.frames)
            while count < MAX_BATCH_FRAMES:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(more)
                count += len(more.frames)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            result = self.store_now([f for p in batch for f in p.frames])
        except Exception as exc:
            if len(batch) > 1:
                # One request's frames must not fail the others: store them one by one.
                for pending in batch:
                    self._write([pending])
                return
            log.exception("pipeline.store_failed", extra={"frames": len(batch[0].frames)})
            _settle(batch[0], None, exc)
            return
        for pending in batch:
            _settle(pending, result, None)


def _settle(pending: _Pending, result: StoreResult | None, exc: BaseException | None) -> None:
    def apply() -> None:
        if pending.future.done():
            return
        if exc is not None:
            pending.future.set_exception(exc)
        else:
            assert result is not None
            pending.future.set_result(result)

    # A closed loop (server shutting down) has nobody waiting for the answer.
    with contextlib.suppress(RuntimeError):
        pending.loop.call_soon_threadsafe(apply)
