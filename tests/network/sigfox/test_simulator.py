"""`heron simulate sigfox`, the real CLI as a subprocess, against a real Heron served over HTTP on
a loopback port: it creates the stations, registers the devices through the bulk API, sends
frames, and what the database holds afterwards matches what the CLI says it sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from heron.cli import app
from heron.config import Settings
from heron.db.engine import Database
from heron.messages.models import Message, Reception
from heron.network.sigfox.simulator import SEQ_MODULO, device_ids
from heron.registry.models import Device
from heron.runtime.context import AppContext
from heron.stations.models import BaseStation
from tests.conftest import Tenants
from tests.support.served import sigfox_device_type, uvicorn_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HERON = Path(sys.executable).with_name("heron")
FIRST_SEQ = 4090  # so that every device's numbers wrap during the run


@pytest.fixture
def server(settings: Settings, ctx: AppContext) -> Iterator[str]:
    with uvicorn_in_thread(settings, ctx) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def device_type(db: Database, tenants: Tenants) -> str:
    return sigfox_device_type(db, tenants.customer_a, "Simulated", max_tokens=100)


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(HERON)] if HERON.exists() else [sys.executable, "-m", "heron.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    return subprocess.run([*command, "simulate", "sigfox", *args], env=env, capture_output=True, text=True, timeout=60)


def test_simulated_frames_become_messages_with_their_receptions(
    server: str, db: Database, tenants: Tenants, device_type: str
) -> None:
    done = simulate(
        "--url", server, "--register", "--device-type", device_type, "--group", str(tenants.operator),
        "--api-key", tenants.root_admin.secret, "--devices", "5", "--rate", "25", "--duration", "2",
        "--stations", "3", "--first-seq", str(FIRST_SEQ), "--seed", "7", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["errors"] == 0 and stats["failedFrames"] == 0
    # 25 frames/s for 2 s; on a loaded machine the generator skips what it fell behind on (and
    # says so) rather than bursting, so the pace is checked on what the simulator reports:
    # frames sent plus frames skipped is exactly the rate's 50, never more (no burst), on any
    # machine (a wall-time bound on frames sent failed under load).
    assert stats["frames"] > 0 and stats["frames"] + stats["framesSkipped"] == 50
    assert stats["requests"] > 0 and stats["latencyMs"]["p50"] is not None

    ids = device_ids(0x5100000, 5)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(BaseStation)) == 3
        devices = {d.id: d for d in s.scalars(select(Device).where(Device.identifier.in_(ids)))}
        assert len(devices) == 5 and all(d.token_state == "OK" for d in devices.values())
        messages = list(s.scalars(select(Message).order_by(Message.id)))
        heard: dict[int, list[int]] = defaultdict(list)
        for message_id, station_id in s.execute(select(Reception.message_id, Reception.station_id)):
            heard[message_id].append(station_id)

    # Every frame sent is one message; each holds the receptions of 1 to 3 distinct stations.
    assert len(messages) == stats["frames"]
    assert sum(len(v) for v in heard.values()) == stats["receptions"]
    for m in messages:
        assert 1 <= m.receptions == len(heard[m.id]) == len(set(heard[m.id])) <= 3
        assert m.frame_type in ("DATA", "KEEPALIVE") and len(m.data) <= 24
    assert any(m.receptions == 3 for m in messages) and any(m.receptions == 1 for m in messages)

    # Per device: numbers from FIRST_SEQ up by one, wrapping at 4096, nothing lost.
    by_device: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        by_device[m.device_id].append(m)
    assert set(by_device) == set(devices)
    for device_id, sent in by_device.items():
        assert [m.seq_number for m in sent] == [(FIRST_SEQ + i) % SEQ_MODULO for i in range(len(sent))]
        assert all(m.lost == 0 for m in sent)
        assert devices[device_id].sequence_number == sent[-1].seq_number
    assert max(len(v) for v in by_device.values()) > SEQ_MODULO - FIRST_SEQ  # the wrap happened


def test_refused_requests_make_exit_status_1(server: str, db: Database) -> None:
    done = simulate(
        "--url", server, "--station-secret", "ABC:wrong-secret", "--devices", "2", "--rate", "10",
        "--duration", "0.5", "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    stats = json.loads(done.stdout)
    assert stats["frames"] == 0 and stats["errors"] == stats["requests"] > 0
    assert "HTTP 401" in stats["errorSamples"][0]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--devices", "5", "--rate", "10"],  # neither --station-secret nor --register
        ["--devices", "5", "--rate", "10", "--station-secret", "no-colon"],
        ["--devices", "0", "--rate", "10", "--station-secret", "A:s"],
        ["--devices", "5", "--rate", "0", "--station-secret", "A:s"],
        ["--devices", "5", "--rate", "10", "--register", "--api-key", "k"],  # no --device-type
        ["--devices", "5", "--rate", "10", "--station-secret", "A:s", "--stations", "2"],
        ["--devices", "5", "--rate", "10", "--station-secret", "A:s", "--first-device", "XYZ"],
        ["--devices", "5", "--rate", "10", "--station-secret", "A:s", "--first-device", "FFFFFFFF"],
    ],
)
def test_bad_arguments_exit_2_without_sending(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["simulate", "sigfox", "--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output


def test_the_raw_client_reads_chunked_answers_reconnects_after_close_and_reports_refusals() -> None:
    from heron.network.sigfox.simulator import HttpFailure, _Connection

    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"4\r\n{\"ac\r\na\r\ncepted\":1}\r\n0\r\n\r\n")  # fmt: skip
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = _Connection(f"http://127.0.0.1:{port}/prefix/", 5.0)
        head = conn.head("Basic eDp5")
        for _ in range(2):  # the second on a new connection
            assert await conn.post(head, b"{}") == (200, b'{"accepted":1}')
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpFailure):
            await conn.post(head, b"{}")

    asyncio.run(main())
    assert len(heads) == 2 and heads[0].startswith(b"POST /prefix/ingest/sigfox HTTP/1.1\r\n")
    assert b"Authorization: Basic eDp5\r\n" in heads[0]
