"""The processes `heron serve` starts beside its API (docs/ARCHITECTURE.md, "Processes"): each
is `heron <command>` watching a pipe whose other end only the server holds. When the server
exits, however it exits (kill -9 included), the pipe closes and the child stops.

The server supervises them (`Supervisor`, a thread): a child that dies is restarted after a
backoff, and the children's state is kept in a small file that every API process reads for
/api/ready and /metrics (with `--workers N` the API processes are not the supervisor's)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("heron.runtime.processes")

STABLE_RUN_SECONDS = 30.0  # a child that ran this long starts its backoff again from the first
START_TIMEOUT_SECONDS = 60.0  # a child not ready this long after its start is killed and restarted


class ChildProcess:
    """`heron <args> --parent-fd N`, its stdout and stderr the server's."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "heron.cli", *args, "--parent-fd", str(read_end)],
                pass_fds=(read_end,),
                env=env,
            )
        finally:
            os.close(read_end)
        self._closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._closed:
            self._closed = True
            os.close(self._write_end)


def watch_parent(fd: int, stop: Callable[[], object]) -> None:
    """Block until the parent's end of the pipe closes, then call `stop` (run in a thread)."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    stop()


def exit_reason(returncode: int) -> str:
    """`exit code 1`, or `signal SIGKILL` for a child killed by a signal."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


# -- supervision --------------------------------------------------------------------------------
@dataclass
class Supervised:
    """A child the supervisor keeps running: `name` is its command (the `child` label in
    /metrics); `spawn` starts it, `ready` says when it serves (for the uplink writer: its
    socket exists)."""

    name: str
    spawn: Callable[[], ChildProcess]
    ready: Callable[[ChildProcess], bool] = lambda _child: True
    child: ChildProcess | None = None
    up: bool = False
    restarts: int = 0
    deaths_in_a_row: int = 0
    started_at: float = 0.0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Starts the children, then restarts any that dies: after `backoff` seconds, doubled at
    each death in a row up to `backoff_max`. Every change is written to `status_path`
    atomically (`read_status` reads it)."""

    children: list[Supervised]
    status_path: Path
    backoff: float = 0.5
    backoff_max: float = 5.0
    poll: float = 0.1
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start every child, in order, each once it is ready (raises if one does not start)."""
        self.status_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sup in self.children:
            sup.child = sup.spawn()
            sup.started_at = time.monotonic()
            deadline = sup.started_at + timeout
            while not sup.ready(sup.child):
                if not sup.child.running() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the {sup.name} process did not start")
                time.sleep(0.02)
            sup.up = True
        self._write()
        self._thread = threading.Thread(target=self._run, name="heron-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising, then stop the children in reverse order (the uplink writer, first
        started, last: it stores what is queued)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sup in reversed(self.children):
            if sup.child is not None:
                sup.child.stop()
                sup.child, sup.up = None, False

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            for sup in self.children:
                try:
                    self._check(sup)
                except Exception:  # never let the supervisor die: log and look again
                    log.exception("child.supervision_error", extra={"child": sup.name})

    def _check(self, sup: Supervised) -> None:
        now = time.monotonic()
        if sup.child is not None:
            code = sup.child.proc.poll()
            if code is None and not sup.up:
                if sup.ready(sup.child):
                    sup.up = True
                    self._write()
                    took = round(now - sup.started_at, 1)
                    log.info("child.up", extra={"child": sup.name, "pid": sup.child.pid, "start_seconds": took})
                elif now - sup.started_at > START_TIMEOUT_SECONDS:
                    log.error("child.start_timeout", extra={"child": sup.name, "pid": sup.child.pid})
                    sup.child.proc.kill()  # seen dead at the next look
            if code is None:
                return
            ran = now - sup.started_at
            sup.deaths_in_a_row = 1 if ran >= STABLE_RUN_SECONDS else sup.deaths_in_a_row + 1
            delay = min(self.backoff * 2 ** (sup.deaths_in_a_row - 1), self.backoff_max)
            # Asked to stop (SIGTERM, SIGINT: typically the whole server stopping) is no crash.
            asked = code == 0 or -code in (signal.SIGTERM, signal.SIGINT)
            log.log(
                logging.WARNING if asked else logging.ERROR,
                "child.died",
                extra={
                    "child": sup.name,
                    "pid": sup.child.pid,
                    "reason": exit_reason(code),
                    "ran_seconds": round(ran, 1),
                    "restart_in_seconds": delay,
                },
            )
            sup.child.stop()  # closes its pipe
            sup.child, sup.up, sup.restart_at = None, False, now + delay
            self._write()
        elif sup.restart_at is not None and now >= sup.restart_at and not self._stop.is_set():
            sup.restarts += 1
            sup.started_at = now
            try:
                sup.child = sup.spawn()
            except Exception:
                log.exception("child.restart_failed", extra={"child": sup.name})
                sup.deaths_in_a_row += 1
                sup.restart_at = now + min(self.backoff * 2 ** (sup.deaths_in_a_row - 1), self.backoff_max)
                self._write()
                return
            sup.restart_at = None
            log.warning("child.restarted", extra={"child": sup.name, "pid": sup.child.pid, "restarts": sup.restarts})
            self._write()

    def _write(self) -> None:
        state = {
            "supervisor": os.getpid(),
            "children": {
                sup.name: {"up": sup.up, "pid": sup.child.pid if sup.child else None, "restarts": sup.restarts}
                for sup in self.children
            },
        }
        tmp = self.status_path.with_name(f".{self.status_path.name}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.status_path)  # readers see the old state or the new, never half


@dataclass(frozen=True)
class ChildState:
    up: bool
    restarts: int


def read_status(path: Path) -> dict[str, ChildState] | None:
    """The children's state as the supervisor last wrote it; None when there is no status or
    its supervisor is gone (its children stop with it)."""
    try:
        state = json.loads(path.read_text())
        supervisor = int(state["supervisor"])
        children = {
            name: ChildState(bool(child["up"]), int(child["restarts"])) for name, child in state["children"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if supervisor != os.getpid():
        try:
            os.kill(supervisor, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it exists
    return children


def remove_status(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def tune_collector() -> None:
    """Garbage-collector settings for a server process (the API's, the uplink writer's, the
    worker's), called once it is built. A request or job batch allocates tens of
    thousands of short-lived, acyclic dicts and tuples (10,000 parsed rows); with the default
    700-allocation threshold the collector ran dozens of times per batch, rescanning everything
    alive. Objects built at startup (modules, the app, SQLAlchemy's mappers) are frozen out of
    its scans; young garbage is collected every 20,000 allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
