"""Device lists (registry/device_queries.py through GET /api/v2/devices): every filter against the
same predicate computed in Python, every sort order paged through `paging.next` (both read
plans: per-group index and sort-order index), positions that stay exact while devices are
inserted, exact totals, bad input, and no foreign device in lists or totals."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import insert

from heron.db.base import to_ms
from heron.db.engine import Database
from heron.registry import contracts, device_queries, device_types
from heron.registry.models import Device
from heron.tenancy.access import SYSTEM
from tests.api.test_bad_input import assert_invalid
from tests.conftest import Tenants
from tests.registry.conftest import Api

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_serial = itertools.count(0x1000)


@dataclass
class Fleet:
    """Devices of Customer A (its own group and Site A1) and Customer B, as inserted."""

    rows: list[dict[str, Any]]
    dt_a: int
    dt_site: int
    dt_b: int
    contract_a: int
    contract_b: int
    t: Tenants

    def ids(self, predicate: Any, groups: set[int] | None = None) -> set[str]:
        allowed = groups or {self.t.customer_a, self.t.site_a}
        return {r["identifier"] for r in self.rows if r["group_id"] in allowed and predicate(r)}


def device_row(identifier: str, device_type_id: int, group_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "network": "SIGFOX",
        "identifier": identifier,
        "sort_key": identifier.rjust(16, "0"),
        "name": f"unit {identifier}",
        "device_type_id": device_type_id,
        "group_id": group_id,
        "contract_id": None,
        "token_state": "NONE",
        "lifecycle": "REGISTERED",
        "com_state": 5,
        "created_at": T0,
        "last_seen_at": None,
        "prototype": False,
        "activable": True,
        "automatic_renewal": True,
    } | extra


def insert_devices(db: Database, rows: list[dict[str, Any]]) -> None:
    """Set-based, as the bulk jobs write them (the query side only reads the stored columns)."""
    with db.write() as session:
        session.execute(insert(Device), rows)


def make_types(db: Database, t: Tenants) -> tuple[int, int, int, int, int]:
    with db.write() as s:
        out = []
        for group_id in (t.customer_a, t.site_a, t.customer_b):
            view = device_types.create(
                s, SYSTEM, group_id=group_id, network="SIGFOX", fields=device_types.DeviceTypeFields(name="Fleet")
            )
            out.append(view.device_type.id)
        ca = contracts.create(s, SYSTEM, group_id=t.customer_a, name="Contract A", max_tokens=0).contract.id
        cb = contracts.create(s, SYSTEM, group_id=t.customer_b, name="Contract B", max_tokens=0).contract.id
    return out[0], out[1], out[2], ca, cb


@pytest.fixture
def fleet(db: Database, tenants: Tenants) -> Fleet:
    dt_a, dt_site, dt_b, ca, cb = make_types(db, tenants)
    rows = []
    lifecycles = ["ACTIVE", "ACTIVE", "REGISTERED", "DEACTIVATED", "DELETED"]
    for i in range(60):
        group, dt, contract = (
            (tenants.customer_a, dt_a, ca)
            if i % 3 == 0
            else (tenants.site_a, dt_site, ca)
            if i % 3 == 1
            else (tenants.customer_b, dt_b, cb)
        )
        token = i % 4 != 0
        rows.append(
            device_row(
                f"{0xA000 + i * 7:X}",
                dt,
                group,
                name=f"unit {i % 13:02d}",
                lifecycle=lifecycles[i % 5],
                com_state=i % 6,
                token_state="OK" if token else ("NONE" if i % 8 == 0 else "OFF_CONTRACT"),
                contract_id=contract if token else None,
                last_seen_at=None if i % 5 == 2 else T0 + timedelta(hours=i % 11),
            )
        )
    # Names a LIKE pattern would misread, and a LoRaWAN device whose padded key equals a Sigfox id.
    rows.append(device_row("B0000", dt_a, tenants.customer_a, name="50%_OFF sale"))
    rows.append(device_row("B0001", dt_a, tenants.customer_a, name="500 off"))
    rows.append(device_row("B0002", dt_a, tenants.customer_a, name="5_%OFF"))
    rows.append(device_row("00000000000B0000", dt_a, tenants.customer_a, network="LORAWAN", name="eui twin"))
    insert_devices(db, rows)
    return Fleet(rows, dt_a, dt_site, dt_b, ca, cb, tenants)


@pytest.fixture(params=["per-group index", "sort-order index"])
def read_plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under both ways of reading a page (chosen by the count of matches)."""
    monkeypatch.setattr(device_queries, "SMALL", 10**9 if request.param == "per-group index" else -1)
    return str(request.param)


def all_pages(api: Api, query: str, limit: int = 7) -> tuple[list[dict[str, Any]], int]:
    """Every item, following `paging.next`; and how many pages it took."""
    r = api.get(f"/devices?{query}&limit={limit}")
    assert r.status_code == 200, r.text
    body = r.json()
    items, pages = list(body["data"]), 1
    while "next" in body["paging"]:
        url = urlsplit(body["paging"]["next"])
        assert "offset" not in parse_qs(url.query) and "pageId" in parse_qs(url.query), url
        r = api.get(f"{url.path.removeprefix('/api/v2')}?{url.query}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= limit
        items += body["data"]
        pages += 1
        assert pages < 100
    return items, pages


def live(r: dict[str, Any]) -> bool:
    return bool(r["lifecycle"] != "DELETED")


def seen_ms(r: dict[str, Any]) -> int | None:
    return to_ms(r["last_seen_at"])


FILTERS: list[tuple[str, Any]] = [
    ("", live),
    ("id=A0", lambda r: live(r) and r["identifier"].startswith("A0")),
    ("id=00a0", lambda r: live(r) and r["identifier"].startswith("A0")),
    ("minId=A050&maxId=A0A0", lambda r: live(r) and "A050" <= r["identifier"] <= "A0A0" and len(r["identifier"]) == 4),
    ("name=UNIT 0", lambda r: live(r) and r["name"].startswith("unit 0")),
    ("name=%25_", lambda r: live(r) and "%_" in r["name"]),
    ("name=_%25", lambda r: live(r) and "_%" in r["name"]),
    ("name=0%20o", lambda r: live(r) and "0 o" in r["name"]),
    ("lifecycle=DELETED", lambda r: r["lifecycle"] == "DELETED"),
    ("lifecycle=DEACTIVATED", lambda r: r["lifecycle"] == "DEACTIVATED"),
    ("comState=3", lambda r: live(r) and r["com_state"] == 3),
    ("comState=ko", lambda r: live(r) and r["com_state"] == 3),
    ("comState=NOT_SEEN&lifecycle=ACTIVE", lambda r: r["lifecycle"] == "ACTIVE" and r["com_state"] == 5),
    ("tokenState=0", lambda r: live(r) and r["token_state"] == "OK"),
    ("tokenState=OFF_CONTRACT", lambda r: live(r) and r["token_state"] != "OK"),
    ("tokenState=3", lambda r: False),
    ("tokenState=1&comState=0", lambda r: live(r) and r["token_state"] != "OK" and r["com_state"] == 0),
    ("deviceTypeId={dt_site}", lambda r: live(r) and r["group_id"] == r["_site"]),
    ("contractId={contract_a}", lambda r: live(r) and r["contract_id"] is not None),
    ("groupIds={customer_a}", lambda r: live(r) and r["group_id"] == r["_a"]),
    ("groupIds={customer_a}&deep=true", live),
    (
        "groupIds={site_a}&deep=true&comState=1",
        lambda r: live(r) and r["group_id"] == r["_site"] and r["com_state"] == 1,
    ),
    (
        "lastSeenFrom={t3}&lastSeenTo={t7}",
        lambda r: (
            live(r)
            and seen_ms(r) is not None
            and to_ms(T0 + timedelta(hours=3)) <= seen_ms(r) < to_ms(T0 + timedelta(hours=7))
        ),
    ),
    ("lastSeenTo={t3}", lambda r: live(r) and seen_ms(r) is not None and seen_ms(r) < to_ms(T0 + timedelta(hours=3))),
]


def _fill(query: str, fleet: Fleet) -> str:
    return query.format(
        dt_site=fleet.dt_site,
        contract_a=fleet.contract_a,
        customer_a=fleet.t.customer_a,
        site_a=fleet.t.site_a,
        t3=to_ms(T0 + timedelta(hours=3)),
        t7=to_ms(T0 + timedelta(hours=7)),
    )


def test_each_filter_lists_exactly_the_matching_visible_devices_with_an_exact_total(
    admin_a: Api, fleet: Fleet, read_plan: str
) -> None:
    for row in fleet.rows:
        row["_a"], row["_site"] = fleet.t.customer_a, fleet.t.site_a
    problems = []
    for query, predicate in FILTERS:
        q = _fill(query, fleet)
        items, _ = all_pages(admin_a, f"{q}&withTotal=true", limit=100)
        got = [i["id"] for i in items]
        wanted = fleet.ids(predicate)
        total = admin_a.get(f"/devices?{q}&withTotal=true&limit=1").json()["total"]
        if sorted(got) != sorted(wanted) or len(got) != len(set(got)) or total != len(wanted):
            problems.append(f"{q}: got {sorted(got)} total {total}, wanted {sorted(wanted)}")
    assert not problems, "\n".join(problems)
    assert fleet.ids(lambda r: "%_" in r["name"]) == {"B0000"}  # the literal filter is not vacuous


def _expected_order(fleet: Fleet, sort: str, db: Database) -> list[str]:
    with db.read() as s:
        ids = dict(s.execute(Device.__table__.select().with_only_columns(Device.identifier, Device.id)).all())
    rows = [r for r in fleet.rows if r["group_id"] in (fleet.t.customer_a, fleet.t.site_a) and live(r)]
    rows = [r for r in rows if r["name"].startswith("unit")]
    desc = sort.startswith("-")
    by = sort.lstrip("-")

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        tail = (r["sort_key"], ids[r["identifier"]])
        return {"id": tail, "name": (r["name"], *tail), "lastCom": (r["last_seen_at"] or T0, *tail)}[by]

    seen = sorted((r for r in rows if by != "lastCom" or r["last_seen_at"]), key=key, reverse=desc)
    never = sorted((r for r in rows if by == "lastCom" and not r["last_seen_at"]), key=key, reverse=desc)
    return [r["identifier"] for r in seen + never]


@pytest.mark.parametrize("sort", device_queries.SORTS)
def test_every_sort_order_pages_through_next_in_a_total_order(
    admin_a: Api, fleet: Fleet, db: Database, sort: str, read_plan: str
) -> None:
    """Ties (13 distinct names, 11 distinct times) are broken by id; never-seen devices come last."""
    items, pages = all_pages(admin_a, f"sort={sort}&name=unit", limit=4)
    assert [i["id"] for i in items] == _expected_order(fleet, sort, db)
    assert pages > 5


def test_position_stays_exact_when_devices_are_inserted_and_deleted_between_pages(
    admin_a: Api, fleet: Fleet, db: Database
) -> None:
    """No row twice, none of the original rows missed; rows inserted after the position appear."""
    first = admin_a.get("/devices?limit=5&sort=-id").json()
    shown = [d["id"] for d in first["data"]]
    insert_devices(
        db,
        [
            device_row("FFFFF", fleet.dt_a, fleet.t.customer_a),  # before the position: not shown
            device_row("A001", fleet.dt_a, fleet.t.customer_a),  # after it: shown
        ],
    )
    nxt = urlsplit(first["paging"]["next"])
    rest, _ = all_pages(admin_a, nxt.query.replace("limit=5&", "").replace("&limit=5", ""), limit=5)
    ids = shown + [d["id"] for d in rest]
    assert len(ids) == len(set(ids))
    original = fleet.ids(live)
    assert original <= set(ids)
    assert "A001" in ids and "FFFFF" not in ids


def test_offset_is_still_accepted_alone_and_after_a_position(admin_a: Api, fleet: Fleet) -> None:
    everything = [d["id"] for d in admin_a.get("/devices?sort=lastCom").json()["data"]]
    for offset in (0, 3, 17, len(everything) - 2, len(everything)):
        page = admin_a.get(f"/devices?sort=lastCom&offset={offset}&limit=5").json()
        assert [d["id"] for d in page["data"]] == everything[offset : offset + 5]
        assert ("next" in page["paging"]) == (offset + 5 < len(everything))
    first = admin_a.get("/devices?sort=lastCom&limit=5").json()
    after = urlsplit(first["paging"]["next"]).query
    page = admin_a.get(f"/devices?{after}&offset=4").json()["data"]
    assert [d["id"] for d in page] == everything[9:14]


def test_totals_and_lists_never_count_foreign_devices(
    admin_a: Api, admin_b: Api, root: Api, reader_a: Api, fleet: Fleet
) -> None:
    for api, groups in (
        (admin_a, {fleet.t.customer_a, fleet.t.site_a}),
        (reader_a, {fleet.t.customer_a, fleet.t.site_a}),
        (admin_b, {fleet.t.customer_b}),
        (root, {fleet.t.customer_a, fleet.t.site_a, fleet.t.customer_b}),
    ):
        for query, predicate in (
            ("withTotal=true", live),
            ("withTotal=true&id=A0", lambda r: live(r) and r["identifier"].startswith("A0")),
            ("withTotal=true&lifecycle=DELETED", lambda r: r["lifecycle"] == "DELETED"),
            (
                f"withTotal=true&contractId={fleet.contract_a}",
                lambda r: live(r) and r["contract_id"] == fleet.contract_a,
            ),
        ):
            body = api.get(f"/devices?{query}").json()
            wanted = fleet.ids(predicate, groups)
            assert body["total"] == len(wanted), (query, groups)
            assert {d["id"] for d in body["data"]} == wanted
            assert {int(d["group"]["id"]) for d in body["data"]} <= groups
    # Customer B names Customer A's contract: nothing of A's shows (and A's contract is not B's).
    assert admin_b.get(f"/devices?contractId={fleet.contract_a}&withTotal=true").json()["total"] == 0


def test_bad_query_values_answer_400_naming_the_field(admin_a: Api, fleet: Fleet) -> None:
    first = admin_a.get("/devices?limit=2").json()
    token = parse_qs(urlsplit(first["paging"]["next"]).query)["pageId"][0]
    body, mac = token.split(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    cases = [
        ("pageId=garbage", "pageId"),
        ("pageId=", "pageId"),
        ("pageId=" + tampered, "pageId"),
        ("pageId=" + token + "x", "pageId"),
        (f"pageId={token}&sort=name", "pageId"),  # a position in another order
        ("pageId=" + "a" * 3000, "pageId"),
        ("comState=9", "comState"),
        ("comState=-1", "comState"),
        ("comState=OKAY", "comState"),
        ("tokenState=x", "tokenState"),
        ("tokenState=4", "tokenState"),
        ("lastSeenFrom=yesterday", "lastSeenFrom"),
        ("lastSeenFrom=-5", "lastSeenFrom"),
        ("lastSeenTo=1.5", "lastSeenTo"),
        ("lastSeenTo=99999999999999999999", "lastSeenTo"),
        ("lastSeenFrom=%00", "lastSeenFrom"),
        ("sort=size", "sort"),
        ("lifecycle=GONE", "lifecycle"),
        ("minId=xyz", "minId"),
        ("id=12345678901234567", "id"),
        ("contractId=abc", "contractId"),
        ("deviceTypeId=-1", "deviceTypeId"),
        ("withTotal=perhaps", "withTotal"),
        ("name=" + "x" * 101, "name"),
    ]
    for query, field in cases:
        assert_invalid(admin_a.get(f"/devices?{query}"), field, "query")


def test_a_page_token_of_another_list_is_refused(admin_a: Api, fleet: Fleet, db: Database) -> None:
    insert_devices(
        db,
        [
            device_row(f"C{i:03X}", fleet.dt_a, fleet.t.customer_a, contract_id=fleet.contract_a, token_state="OK")
            for i in range(3)
        ],
    )
    listed = admin_a.get(f"/contract-infos/{fleet.contract_a}/devices?limit=1").json()
    token = parse_qs(urlsplit(listed["paging"]["next"]).query)["pageId"][0]
    assert_invalid(admin_a.get(f"/devices?pageId={token}"), "pageId", "query")


def test_sqlite_reads_pages_through_the_intended_indexes(db: Database, fleet: Fleet) -> None:
    """EXPLAIN QUERY PLAN of each way of reading on SQLite (PostgreSQL plans from its statistics):
    few matches through a per-group index, many by walking the order's index."""
    if not db.is_sqlite:
        pytest.skip("SQLite plans only")
    cases = [
        ("id", {"com_state": "3"}, "ix_devices_group_id_com_state_lifecycle_sort_key", "ix_devices_sort_key"),
        (
            "-name",
            {"token_state": "0"},
            "ix_devices_group_id_token_state_lifecycle_sort_key",
            "ix_devices_name_sort_key",
        ),
        (
            "lastCom",
            {"lifecycle": "ACTIVE"},
            "ix_devices_group_id_lifecycle_sort_key",
            "ix_devices_last_seen_at_sort_key",
        ),
    ]
    with db.read() as s:
        for sort, given, few, many in cases:
            f = device_queries.parse_filter(group_ids=[fleet.t.customer_a], deep=True, **given)
            p = device_queries.plan(s, SYSTEM, f, sort)
            for small, index in ((True, few), (False, many)):
                p.small = small
                stmt = device_queries.statement(p, 0, [Device.id], None).limit(101)
                compiled = stmt.compile(dialect=s.get_bind().dialect, compile_kwargs={"render_postcompile": True})
                params = tuple(compiled.params[k] for k in compiled.positiontup or [])
                plan = s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
                assert index in " ".join(str(r[-1]) for r in plan), (sort, small, plan)
