"""`heron serve` supervises its children: kill -9 of the uplink writer or of the worker under
station load, and the child is restarted (with backoff, counted in /metrics), /api/ready names
it while it is down, the ingest answers again, and every acknowledged frame is stored once
(real `heron serve` processes, both databases). The helpers serve tests/runtime/test_multi_node.py too."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.api.app import create_app
from heron.config import Settings
from heron.db.engine import Database
from heron.keys import Keyring
from heron.messages.models import Message
from heron.network.sigfox import stations
from heron.network.sigfox.radio import NETWORK as SIGFOX
from heron.registry import devices
from heron.registry.models import Device
from heron.runtime.background import run_async
from heron.runtime.context import AppContext
from heron.runtime.processes import ChildProcess, Supervised, Supervisor
from heron.stations.models import BaseStation
from heron.tenancy.access import SYSTEM
from heron.uplink.process import RemoteUplinks, listen
from heron.uplink.store import HeardFrame
from heron.uplink.writer import UplinkWriter
from tests.conftest import TEST_KEK, Tenants
from tests.support.served import sigfox_type

HERON = Path(sys.executable).with_name("heron")
DEADLINE = 30.0  # seconds: generous, for a slow, loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """A `heron serve` process group (the server and its children)."""

    base: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(HERON), "serve"], env=self.env, start_new_session=True, stdout=log, stderr=log
            )

    def wait_started(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(self.base + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, f"heron serve exited: {self.tail()}"
            assert time.monotonic() < deadline, f"heron serve did not start: {self.tail()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 of the whole process group: the server and its children."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        with_group_gone(self.proc.pid)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def child(self, kind: str) -> int:
        """The pid of this server's child `heron <kind>` (uplink-writer or worker)."""
        found = _kinds(self, kind)
        assert len(found) == 1, found
        return found[0]


def _kinds(node: Node, kind: str) -> list[int]:
    assert node.proc is not None
    return [pid for pid, cmd in children_of(node.proc.pid).items() if f" {kind} " in f"{cmd} "]


def with_group_gone(pgid: int) -> None:
    """Kill what is left of a process group (a child that outlived its server)."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def node_env(database_url: str, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    return (
        env
        | {
            "HERON_DATABASE_URL": database_url,
            "HERON_DATA_DIR": str(data_dir),
            "HERON_KEK": TEST_KEK,
            "HERON_HTTP_PORT": str(port),
            "HERON_CALLBACK_ALLOW_CIDRS": "127.0.0.0/8",
            "HERON_ACCESS_LOG": "false",
            "HERON_LOG_LEVEL": "INFO",
            "HERON_DEDUP_WINDOW_SECONDS": "0.2",
        }
        | extra
    )


@contextmanager
def nodes(*made: Node) -> Iterator[None]:
    """Stop every node, whatever happens."""
    try:
        yield
    finally:
        for node in made:
            node.stop()


def children_of(pid: int) -> dict[int, str]:
    """Processes whose parent is `pid`, with their command lines (zombies left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


@dataclass
class Radio:
    device_type_id: int
    devices: list[str]
    auths: list[dict[str, str]]  # one per station


def make_radio(db: Database, tenants: Tenants, *, devices_count: int = 4, stations_count: int = 2) -> Radio:
    """Stations of the operator; devices of Customer A (holding tokens)."""
    keyring = Keyring.parse(TEST_KEK)
    idents = [f"{0x5100 + i:X}" for i in range(devices_count)]
    auths = []
    with db.write() as s:
        dt = sigfox_type(s, tenants.customer_a, "Meters", max_tokens=1000)
        for ident in idents:
            devices.create_sigfox(
                s,
                SYSTEM,
                keyring,
                identifier=ident,
                pac="0123456789ABCDEF",
                device_type_id=dt.device_type.id,
                fields=devices.DeviceFields(name=f"Meter {ident}"),
            )
        for i in range(stations_count):
            view, secret = stations.create(
                s,
                SYSTEM,
                group_id=tenants.operator,
                identifier=f"{0x1E600 + i:X}",
                fields=stations.StationFields(name=f"Station {i}"),
            )
            token = base64.b64encode(f"{view.station.identifier}:{secret}".encode()).decode()
            auths.append({"authorization": "Basic " + token})
    return Radio(dt.device_type.id, idents, auths)


@dataclass
class Load:
    """Stations posting under load: a thread per device, one frame per request, a frame sent
    again until it is acknowledged (as a station does), then the next sequence number. Each
    request goes to the next of `bases` in turn, thread i starting at node i (what a
    round-robin load balancer does; a node that does not answer is just skipped)."""

    radio: Radio
    bases: list[str]
    acked: dict[str, set[int]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    acked_by: dict[str, int] = field(default_factory=dict)  # per node
    last_ack: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i, device in enumerate(self.radio.devices):
            self.acked[device] = set()
            thread = threading.Thread(target=self._post, args=(i, device), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _post(self, i: int, device: str) -> None:
        auth = self.radio.auths[i % len(self.radio.auths)]
        targets = itertools.cycle(self.bases[i % len(self.bases) :] + self.bases[: i % len(self.bases)])
        seq = 0
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set() and seq < 4096:
                base = next(targets)
                body = {"receptions": [{"device": device, "seqNumber": seq, "data": "0a0b", "rssi": -120.0}]}
                try:
                    r = http.post(base + "/ingest/sigfox", json=body, headers=auth)
                except httpx.TransportError:
                    self.stop.wait(0.05)
                    continue
                with self.lock:
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        self.acked[device].add(seq)
                        self.acked_by[base] = self.acked_by.get(base, 0) + 1
                        self.last_ack = time.monotonic()
                if r.status_code == 200:
                    seq += 1
                else:
                    self.stop.wait(0.05)
                self.stop.wait(0.04)  # at most 25 frames/s: 4096 sequence numbers last minutes

    def acked_on(self, base: str) -> int:
        with self.lock:
            return self.acked_by.get(base, 0)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def total(self) -> int:
        with self.lock:
            return sum(len(seqs) for seqs in self.acked.values())

    def answered_again(self, after: float) -> bool:
        with self.lock:
            return self.last_ack > after


def wait_until(condition: Callable[[], object], what: str, deadline: float = DEADLINE, every: float = 0.05) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"not within {deadline} s: {what}"
        time.sleep(every)


def ready(base: str) -> tuple[int, dict[str, str]]:
    try:
        r = httpx.get(base + "/api/ready", timeout=30)
    except httpx.TransportError:
        return 0, {}
    return r.status_code, r.json()


def metric(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(base + "/metrics", timeout=30).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def assert_stored_once(db: Database, load: Load) -> None:
    """Every acknowledged frame is a message, and no frame is two."""
    with db.read() as s:
        ids = dict(s.execute(select(Device.id, Device.identifier).where(Device.identifier.in_(load.acked))).all())
        rows = s.execute(
            select(Message.device_id, Message.seq_number, func.count())
            .where(Message.device_id.in_(ids))
            .group_by(Message.device_id, Message.seq_number)
        ).all()
    stored: dict[str, set[int]] = {ident: set() for ident in load.acked}
    for device_id, seq, count in rows:
        assert count == 1, f"frame {ids[device_id]}/{seq} stored {count} times"
        stored[ids[device_id]].add(seq)
    for ident, seqs in load.acked.items():
        assert seqs, f"device {ident}: nothing acknowledged"
        missing = seqs - stored[ident]
        assert not missing, f"device {ident}: acknowledged but not stored: {sorted(missing)[:10]}"


def kill_child_and_see_it_back(node: Node, load: Load, kind: str, key: str) -> None:
    """kill -9 of the child `heron <kind>`; /api/ready names it (`key`) down, then it is back,
    counted, and the ingest answers again."""
    before = metric(node.base, "heron_child_restarts_total", child=kind) or 0.0
    pid = node.child(kind)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    answers: list[tuple[int, dict[str, str]]] = []

    def named_down() -> bool:
        answers.append(ready(node.base))
        return answers[-1][1].get(key) == "down"

    wait_until(named_down, f"/api/ready naming {key} down")
    status, body = answers[-1]
    assert status == 503 and body["status"] == "unavailable", body
    assert body["database"] == "ok" and body["migrations"] == "current", body  # kept
    wait_until(lambda: _kinds(node, kind) not in ([], [pid]), f"a new {kind} process")
    wait_until(lambda: ready(node.base)[0] == 200, f"/api/ready 200 after {kind} restarted")
    wait_until(lambda: load.answered_again(killed_at), f"ingest answered after {kind} was killed")
    assert (metric(node.base, "heron_child_restarts_total", child=kind) or 0.0) == before + 1
    assert metric(node.base, "heron_child_up", child=kind) == 1.0
    acked = load.total()
    wait_until(lambda: load.total() >= acked + 20, f"ingest flowing after {kind} restarted")


@pytest.mark.slow
def test_a_killed_child_is_restarted_ready_names_it_while_down_and_no_acknowledged_frame_is_lost(
    db: Database, database_url: str, tenants: Tenants, tmp_path: Path
) -> None:
    radio = make_radio(db, tenants)
    port = free_port()
    # A long first backoff, so that the window in which the child is down can be seen.
    env = node_env(database_url, tmp_path / "var", port, HERON_CHILD_RESTART_BACKOFF_SECONDS="2")
    node = Node(f"http://127.0.0.1:{port}", env, tmp_path / "serve.log")
    load = Load(radio, [node.base])
    with nodes(node):
        node.start()
        assert ready(node.base)[0] == 200
        load.start()
        try:
            wait_until(lambda: load.total() >= 20, "frames acknowledged before the first kill")
            for kind, key in (("uplink-writer", "uplinkWriter"), ("worker", "worker")):
                try:
                    kill_child_and_see_it_back(node, load, kind, key)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nstatuses {load.statuses}\n{node.tail(60)}") from exc
        finally:
            load.finish()
        assert node.proc is not None and node.proc.poll() is None, node.tail()
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert_stored_once(db, load)
    log = node.log.read_text(errors="replace")
    assert "child.died" in log and "SIGKILL" in log and "child.restarted" in log, node.tail()


def test_a_child_dying_at_once_is_restarted_with_a_doubling_backoff_up_to_its_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = tmp_path / "run" / "children.json"
    # A child that exits at once with an error (an unknown command).
    failing = Supervised("broken", lambda: ChildProcess("no-such-command"))
    supervisor = Supervisor([failing], status, backoff=0.2, backoff_max=0.8, poll=0.02)
    caplog.set_level(logging.WARNING, logger="heron.runtime.processes")
    supervisor.start()
    try:
        # Each death is a Python start (seconds on a loaded machine): a deadline to match.
        wait_until(lambda: len(_deaths(caplog)) >= 5, "five deaths", deadline=120.0)
    finally:
        supervisor.stop()
    delays = [record.restart_in_seconds for record in _deaths(caplog)][:5]  # type: ignore[attr-defined]
    assert delays == [0.2, 0.4, 0.8, 0.8, 0.8]
    assert all(record.reason == "exit code 2" for record in _deaths(caplog))  # type: ignore[attr-defined]
    assert failing.restarts >= 4 and not failing.up


def _deaths(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "child.died"]


def test_ready_names_a_child_that_is_down_and_metrics_count_its_restarts(
    settings: Settings, ctx: AppContext, tmp_path: Path
) -> None:
    """What every API process reads from the supervisor's status file (in-process, both databases)."""
    status = tmp_path / "children.json"
    served = create_app(settings.model_copy(update={"children_status_file": status}), None)
    with TestClient(served) as client:
        status.write_text(
            json.dumps(
                {
                    "supervisor": os.getpid(),
                    "children": {
                        "uplink-writer": {"up": False, "pid": None, "restarts": 3},
                        "worker": {"up": True, "pid": 1, "restarts": 0},
                    },
                }
            )
        )
        r = client.get("/api/ready")
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "database": "ok",
            "migrations": "current",
            "uplinkWriter": "down",
            "worker": "up",
        }
        text = client.get("/metrics").text
        assert 'heron_child_restarts_total{child="uplink-writer"} 3.0' in text
        assert 'heron_child_up{child="uplink-writer"} 0.0' in text
        assert 'heron_child_up{child="worker"} 1.0' in text
        status.write_text(json.dumps({"supervisor": os.getpid(), "children": {"worker": {"up": True, "restarts": 0}}}))
        assert client.get("/api/ready").json()["status"] == "ready"
        # A supervisor that is gone took its children with it; no status at all is no better.
        status.write_text(json.dumps({"supervisor": _dead_pid(), "children": {"worker": {"up": True, "restarts": 0}}}))
        r = client.get("/api/ready")
        assert (r.status_code, r.json()["supervisor"]) == (503, "down")
        status.unlink()
        r = client.get("/api/ready")
        assert (r.status_code, r.json()["supervisor"]) == (503, "down")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_request_after_the_writer_connection_closed_connects_again_instead_of_failing(
    db: Database, tenants: Tenants, tmp_path: Path
) -> None:
    """The API side's client when its connection to the writer has just closed (the writer was
    killed, or the socket broke) and the request comes before the reader saw the end: the
    request connects again (it failed: a 503, or a 500 when uvloop's write raised)."""
    radio = make_radio(db, tenants, devices_count=1, stations_count=1)
    with db.read() as s:
        station_id = s.scalar(select(BaseStation.id))
    assert station_id is not None
    writer = UplinkWriter(db, dedup_window=timedelta(seconds=0.2), horizon=timedelta(seconds=30))
    writer.start()
    path = tmp_path / "uplinks.sock"

    def heard(seq: int) -> HeardFrame:
        return HeardFrame(station_id, radio.devices[0], seq, "DATA", "0a", False, None, -120.0)

    async def scenario() -> None:
        server = await listen(writer, path)
        remote = RemoteUplinks(path)
        await remote.store([heard(1)], network=SIGFOX)
        assert remote._conn is not None
        remote._conn[0].close()  # closed under the client, its reader not yet told
        await remote.store([heard(2)], network=SIGFOX)
        remote.stop()
        server.close()
        await server.wait_closed()

    try:
        run_async(scenario())
    finally:
        writer.stop()
    with db.read() as s:
        assert sorted(s.scalars(select(Message.seq_number))) == [1, 2]
