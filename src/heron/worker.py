"""`heron worker`: the delivery worker and the downlink decider in a process of their own.

`heron serve` starts one beside its API process (unless HERON_DELIVERY_PROCESS=false), at a
lower CPU priority: sending callbacks costs as much interpreter time per message as storing
it, and in the API process it took the interpreter lock from the ingest (measured, docs/
ARCHITECTURE.md "Processes"). Stations are answered first; the outbox absorbs a burst the
worker cannot keep up with, and it catches up after. A scaled-out deployment runs
`heron worker` wherever it likes: the outbox's leases let any number of them share the work.

A worker started by `heron serve` watches a pipe whose other end only the server holds: when
the server exits, however it exits (kill -9 included), the pipe closes and the worker stops."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from heron.api.app import build_context, tune_collector
from heron.bootstrap import prepare
from heron.config import Settings

log = logging.getLogger("heron.worker")

NICENESS = 5  # below the API process: the ingest's answers to stations come first


def run(settings: Settings, *, parent_fd: int | None = None, niceness: int = 0) -> None:
    """Run the delivery worker and downlink decider until SIGTERM, SIGINT or, with `parent_fd`,
    the end of that pipe (the server that started this process is gone)."""
    if niceness:
        os.nice(niceness)
    ctx = build_context(settings, prepare(settings, announce_password=False))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if parent_fd is not None:
        threading.Thread(target=_watch_parent, args=(parent_fd, stop), name="heron-parent-watch", daemon=True).start()
    tune_collector()
    ctx.deliveries.start()
    ctx.downlinks.start()
    log.info("worker.started", extra={"pid": os.getpid()})
    try:
        while not stop.wait(1.0):
            pass
    finally:
        ctx.downlinks.stop()
        ctx.deliveries.stop()
        ctx.db.dispose()
        log.info("worker.stopped", extra={"pid": os.getpid()})


def _watch_parent(fd: int, stop: threading.Event) -> None:
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    stop.set()


class WorkerProcess:
    """The worker `heron serve` starts and stops (its stdout and stderr are the server's)."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "heron.cli", "worker", "--parent-fd", str(read_end), "--nice", str(NICENESS)],
                pass_fds=(read_end,),
            )
        finally:
            os.close(read_end)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self._write_end)
