"""The processes `heron serve` starts beside its API (docs/ARCHITECTURE.md, "Processes"): each
is `heron <command>` watching a pipe whose other end only the server holds. When the server
exits, however it exits (kill -9 included), the pipe closes and the child stops."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


class ChildProcess:
    """`heron <args> --parent-fd N`, its stdout and stderr the server's."""

    def __init__(self, *args: str) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "heron.cli", *args, "--parent-fd", str(read_end)], pass_fds=(read_end,)
            )
        finally:
            os.close(read_end)

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
        os.close(self._write_end)


def watch_parent(fd: int, stop: Callable[[], object]) -> None:
    """Block until the parent's end of the pipe closes, then call `stop` (run in a thread)."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    stop()
