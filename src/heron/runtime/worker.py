"""`heron worker`: the delivery worker and the downlink decider in a process of their own.

`heron serve` starts one beside its API process (unless HERON_DELIVERY_PROCESS=false), at a
lower CPU priority: sending callbacks costs as much interpreter time per message as storing
it, and in the API process it took the interpreter lock from the ingest (measured, docs/
ARCHITECTURE.md "Processes"). Stations are answered first; the outbox absorbs a burst the
worker cannot keep up with, and it catches up after. A scaled-out deployment runs
`heron worker` wherever it likes: the outbox's leases let any number of them share the work.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping

from heron.bootstrap import prepare
from heron.config import Settings
from heron.runtime.context import build_context
from heron.runtime.processes import ChildProcess, Supervised, tune_collector, watch_parent

log = logging.getLogger("heron.runtime.worker")

NICENESS = 10  # below the API and uplink processes: stations are answered first


def supervised(env: Mapping[str, str] | None = None) -> Supervised:
    """`heron worker` as a child `heron serve` supervises (ready once started: it serves no
    one directly; what it owes waits in the outbox while it is down)."""
    return Supervised("worker", lambda: ChildProcess("worker", "--nice", str(NICENESS), env=env))


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
        threading.Thread(
            target=watch_parent, args=(parent_fd, stop.set), name="heron-parent-watch", daemon=True
        ).start()
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
