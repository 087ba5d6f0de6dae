"""GET /api/v2/devices/export (CSV, streamed by position), GET /api/v2/contract-infos/{id}/devices
and `heron devices export`: columns and their values, escaping, filters, chunked streaming of
thousands of rows, bad input, and no foreign device or root key in any export."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from heron.db.engine import Database
from heron.keys import Keyring
from heron.registry import device_queries, devices
from heron.tenancy.access import SYSTEM
from tests.api.test_bad_input import assert_invalid
from tests.conftest import TEST_KEK, Tenants
from tests.registry.test_device_queries import T0, device_row, insert_devices, make_types

API = "/api/v2"


def iso(when: datetime) -> str:
    """How the export writes a time: ISO 8601 UTC to the millisecond."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def export(client: TestClient, headers: dict[str, str], query: str = "") -> list[dict[str, str]]:
    r = client.get(f"{API}/devices/export?{query}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


@pytest.fixture
def types(db: Database, tenants: Tenants) -> tuple[int, int, int, int, int]:
    return make_types(db, tenants)


def test_default_columns_carry_the_api_values_of_each_device(
    client: TestClient, db: Database, tenants: Tenants, types: tuple[int, int, int, int, int]
) -> None:
    dt_a, dt_site, _dt_b, contract_a, _ = types
    seen = T0 + timedelta(hours=5)
    insert_devices(
        db,
        [
            device_row(
                "1A2B",
                dt_a,
                tenants.customer_a,
                name="Pump 7",
                lifecycle="ACTIVE",
                token_state="OK",
                contract_id=contract_a,
                token_end_at=T0 + timedelta(days=365),
                com_state=1,
                last_seen_at=seen,
            ),
            device_row("2C", dt_site, tenants.site_a, lifecycle="DEACTIVATED", activable=False),
        ],
    )
    r = client.get(f"{API}/devices/export", headers=tenants.a_admin.headers)
    assert r.headers["content-disposition"] == 'attachment; filename="devices.csv"'
    header = r.text.splitlines()[0].split(",")
    assert header == list(device_queries.DEFAULT_COLUMNS)
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert rows["1A2B"] == {
        "id": "1A2B",
        "name": "Pump 7",
        "network": "SIGFOX",
        "lifecycle": "ACTIVE",
        "state": "0",
        "comState": "1",
        "tokenState": "0",
        "tokenEnd": iso(T0 + timedelta(days=365)),
        "deviceTypeId": str(dt_a),
        "deviceTypeName": "Fleet",
        "groupId": str(tenants.customer_a),
        "groupName": "Customer A",
        "contractId": str(contract_a),
        "contractName": "Contract A",
        "lastCom": iso(seen),
        "creationTime": iso(T0),
    }
    assert rows["2C"]["state"] == "3" and rows["2C"]["contractName"] == ""
    assert rows["2C"]["tokenState"] == "1" and rows["2C"]["tokenEnd"] == "" and rows["2C"]["lastCom"] == ""
    # The same devices, the same values as the JSON list.
    listed = {d["id"]: d for d in client.get(f"{API}/devices", headers=tenants.a_admin.headers).json()["data"]}
    for ident, row in rows.items():
        d = listed[ident]
        assert (row["state"], row["comState"], row["lastCom"]) == (
            str(d["state"]),
            str(d["comState"]),
            "" if "lastCom" not in d else iso(datetime.fromtimestamp(d["lastCom"] / 1000, UTC)),
        )


def test_chosen_columns_come_in_the_order_asked_and_text_is_escaped(
    client: TestClient, db: Database, tenants: Tenants, types: tuple[int, int, int, int, int]
) -> None:
    dt_a = types[0]
    names = {
        "A1": 'comma, "quote" and\nnewline',
        "A2": '=HYPERLINK("http://x")',
        "A3": "+1 pump",
        "A4": "-2",
        "A5": "@sum",
        "A6": "plain ünïcödé",
    }
    insert_devices(
        db, [device_row(i, dt_a, tenants.customer_a, name=n, lat=-33.5, lng=151.25) for i, n in names.items()]
    )
    r = client.get(f"{API}/devices/export?columns=name,id,lat,lng,activable", headers=tenants.a_admin.headers)
    assert r.status_code == 200
    assert r.text.splitlines()[0] == "name,id,lat,lng,activable"
    assert r.text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(r.text)))[1:]
    got = {row[1]: row for row in rows}
    assert got["A1"][0] == names["A1"]  # quoted and doubled quotes survive a round trip
    assert got["A2"][0] == "'" + names["A2"]  # formulas neutralized (CSV injection)
    assert got["A3"][0] == "'+1 pump" and got["A4"][0] == "'-2" and got["A5"][0] == "'@sum"
    assert got["A6"][0] == names["A6"]
    assert got["A1"][2:] == ["-33.5", "151.25", "true"]  # numbers are not text: no apostrophe


def test_export_applies_the_list_filters_and_sort(
    client: TestClient, db: Database, tenants: Tenants, types: tuple[int, int, int, int, int]
) -> None:
    dt_a, dt_site, dt_b, _, _ = types
    insert_devices(
        db,
        [
            device_row("10", dt_a, tenants.customer_a, com_state=3, last_seen_at=T0 + timedelta(hours=2)),
            device_row("20", dt_site, tenants.site_a, com_state=3, last_seen_at=T0 + timedelta(hours=1)),
            device_row("30", dt_site, tenants.site_a, com_state=1),
            device_row("40", dt_site, tenants.site_a, com_state=3, lifecycle="DELETED"),
            device_row("50", dt_b, tenants.customer_b, com_state=3),
        ],
    )
    h = tenants.a_admin.headers
    assert [r["id"] for r in export(client, h, "columns=id")] == ["10", "20", "30"]
    assert [r["id"] for r in export(client, h, f"groupIds={tenants.site_a}&columns=id")] == ["20", "30"]
    assert [r["id"] for r in export(client, h, f"groupIds={tenants.customer_a}&columns=id")] == ["10"]
    assert [r["id"] for r in export(client, h, f"groupIds={tenants.customer_a}&deep=true&comState=KO")] == ["10", "20"]
    assert [r["id"] for r in export(client, h, "sort=-lastCom&columns=id")] == ["10", "20", "30"]
    assert [r["id"] for r in export(client, h, "sort=lastCom&columns=id")] == ["20", "10", "30"]
    assert [r["id"] for r in export(client, h, "lifecycle=DELETED&columns=id")] == ["40"]
    assert [r["id"] for r in export(client, tenants.b_admin.headers, "columns=id")] == ["50"]
    assert [r["id"] for r in export(client, tenants.root_admin.headers, "columns=id,groupId")] == [
        "10",
        "20",
        "30",
        "50",
    ]
    assert export(client, h, "id=FFFF") == []
    header = ",".join(device_queries.DEFAULT_COLUMNS) + "\r\n"
    assert client.get(f"{API}/devices/export?id=FFFF", headers=h).text == header


def test_thousands_of_devices_stream_in_chunks_each_once_in_order(
    client: TestClient,
    db: Database,
    tenants: Tenants,
    types: tuple[int, int, int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dt_a, dt_site = types[0], types[1]
    count = 3000
    insert_devices(
        db,
        [
            device_row(f"{i:X}", dt_a if i % 2 else dt_site, tenants.customer_a if i % 2 else tenants.site_a)
            for i in range(1, count + 1)
        ],
    )
    monkeypatch.setattr(device_queries, "CHUNK", 400)
    for small in (10**9, -1):  # both ways of reading the rows
        monkeypatch.setattr(device_queries, "SMALL", small)
        blocks = []
        with client.stream(
            "GET",
            f"{API}/devices/export?columns=id&deep=true&groupIds={tenants.customer_a}",
            headers=tenants.a_admin.headers,
        ) as r:
            assert r.status_code == 200
            blocks = list(r.iter_bytes())
        text = b"".join(blocks).decode()
        ids = text.split("\r\n")[1:-1]
        assert ids == [f"{i:X}" for i in range(1, count + 1)]
        assert len(blocks) >= count // 400  # sent as it was read, not as one body


def test_export_generator_holds_one_chunk_at_a_time(
    db: Database, tenants: Tenants, types: tuple[int, int, int, int, int]
) -> None:
    insert_devices(db, [device_row(f"{i:X}", types[0], tenants.customer_a) for i in range(1, 1001)])
    with db.read() as s:
        plan = device_queries.plan(s, SYSTEM, device_queries.parse_filter(), "id", with_total=True)
    sizes: list[int] = []
    blocks = list(device_queries.export_csv(db, plan, ["id"], chunk=300, progress=sizes.append))
    assert plan.matches == 1000 and sizes == [300, 300, 300, 100]
    assert [b.count(b"\r\n") for b in blocks] == [1, 300, 300, 300, 100]


def test_bad_export_input_answers_400_naming_the_field(client: TestClient, tenants: Tenants) -> None:
    h = tenants.a_admin.headers
    for query, field in [
        ("columns=id,nope", "columns"),
        ("columns=pac", "columns"),
        ("columns=appKey", "columns"),
        ("columns=nak", "columns"),
        ("columns=id,id", "columns"),
        ("columns=" + "x" * 1001, "columns"),
        ("comState=7", "comState"),
        ("tokenState=maybe", "tokenState"),
        ("lastSeenFrom=x", "lastSeenFrom"),
        ("sort=color", "sort"),
        ("groupIds=abc", "groupIds"),
        ("deep=maybe", "deep"),
    ]:
        assert_invalid(client.get(f"{API}/devices/export?{query}", headers=h), field, "query")
    assert client.get(f"{API}/devices/export?groupIds={tenants.customer_b}", headers=h).status_code == 404


def test_no_export_carries_a_root_key(
    client: TestClient, db: Database, tenants: Tenants, types: tuple[int, ...]
) -> None:
    """Every column, for a device with PAC and NAK set through the real service."""
    with db.write() as s:
        devices.create_sigfox(
            s,
            SYSTEM,
            Keyring.parse(TEST_KEK),
            identifier="ABCDEF",
            pac="0123456789ABCDEF",
            nak="00112233445566778899AABBCCDDEEFF",
            device_type_id=types[0],
            fields=devices.DeviceFields(name="Keyed"),
        )
    r = client.get(
        f"{API}/devices/export?columns=" + ",".join(device_queries.EXPORT_COLUMNS), headers=tenants.a_admin.headers
    )
    assert r.status_code == 200 and "ABCDEF" in r.text
    for secret in ("0123456789ABCDEF", "0123456789abcdef", "00112233445566778899AABBCCDDEEFF"):
        assert secret not in r.text and secret.lower() not in r.text.lower()


def test_contract_devices_lists_token_holders_the_caller_may_read(
    client: TestClient, db: Database, tenants: Tenants, types: tuple[int, int, int, int, int]
) -> None:
    dt_a, dt_site, dt_b, contract_a, contract_b = types
    holders = [
        device_row(
            f"{0xC00 + i:X}",
            dt_a if i % 2 else dt_site,
            tenants.customer_a if i % 2 else tenants.site_a,
            contract_id=contract_a,
            token_state="OK",
        )
        for i in range(25)
    ]
    insert_devices(
        db,
        [
            *holders,
            device_row("D00", dt_a, tenants.customer_a),  # no token
            device_row("D01", dt_b, tenants.customer_b, contract_id=contract_b, token_state="OK"),
        ],
    )
    h = tenants.a_admin.headers
    url = f"{API}/contract-infos/{contract_a}/devices?limit=10&withTotal=true"
    ids: list[str] = []
    while url:
        r = client.get(url, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 25
        ids += [d["id"] for d in body["data"]]
        assert all(d["contract"]["id"] == str(contract_a) for d in body["data"])
        nxt = body["paging"].get("next")
        url = nxt and nxt.split("testserver", 1)[1]
        assert nxt is None or "offset" not in parse_qs(urlsplit(nxt).query)
    assert ids == [r["identifier"] for r in holders] and len(ids) == 25
    site_only = client.get(f"{API}/contract-infos/{contract_a}/devices?deviceTypeId={dt_site}", headers=h).json()
    assert {d["id"] for d in site_only["data"]} == {r["identifier"] for r in holders[::2]}
    # Customer B sees neither the contract nor, through its own, Customer A's devices.
    assert client.get(f"{API}/contract-infos/{contract_a}/devices", headers=tenants.b_admin.headers).status_code == 404
    own = client.get(f"{API}/contract-infos/{contract_b}/devices", headers=tenants.b_admin.headers).json()
    assert [d["id"] for d in own["data"]] == ["D01"]
    assert_invalid(client.get(f"{API}/contract-infos/{contract_a}/devices?pageId=nope", headers=h), "pageId", "query")
    assert_invalid(client.get(f"{API}/contract-infos/x/devices", headers=h), "id", "path")


# -- the CLI ----------------------------------------------------------------------------------------
def _heron() -> list[str]:
    exe = Path(sys.executable).with_name("heron")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "heron.cli"]


def run_cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env.update(
        HERON_DATABASE_URL=database_url, HERON_DATA_DIR=str(data_dir), HERON_KEK=TEST_KEK, HERON_LOG_LEVEL="WARNING"
    )
    return subprocess.run([*_heron(), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_cli_export_writes_the_filtered_csv_and_reports_progress_on_stderr(
    db: Database, tenants: Tenants, types: tuple[int, int, int, int, int], database_url: str, tmp_path: Path
) -> None:
    dt_a, dt_site, dt_b = types[:3]
    insert_devices(
        db,
        [device_row(f"{0xE00 + i:X}", dt_site, tenants.site_a) for i in range(30)]
        + [device_row("F00", dt_a, tenants.customer_a), device_row("F01", dt_b, tenants.customer_b)],
    )
    out = tmp_path / "devices.csv"
    data_dir = tmp_path / "var"
    done = run_cli(
        database_url,
        data_dir,
        "devices",
        "export",
        "--group",
        str(tenants.customer_a),
        "--deep",
        "--device-type",
        str(dt_site),
        "--columns",
        "id,groupId",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["id"] for r in rows] == [f"{0xE00 + i:X}" for i in range(30)]
    assert {r["groupId"] for r in rows} == {str(tenants.site_a)}
    assert "exported 30 devices" in done.stderr and "30/30" in done.stderr
    # To stdout, every device of the tree (root) by default columns; bad input exits 2 naming it.
    whole = run_cli(database_url, data_dir, "devices", "export")
    assert whole.returncode == 0, whole.stderr
    assert len(list(csv.DictReader(io.StringIO(whole.stdout)))) == 32
    bad = run_cli(database_url, data_dir, "devices", "export", "--columns", "id,pac")
    assert bad.returncode == 2 and "--columns" in bad.stderr and not bad.stdout
