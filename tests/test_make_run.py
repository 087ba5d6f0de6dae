"""`make run` on a fresh clone: the README's first command starts Heron on SQLite in ./var/heron.db
with migrations applied, and answers /api/health and /api/ready.

The clone is the repository's files as they are in the working tree (tracked and untracked, not
ignored), so the test checks uncommitted work too. Rebuilding a virtualenv would need the network
and minutes, so the clone gets a `.venv` whose bin/ and lib/ are the checkout's and whose stamp
file is the one the Makefile expects; `make -q setup` proves make sees nothing to rebuild."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
PASSWORD_BANNER = "password (shown once):"

pytestmark = pytest.mark.slow

if shutil.which("make") is None or shutil.which("git") is None:  # pragma: no cover - tooling check
    pytest.skip("make and git are needed to test `make run`", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any HERON_* setting or make state leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HERON_") and k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    }
    # The clone's .venv reuses the checkout's interpreter, whose editable install points at the
    # checkout's src/; put the clone's own src/ first so the clone's code is what runs.
    env["PYTHONPATH"] = "src"
    env.update(extra)
    return env


def _copy_working_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if rel.startswith((".venv/", "var/")):
            continue
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _reuse_venv(clone: Path) -> None:
    """Give the clone a .venv made of the checkout's, with the Makefile's stamp in place."""
    real = REPO / ".venv"
    if not (real / "bin" / "heron").exists():
        pytest.skip("no .venv with heron installed in the checkout")
    venv = clone / ".venv"
    venv.mkdir()
    for entry in real.iterdir():
        if not entry.name.startswith(".installed-"):
            (venv / entry.name).symlink_to(entry)
    # Ask make itself for the stamp's name, so the test follows the Makefile's own definition.
    stamp_name = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval=heron-print-stamp: ; @echo $(STAMP)", "heron-print-stamp"],
        cwd=clone,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert stamp_name.startswith(".venv/.installed-"), stamp_name
    stamp = clone / stamp_name
    stamp.touch()
    later = time.time() + 1
    os.utime(stamp, (later, later))  # newer than the copied lock file and pyproject.toml
    question = subprocess.run(["make", "-q", "setup"], cwd=clone, env=_clean_env(), capture_output=True, timeout=30)
    assert question.returncode == 0, "make would rebuild the virtualenv: the stamp does not match the Makefile"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import heron; print(heron.__file__)"],
        cwd=clone,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(clone.resolve() / "src"), f"the clone would run {where}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clone") / "heron"
    root.mkdir()
    _copy_working_tree(root)
    assert not (root / "var").exists()
    _reuse_venv(root)
    return root


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    base: str
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop make and the server it started (one process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _wait_healthy(run: Run) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            out, err = run.output()
            pytest.fail(f"`make run` exited with {run.proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
        try:
            if httpx.get(f"{run.base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    out, err = run.output()
    pytest.fail(f"/api/health did not answer within {START_TIMEOUT:.0f} s\nstdout:\n{out}\nstderr:\n{err}")


@contextmanager
def make_run(clone: Path, logs: Path) -> Iterator[Run]:
    """Start `make run` in the clone on a free port, wait for /api/health; always stop its whole
    process group, whatever happens in the block."""
    port = _free_port()
    logs.mkdir(parents=True)
    stdout, stderr = logs / "stdout", logs / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            ["make", "run"],
            cwd=clone,
            env=_clean_env(HERON_HTTP_PORT=str(port)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        run = Run(proc, f"http://127.0.0.1:{port}", stdout, stderr)
        _wait_healthy(run)
        yield run
    finally:
        _stop(proc)


def _sign_in(base: str, email: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=5) as browser:
        form = browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None, form.text
        return browser.post("/login", data={"email": email, "password": password, "csrf_token": token.group(1)})


def test_make_run_on_fresh_clone_serves_health_and_ready_on_sqlite_in_var(clone: Path, tmp_path: Path) -> None:
    with make_run(clone, tmp_path / "run") as run:
        health = httpx.get(f"{run.base}/api/health", timeout=5)
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"{run.base}/api/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["migrations"] == "current"
        assert (clone / "var" / "heron.db").is_file()
        for key_file in ("kek", "session"):
            assert (clone / "var" / "keys" / key_file).stat().st_mode & 0o777 == 0o600


def test_generated_admin_password_is_printed_on_stderr_at_first_start_only(clone: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "heron"
    shutil.copytree(clone, fresh, symlinks=True, ignore=shutil.ignore_patterns("var"))

    with make_run(fresh, tmp_path / "first") as run:
        out, err = run.output()
        assert err.count(PASSWORD_BANNER) == 1, err
        assert PASSWORD_BANNER not in out
        banner = re.search(r"administrator created: (\S+)\s+password \(shown once\): (\S+)", err)
        assert banner is not None, err
        email, password = banner.groups()
        signed_in = _sign_in(run.base, email, password)
        assert signed_in.status_code == 303, "the printed password does not sign the administrator in"

    with make_run(fresh, tmp_path / "second") as run:
        assert _sign_in(run.base, email, password).status_code == 303
        _stop(run.proc)
        out, err = run.output()
        assert PASSWORD_BANNER not in out + err, "a second start announced an administrator password again"
