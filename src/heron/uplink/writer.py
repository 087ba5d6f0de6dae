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
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import Counter

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.observability import REGISTRY
from heron.radio import Network
from heron.uplink.handoff import hand_off
from heron.uplink.store import HeardFrame, RecentIndex, StoreResult, store_frames

log = logging.getLogger("heron.uplink.writer")

MAX_BATCH_FRAMES = 5000
# Under load (batches of BUSY_BATCH receptions or more), the writer keeps its first claim on
# SQLite's write turn while requests keep coming within FIRST_LINGER of each other, letting it
# go at least every FIRST_HOLD (the deliveries' turn).
BUSY_BATCH = 100
FIRST_HOLD = 0.25
FIRST_LINGER = 0.002


class Refused(Exception):
    """A request whose station credential failed the writer's recheck: none of its frames stored."""


class Recheck(Protocol):
    """A credential to check again in the writer before storing (once per batch: equal rechecks
    are checked once), for a caller that let the request in on a cached decision (the Sigfox
    ingest's credential cache: heron.network.sigfox.stations.StationRecheck)."""

    def __hash__(self) -> int: ...

    def still_valid(self, db: Database) -> bool:
        """Whether the credential still lets its frames in."""


@dataclass
class _Pending:
    frames: Sequence[HeardFrame]
    network: Network
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    recheck: Recheck | None = None


class Uplinks(Protocol):
    """Where the ingest stores frames: the writer thread of this process (`UplinkWriter`) or
    the uplink writer process (`heron.uplink.process.RemoteUplinks`)."""

    clock: Callable[[], datetime]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def store(self, frames: Sequence[HeardFrame], *, network: Network, recheck: Recheck | None = None) -> None:
        """Return once `frames` (heard on `network`) are committed; raise if they were not
        (`Refused`, or why)."""


class UplinkWriter:
    def __init__(
        self,
        db: Database,
        *,
        dedup_window: timedelta,
        horizon: timedelta,
        clock: Callable[[], datetime] = utcnow,
        recent_devices: int = 1_000_000,
    ) -> None:
        self.db, self.dedup_window, self.horizon, self.clock = db, dedup_window, horizon, clock
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # What this writer stored lately, so dedup mostly needs no query (checked against the
        # database before use: see heron.uplink.store). Used by the writer thread only.
        self.index = RecentIndex(max_devices=recent_devices)
        self._index_lock = threading.Lock()

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

    async def store(self, frames: Sequence[HeardFrame], *, network: Network, recheck: Recheck | None = None) -> None:
        """Queue frames and wait until they are committed (or their transaction failed).
        `recheck`, when given, is checked in the writer first: a credential no longer valid
        stores nothing of these frames and raises `Refused`."""
        if self._thread is None:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(frames, network, loop, future, recheck))
        await future

    def store_now(self, frames: Sequence[HeardFrame], *, network: Network) -> StoreResult:
        """Store in the caller's thread, in its own transaction (tools and tests)."""
        return self._commit([(network, frames)])

    def _commit(self, heard: list[tuple[Network, Sequence[HeardFrame]]]) -> StoreResult:
        """Store each network's frames and hand the new messages off, in one transaction."""
        total = StoreResult()
        # The index is updated as the batch goes: a failed (rolled back) transaction forgets it.
        with self._index_lock, self._forgetting_on_failure(), self.db.write(priority=True) as session:
            for network, frames in heard:
                now = self.clock()
                result = store_frames(
                    session,
                    frames,
                    now,
                    network=network,
                    dedup_window=self.dedup_window,
                    horizon=self.horizon,
                    index=self.index,
                )
                hand_off(session, network, result.new, now, dedup_window=self.dedup_window, horizon=self.horizon)
                total.add(result)
        _count(total)
        return total

    @contextlib.contextmanager
    def _forgetting_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.index.clear()
            raise

    def _loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            # Ahead of other processes' writers while the writer is the bottleneck (db.WriteTurn):
            # a batch of BUSY_BATCH receptions or more queued up while the last one was written.
            # For at most FIRST_HOLD at a time; a lightly loaded writer never holds it.
            with self.db.write_first():
                began = time.monotonic()
                while True:
                    batch = self._batch(first)
                    self._write(self._allowed(batch))
                    busy = sum(len(p.frames) for p in batch) >= BUSY_BATCH
                    if not busy or time.monotonic() - began > FIRST_HOLD:
                        break
                    try:
                        first = self._queue.get(timeout=FIRST_LINGER)
                    except queue.Empty:
                        break

    def _batch(self, first: _Pending) -> list[_Pending]:
        batch, count = [first], len(first.frames)
        while count < MAX_BATCH_FRAMES:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(more)
            count += len(more.frames)
        return batch

    def _allowed(self, batch: list[_Pending]) -> list[_Pending]:
        verdicts: dict[Recheck, bool] = {}
        kept = []
        for pending in batch:
            check = pending.recheck
            if check is not None:
                if check not in verdicts:
                    try:
                        verdicts[check] = check.still_valid(self.db)
                    except Exception as exc:
                        log.exception("pipeline.check_failed")
                        _settle(pending, exc)
                        continue
                if not verdicts[check]:
                    _settle(pending, Refused())
                    continue
            kept.append(pending)
        return kept

    def _write(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        by_network: dict[str, tuple[Network, list[HeardFrame]]] = {}
        for p in batch:
            by_network.setdefault(p.network.name, (p.network, []))[1].extend(p.frames)
        try:
            self._commit(list(by_network.values()))
        except Exception as exc:
            if len(batch) > 1:
                # One request's frames must not fail the others: store them one by one.
                for pending in batch:
                    self._write([pending])
                return
            log.exception("pipeline.store_failed", extra={"frames": len(batch[0].frames)})
            _settle(batch[0], exc)
            return
        # One wake-up per event loop for the whole batch (each is a write to the loop's pipe).
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = defaultdict(list)
        for pending in batch:
            by_loop[pending.loop].append(pending.future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _settle(pending: _Pending, exc: BaseException) -> None:
    def apply() -> None:
        if not pending.future.done():
            pending.future.set_exception(exc)

    # A closed loop (server shutting down) has nobody waiting for the answer.
    with contextlib.suppress(RuntimeError):
        pending.loop.call_soon_threadsafe(apply)


# Ingest and dedup rates (`/metrics`): counted once the batch has committed.
MESSAGES = Counter("heron_ingest_messages_total", "Messages stored (one per radio frame).", registry=REGISTRY)
RECEPTIONS = Counter(
    "heron_ingest_receptions_total",
    "Receptions by what became of them: new (of a message made in the same batch), joined (an "
    "earlier message, within its dedup window), late (after it), duplicate (a repeat, dropped), "
    "undelivered (unknown or tokenless device).",
    ["outcome"],
    registry=REGISTRY,
)


def _count(result: StoreResult) -> None:
    MESSAGES.inc(len(result.new))
    duplicates = result.duplicates
    new = result.frames - result.joined - result.late - duplicates - result.undelivered
    for outcome, n in (
        ("new", new),
        ("joined", result.joined),
        ("late", result.late),
        ("duplicate", duplicates),
        ("undelivered", result.undelivered),
    ):
        if n:
            RECEPTIONS.labels(outcome).inc(n)
