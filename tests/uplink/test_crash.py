"""`kill -9` right after frames were acknowledged: every acknowledged frame is in the database
with its outbox rows after the crash, and a restarted server delivers them all (real `heron
serve` processes, a real receiver on 127.0.0.1, both databases)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from heron.db.engine import Database
from heron.delivery import callbacks
from heron.delivery.models import DONE, Delivery
from heron.keys import Keyring
from heron.messages.models import Message
from heron.network.sigfox import stations
from heron.registry import contracts, device_types, devices
from heron.tenancy.access import SYSTEM
from tests.conftest import TEST_KEK, Tenants
from tests.delivery.test_outbox import Receiver, receiver

__all__ = ["receiver"]

HERON = Path(sys.executable).with_name("heron")
FRAMES, PER_REQUEST = 200, 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(database_url: str, data_dir: Path, **extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env |= {
        "HERON_DATABASE_URL": database_url,
        "HERON_DATA_DIR": str(data_dir),
        "HERON_KEK": TEST_KEK,
        "HERON_HTTP_PORT": str(port),
        "HERON_CALLBACK_ALLOW_CIDRS": "127.0.0.0/8",
        "HERON_ACCESS_LOG": "false",
        "HERON_LOG_LEVEL": "WARNING",
        "HERON_DEDUP_WINDOW_SECONDS": "0.2",
    } | extra
    proc = subprocess.Popen(
        [str(HERON), "serve"], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "heron serve did not start"
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _counts(db: Database) -> tuple[int, int, int]:
    with db.read() as s:
        messages = s.scalar(select(func.count()).select_from(Message)) or 0
        owed = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.message_id.is_not(None))) or 0
        done = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == DONE)) or 0
    return messages, owed, done


@pytest.mark.slow
def test_kill_9_after_acknowledged_frames_loses_none_and_delivers_them_after_restart(
    db: Database, database_url: str, tenants: Tenants, receiver: Receiver, tmp_path: Path
) -> None:
    with db.write() as s:
        plan = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Plan", max_tokens=10)
        dt = device_types.create(
            s,
            SYSTEM,
            group_id=tenants.customer_a,
            network="SIGFOX",
            fields=device_types.DeviceTypeFields(name="Meters", contract_id=plan.contract.id),
        )
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier="1001",
            pac="0123456789ABCDEF",
            device_type_id=dt.device_type.id,
            fields=devices.DeviceFields(name="Meter"),
        )
        station, secret = stations.create(
            s, SYSTEM, group_id=tenants.operator, identifier="1E6AB", fields=stations.StationFields(name="North")
        )
        callbacks.create(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            dt.device_type.id,
            callbacks.CallbackFields(
                channel="URL",
                callback_type=0,
                callback_subtype=2,
                enabled=True,
                url=receiver.url + "/hook?seq={seqNumber}",
                http_method="GET",
            ),
        )
    auth = {"authorization": "Basic " + base64.b64encode(f"{station.station.identifier}:{secret}".encode()).decode()}
    # The first process stores and acknowledges but delivers nothing before it is killed.
    with serve(database_url, tmp_path / "var", HERON_RUN_DELIVERIES="false") as (base, proc):
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            for start in range(0, FRAMES, PER_REQUEST):
                body = {
                    "receptions": [{"device": "1001", "seqNumber": seq} for seq in range(start, start + PER_REQUEST)]
                }
                assert http.post("/ingest/sigfox", json=body).status_code == 200
        os.killpg(proc.pid, signal.SIGKILL)  # right after the last acknowledgement
        proc.wait(timeout=30)

    messages, owed, _done = _counts(db)
    assert (messages, owed) == (FRAMES, FRAMES)

    with serve(database_url, tmp_path / "var"):
        deadline = time.monotonic() + 90
        while _counts(db)[2] < FRAMES and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _counts(db) == (FRAMES, FRAMES, FRAMES)
    assert sorted(r["path"] for r in receiver.requests) == sorted(f"/hook?seq={seq}" for seq in range(FRAMES))
