"""The uplink writer in a process of its own (`heron uplink-writer`), and the client the API
processes store through (`RemoteUplinks`, the same `store()` as `heron.uplink.writer.UplinkWriter`).

Why: the writer's transactions and the HTTP handling of the ingest each take about half of a
core at the target rate, and in one process they shared one interpreter lock (measured in
docs/ARCHITECTURE.md, "Processes"). `heron serve` starts the writer first, then the API
processes, which connect to it over a Unix socket in the data directory (mode 0600: only the
server's user). What crosses it: a request's validated frames, and whether and how they were
stored. A 2xx to a station still means its frames are committed: the API answers when the
writer has replied, and the writer replies after the commit.

Protocol: each message is a 4-byte big-endian length and a pickle (both ends are this code,
run by one user): `(request id, frames, network, recheck)` to the writer; `(request id, True,
None)` once committed or `(request id, False, exception)` back, in any order. A lost connection fails
the requests waiting on it (the stations retry); the next request connects again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.base import utcnow
from heron.errors import Unavailable
from heron.radio import Network
from heron.runtime.background import run_async
from heron.runtime.processes import ChildProcess, Supervised, tune_collector, watch_parent
from heron.uplink.store import HeardFrame
from heron.uplink.writer import Recheck, UplinkWriter

log = logging.getLogger("heron.uplinks")

_HEADER = 4


class WriterUnavailable(Unavailable):
    """The uplink writer process could not be reached, or the connection broke mid-request:
    503, nothing of the request stored (or, if the break came after the commit, stored and
    stored again harmlessly when the station retries: a repeated reception is a duplicate)."""


SOCKET_PATH_MAX = 100  # bytes; a Unix socket's path may not be longer than 107 on Linux


def socket_path(settings: Settings) -> Path:
    """`<data dir>/run/uplinks.sock`; for a data directory too deep for a socket path, a
    directory of the temporary one named after it (made 0700, like `run/`, when served)."""
    path = settings.data_dir.resolve() / "run" / "uplinks.sock"
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    name = hashlib.sha256(os.fsencode(settings.data_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"heron-{name}" / "uplinks.sock"


async def _read(reader: asyncio.StreamReader) -> Any:
    size = int.from_bytes(await reader.readexactly(_HEADER), "big")
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - our own process, our user's socket


def _framed(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEADER, "big") + body


def supervised(settings: Settings, env: Mapping[str, str] | None = None) -> Supervised:
    """`heron uplink-writer` as a child `heron serve` supervises: ready once it listens on its
    socket, and restarted on the same path, so the API processes' clients connect again."""
    path = socket_path(settings)

    def spawn() -> ChildProcess:
        path.unlink(missing_ok=True)  # a dead writer's: ready means the new one listens
        return ChildProcess("uplink-writer", "--socket", str(path), env=env)

    return Supervised("uplink-writer", spawn, lambda _child: path.exists())


# -- the writer's side --------------------------------------------------------------------------
def run(settings: Settings, path: Path, *, parent_fd: int | None = None) -> None:
    """Serve the uplink writer on `path` until SIGTERM, SIGINT or the end of `parent_fd`."""
    prepared = prepare(settings, announce_password=False)
    writer = UplinkWriter(
        prepared.db,
        dedup_window=timedelta(seconds=settings.dedup_window_seconds),
        horizon=timedelta(seconds=settings.dedup_horizon_seconds),
        recent_devices=settings.uplink_recent_devices,
    )
    # Each batch allocates tens of thousands of short-lived objects while the recent index
    # keeps a few hundred thousand alive: with the default thresholds the collector rescanned
    # them many times a second (measured, bench ingest 30 s: 3,000-3,400 -> 3,700-4,250 frames/s).
    tune_collector()
    writer.start()
    try:
        run_async(_serve(writer, path, parent_fd))
    finally:
        writer.stop()  # stores what is queued first
        prepared.db.dispose()


async def _serve(writer: UplinkWriter, path: Path, parent_fd: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if parent_fd is not None:
        threading.Thread(
            target=watch_parent, args=(parent_fd, lambda: loop.call_soon_threadsafe(stop.set)), daemon=True
        ).start()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = path.parent.stat()
    if owner.st_uid != os.getuid() or owner.st_mode & 0o077:  # e.g. made by another user in /tmp
        raise RuntimeError(f"{path.parent} must belong to this user alone (mode 0700)")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await listen(writer, path)
    log.info("uplinks.serving", extra={"socket": str(path)})
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def listen(writer: UplinkWriter, path: Path) -> asyncio.Server:
    """Serve `writer` on a Unix socket at `path`, created 0600 (the server's user only)."""
    old_mask = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(lambda r, w: _connection(writer, r, w), path=str(path))
    finally:
        os.umask(old_mask)


async def _connection(writer: UplinkWriter, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, frames: Sequence[HeardFrame], network: Network, recheck: Recheck | None) -> None:
        reply: tuple[int, bool, Any]
        try:
            await writer.store(frames, network=network, recheck=recheck)
            reply = (request_id, True, None)
        except Exception as exc:  # the caller raises it: Refused, or the store's failure
            reply = (request_id, False, exc)
        try:
            out.write(_framed(reply))
        except Exception:  # an exception that does not pickle: say what it was
            out.write(_framed((request_id, False, RuntimeError(repr(reply[2])))))

    try:
        while True:
            request_id, frames, network, recheck = await _read(reader)
            task = asyncio.create_task(answer(request_id, frames, network, recheck))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # the API process went away, or this writer stops; what it sent is stored all the same
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        out.close()


# -- the API processes' side --------------------------------------------------------------------
class RemoteUplinks:
    """`UplinkWriter.store` through the writer process. One connection per event loop (a
    process has one), shared by its requests."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow) -> None:
        self.path, self.clock = path, clock
        self._ids = itertools.count(1)
        self._conn: tuple[asyncio.StreamWriter, dict[int, asyncio.Future[Any]]] | None = None
        self._connecting: asyncio.Lock | None = None

    def start(self) -> None:
        pass  # connects on first use

    def stop(self) -> None:
        if self._conn is not None:
            self._conn[0].close()
            self._conn = None

    async def store(self, frames: Sequence[HeardFrame], *, network: Network, recheck: Recheck | None = None) -> None:
        out, waiting = await self._connection()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting[request_id] = future
        try:
            out.write(_framed((request_id, list(frames), network, recheck)))
        except (RuntimeError, OSError) as exc:  # uvloop raises on a transport closed under us
            waiting.pop(request_id, None)
            raise WriterUnavailable(f"the connection to the uplink writer broke: {exc}") from exc
        ok, error = await future
        if not ok:
            raise error

    async def _connection(self) -> tuple[asyncio.StreamWriter, dict[int, asyncio.Future[Any]]]:
        if self._conn is not None and self._conn[0].is_closing():
            # Closed (the writer died, say, and was restarted) before its reader saw the end:
            # connect again rather than fail this request. The reader fails what waits on it.
            self._conn = None
        if self._conn is not None:
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None:
                try:
                    reader, out = await asyncio.open_unix_connection(str(self.path))
                except OSError as exc:
                    raise WriterUnavailable(f"the uplink writer is not reachable at {self.path}: {exc}") from exc
                waiting: dict[int, asyncio.Future[Any]] = {}
                self._conn = (out, waiting)
                asyncio.get_running_loop().create_task(self._replies(reader, out, waiting))
            return self._conn

    async def _replies(
        self, reader: asyncio.StreamReader, out: asyncio.StreamWriter, waiting: dict[int, asyncio.Future[Any]]
    ) -> None:
        try:
            while True:
                request_id, ok, value = await _read(reader)
                future = waiting.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result((ok, value))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if self._conn is not None and self._conn[0] is out:
                self._conn = None
            out.close()
            for future in waiting.values():
                if not future.done():
                    future.set_exception(WriterUnavailable("the connection to the uplink writer broke"))
            waiting.clear()
