"""The UDP form of the base-station ingest (heron.network.sigfox.ingest_udp), end to end through a real
UDP socket on 127.0.0.1 against the app's listener, on both databases: replies after the
commit, dedup across stations, the HTTP form's refusals (nothing stored), the reply never
larger than an unauthenticated datagram, the metrics, and `heron serve` (two API processes
bound to the port, the uplink writer process)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.config import Settings
from heron.db.engine import Database
from heron.messages.models import Message, Reception
from heron.network.sigfox.ingest_udp import MAX_DATAGRAM
from tests.api.test_access_matrix import db_snapshot
from tests.conftest import Tenants, make_settings
from tests.network.sigfox.test_ingest import Radio, Station, frame, radio
from tests.uplink.test_crash import serve

__all__ = ["radio"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ingest_udp_port": _free_udp_port(), "ingest_udp_host": "127.0.0.1"})


@pytest.fixture
def station_socket(client: TestClient) -> Iterator[socket.socket]:
    """A station's socket, connected to the app's UDP listener."""
    address = client.app.state.ingest_udp.address  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.connect(address)
        yield s


def datagram(station: Station, *receptions: dict[str, Any], request_id: int = 7) -> bytes:
    return orjson.dumps(
        {"station": station.id, "secret": station.secret, "id": request_id, "receptions": list(receptions)}
    )


def exchange(sock: socket.socket, raw: bytes) -> dict[str, Any]:
    sock.send(raw)
    reply: dict[str, Any] = orjson.loads(sock.recv(65536))
    return reply


def counts(db: Database) -> tuple[int, int]:
    with db.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Message)) or 0,
            s.scalar(select(func.count()).select_from(Reception)) or 0,
        )


def metric(client: TestClient, outcome: str) -> float:
    """One sample of /metrics (0 when absent); metrics are per process, so tests compare deltas."""
    prefix = f'heron_ingest_udp_datagrams_total{{outcome="{outcome}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_the_udp_ingest_is_off_unless_a_port_is_set(tmp_path: Path) -> None:
    assert make_settings(tmp_path, "sqlite://").ingest_udp_port == 0


def test_a_datagram_is_answered_once_its_receptions_are_committed(
    client: TestClient, db: Database, radio: Radio, station_socket: socket.socket
) -> None:
    accepted_before = metric(client, "accepted")
    reply = exchange(station_socket, datagram(radio.stations[0], frame(), frame("1002", seq=3), request_id=41))
    assert reply == {"id": 41, "accepted": 2}
    assert counts(db) == (2, 2)  # committed before the reply was sent
    assert metric(client, "accepted") == accepted_before + 1


def test_datagrams_of_three_stations_for_one_frame_make_one_message(
    client: TestClient, db: Database, radio: Radio, station_socket: socket.socket
) -> None:
    for n, station in enumerate(radio.stations):
        assert exchange(station_socket, datagram(station, frame(), request_id=n)) == {"id": n, "accepted": 1}
    assert counts(db) == (1, 3)


def test_a_datagram_sent_again_after_a_lost_reply_is_a_duplicate(
    db: Database, radio: Radio, station_socket: socket.socket
) -> None:
    raw = datagram(radio.stations[0], frame())
    assert exchange(station_socket, raw) == {"id": 7, "accepted": 1}
    assert exchange(station_socket, raw) == {"id": 7, "accepted": 1}
    assert counts(db) == (1, 1)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"data": "ZZ"}, "receptions[1].data"),
        ({"data": "00" * 13}, "receptions[1].data"),
        ({"seqNumber": -1}, "receptions[1].seqNumber"),
        ({"device": "XYZ"}, "receptions[1].device"),
    ],
)
def test_a_malformed_reception_refuses_the_whole_datagram_naming_it(
    client: TestClient,
    db: Database,
    radio: Radio,
    station_socket: socket.socket,
    bad: dict[str, Any],
    field: str,
) -> None:
    before, invalid_before = db_snapshot(db), metric(client, "invalid")
    reply = exchange(station_socket, datagram(radio.stations[0], frame(), frame(seq=8) | bad))
    assert reply["id"] == 7 and reply["status"] == 400, reply
    assert [e["field"] for e in reply["errors"]] == [field] and reply["message"].startswith(field), reply
    assert db_snapshot(db) == before
    assert metric(client, "invalid") == invalid_before + 1


def test_a_datagram_that_is_not_json_is_refused_naming_the_body(
    db: Database, radio: Radio, station_socket: socket.socket
) -> None:
    before = db_snapshot(db)
    cut_short = datagram(radio.stations[0], frame(), frame(seq=8))[:-1]
    reply = exchange(station_socket, cut_short)
    assert reply == {
        "id": None,
        "status": 400,
        "message": "body: malformed JSON",
        "errors": [{"type": "body", "field": "body", "message": "malformed JSON"}],
    }
    assert db_snapshot(db) == before


def test_a_datagram_without_its_credential_is_refused_naming_the_field(
    radio: Radio, station_socket: socket.socket
) -> None:
    raw = orjson.dumps({"station": radio.stations[0].id, "id": 3, "receptions": [frame()]})
    reply = exchange(station_socket, raw)
    assert reply["id"] == 3 and reply["status"] == 400
    assert [e["field"] for e in reply["errors"]] == ["secret"]


@pytest.mark.parametrize("credential", [("1E6AB", "wrong"), ("FFFF", "x"), ("not hex", "x")])
def test_a_wrong_station_credential_is_refused_with_401_and_changes_nothing(
    client: TestClient, db: Database, radio: Radio, station_socket: socket.socket, credential: tuple[str, str]
) -> None:
    before, refused_before = db_snapshot(db), metric(client, "unauthenticated")
    reply = exchange(station_socket, datagram(Station(*credential), frame(), request_id=12))
    assert reply == {"id": 12, "status": 401}
    assert db_snapshot(db) == before
    assert metric(client, "unauthenticated") == refused_before + 1


def test_a_renewed_secret_is_refused_although_the_old_one_was_cached(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, station_socket: socket.socket
) -> None:
    north = radio.stations[0]
    assert exchange(station_socket, datagram(north, frame())) == {"id": 7, "accepted": 1}  # now cached
    r = client.put(f"/api/v2/base-stations/{north.id}/renew-credential", headers=tenants.root_admin.headers)
    assert r.status_code == 200, r.text
    before = counts(db)
    assert exchange(station_socket, datagram(north, frame(seq=8))) == {"id": 7, "status": 401}
    assert counts(db) == before
    renewed = Station(north.id, r.json()["secret"])
    assert exchange(station_socket, datagram(renewed, frame(seq=8))) == {"id": 7, "accepted": 1}


def test_an_oversized_datagram_is_refused(db: Database, radio: Radio, station_socket: socket.socket) -> None:
    before = db_snapshot(db)
    raw = datagram(radio.stations[0], *(frame(seq=n) for n in range(400)))
    assert MAX_DATAGRAM < len(raw) < 65_000
    reply = exchange(station_socket, raw)
    assert reply["id"] == 7 and reply["status"] == 400
    assert reply["errors"][0]["field"] == "body" and str(MAX_DATAGRAM) in reply["message"]
    assert db_snapshot(db) == before


def test_a_refusal_is_never_larger_than_the_datagram_it_answers(station_socket: socket.socket) -> None:
    garbage = b"certainly not a JSON request"
    reply = station_socket.send(garbage) and station_socket.recv(65536)
    assert reply == b'{"id":null,"status":400}' and len(reply) <= len(garbage)


@pytest.mark.slow
def test_heron_serve_with_two_api_processes_stores_datagrams_through_the_uplink_writer(
    db: Database, database_url: str, radio: Radio, tmp_path: Path
) -> None:
    port = _free_udp_port()
    with serve(database_url, tmp_path / "var", HERON_INGEST_UDP_PORT=str(port), HERON_WORKERS="2"):
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in radio.stations]  # one per station
        try:
            for sock in sockets:
                sock.settimeout(30)
                sock.connect(("127.0.0.1", port))
            for seq in range(10):
                for n, (station, sock) in enumerate(zip(radio.stations, sockets, strict=True)):
                    assert exchange(sock, datagram(station, frame(seq=seq), request_id=seq)) == {
                        "id": seq,
                        "accepted": 1,
                    }
                    assert counts(db)[1] == seq * 3 + n + 1  # committed when answered
        finally:
            for sock in sockets:
                sock.close()
    assert counts(db) == (10, 30)
