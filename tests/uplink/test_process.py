"""The uplink writer in a process of its own (heron.uplink.process): its socket protocol end to
end (a real writer behind a real Unix socket), the 503 when it cannot be reached, and the
processes `heron serve` starts stopping when the server is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.api.app import create_app
from heron.config import Settings
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.messages.models import Message, Reception
from heron.network.sigfox.radio import NETWORK as SIGFOX
from heron.network.sigfox.stations import StationRecheck
from heron.runtime.context import AppContext
from heron.stations.models import BaseStation
from heron.uplink.process import RemoteUplinks, WriterUnavailable, listen, socket_path
from heron.uplink.store import HeardFrame
from heron.uplink.writer import Refused, UplinkWriter
from tests.network.sigfox.test_ingest import Radio, frame, radio
from tests.uplink.test_crash import serve

__all__ = ["radio"]


def _station_ids(db: Database, radio: Radio) -> list[int]:
    with db.read() as s:
        by_identifier = {ident: sid for ident, sid in s.execute(select(BaseStation.identifier, BaseStation.id))}
    return [by_identifier[st.id] for st in radio.stations]


def _heard(station_id: int, seq: int) -> HeardFrame:
    return HeardFrame(station_id, "1001", seq, "DATA", "0a0b", False, utcnow(), -120.0, 10.0, 868_130_000.0)


def _counts(db: Database) -> tuple[int, int]:
    with db.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Message)) or 0,
            s.scalar(select(func.count()).select_from(Reception)) or 0,
        )


def test_frames_stored_through_the_socket_are_committed_when_store_returns(
    db: Database, radio: Radio, tmp_path: Path
) -> None:
    north, south, _east = _station_ids(db, radio)
    writer = UplinkWriter(db, dedup_window=timedelta(seconds=1), horizon=timedelta(seconds=30))
    writer.start()
    path = tmp_path / "uplinks.sock"

    async def scenario() -> None:
        server = await listen(writer, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the server's user only
        remote = RemoteUplinks(path)
        # Concurrent requests share one connection; each returns once its frames are committed.
        await asyncio.gather(
            remote.store([_heard(north, 1)], network=SIGFOX),
            remote.store([_heard(south, 1), _heard(north, 2)], network=SIGFOX),
        )
        assert _counts(db) == (2, 3)
        # A credential the writer no longer accepts: Refused crosses back, nothing is stored.
        with pytest.raises(Refused):
            await remote.store(
                [_heard(north, 3)], network=SIGFOX, recheck=StationRecheck(radio.stations[0].id, "wrong-secret", north)
            )
        assert _counts(db) == (2, 3)
        await remote.store(
            [_heard(north, 3)],
            network=SIGFOX,
            recheck=StationRecheck(radio.stations[0].id, radio.stations[0].secret, north),
        )
        assert _counts(db) == (3, 4)
        server.close()
        await server.wait_closed()
        remote.stop()
        # The writer gone: the caller gets WriterUnavailable (503), not a hang.
        path.unlink()
        with pytest.raises(WriterUnavailable):
            await asyncio.wait_for(remote.store([_heard(north, 4)], network=SIGFOX), timeout=5)

    try:
        asyncio.run(scenario())
    finally:
        writer.stop()
    assert _counts(db) == (3, 4)


def test_the_ingest_answers_503_when_the_uplink_writer_is_unreachable(
    settings: Settings, ctx: AppContext, radio: Radio, tmp_path: Path
) -> None:
    remote = settings.model_copy(update={"uplink_socket": tmp_path / "nobody-listens.sock"})
    app = create_app(remote)
    assert isinstance(app.state.ctx.uplinks, RemoteUplinks)
    with TestClient(app) as client:
        r = client.post("/ingest/sigfox", json={"receptions": [frame()]}, headers=radio.stations[0].auth)
    assert r.status_code == 503, r.text
    assert "uplink writer" in r.json()["message"]
    assert _counts(ctx.db) == (0, 0)


def _children(pid: int) -> dict[int, str]:
    """Processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_serve_runs_the_uplink_writer_and_worker_which_stop_when_it_is_killed(tmp_path: Path) -> None:
    with serve(f"sqlite:///{tmp_path / 'heron.db'}", tmp_path / "var") as (_base, proc):
        children = _children(proc.pid)
        kinds = sorted(
            "uplink-writer" if "uplink-writer" in c else "worker" if " worker " in c else c for c in children.values()
        )
        assert kinds == ["uplink-writer", "worker"], children
        os.kill(proc.pid, signal.SIGKILL)  # the server alone, not its process group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children), "a child outlived the server"
    assert not (tmp_path / "var" / "run" / "uplinks.sock").exists()  # the writer removed its socket


def test_the_socket_lives_in_the_data_directory_or_a_private_temporary_one_when_that_is_too_deep(
    tmp_path: Path,
) -> None:
    shallow = Settings(data_dir=tmp_path / "var")
    assert socket_path(shallow) == (tmp_path / "var").resolve() / "run" / "uplinks.sock"
    deep = Settings(data_dir=tmp_path / ("d" * 120))
    path = socket_path(deep)
    assert len(os.fsencode(path)) <= 100 and path.name == "uplinks.sock"
    assert path == socket_path(deep)  # the same for every process of that data directory
    assert path != socket_path(Settings(data_dir=tmp_path / ("e" * 120)))
