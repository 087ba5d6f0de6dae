"""Devices: Sigfox and LoRaWAN registration, normalization, tokens (exact under concurrency),
visibility, and root keys that never appear in clear in the database."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from heron.config import Settings
from heron.db.engine import Database
from heron.db.models import Base
from heron.errors import Conflict
from heron.keys import Keyring, rotate_all
from heron.registry import devices, registration_tokens
from heron.registry.models import Contract, ContractAllocation, Device
from heron.runtime.context import AppContext
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import AuditEvent
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Tenants
from tests.registry.conftest import Api, contract_body, device_type_body, profile_body

PAC = "A1B2C3D4E5F60718"
NAK = "00112233445566778899AABBCCDDEEFF"
APP_KEY = "F0E1D2C3B4A5968778695A4B3C2D1E0F"


def sigfox(dt: str, ident: str = "00077FFF", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "name": "Tracker", "pac": PAC, "deviceTypeId": dt} | extra


def setup_sigfox(api: Api, tenants: Tenants, max_tokens: int = 10) -> tuple[str, str]:
    cid = api.create("/contracts", contract_body(tenants.customer_a, name="Plan A", maxTokens=max_tokens))
    dt = api.create("/device-types", device_type_body(tenants.customer_a, contractId=cid))
    return cid, dt


def tokens_in_use(api: Api, cid: str) -> int:
    value: int = api.get(f"/contracts/{cid}").json()["tokensInUse"]
    return value


def test_sigfox_device_crud_with_token_taken_and_released(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, dt = setup_sigfox(admin_a, tenants)
    r = admin_a.post("/devices", sigfox(dt, lat=45.5, lng=-73.25, productCertificate={"key": "P_0001_A"}))
    assert r.status_code == 201, r.text
    assert r.json() == {"id": "77FFF"}
    assert r.headers["location"].endswith("/api/v2/devices/77FFF")
    got = admin_a.get("/devices/77fff").json()
    assert (got["id"], got["name"], got["pac"], got["network"]) == ("77FFF", "Tracker", PAC, "SIGFOX")
    assert (got["state"], got["comState"], got["lifecycle"], got["activable"]) == (0, 5, "ACTIVE", True)
    assert got["token"]["state"] == 0 and got["token"]["detailMessage"] == "Valid" and got["token"]["end"] > 0
    assert got["contract"] == {"id": cid, "name": "Plan A"} and got["deviceType"]["id"] == dt
    assert got["group"]["id"] == str(tenants.customer_a) and got["location"] == {"lat": 45.5, "lng": -73.25}
    assert got["productCertificate"] == {"key": "P_0001_A"} and got["automaticRenewalStatus"] == 0
    assert tokens_in_use(admin_a, cid) == 1
    assert admin_a.get("/devices/00077FFF").json()["id"] == "77FFF"

    assert admin_a.put("/devices/77FFF", {"name": "Renamed", "lat": -10, "automaticRenewal": False}).status_code == 204
    got = admin_a.get("/devices/77FFF").json()
    assert (got["name"], got["location"]["lat"], got["automaticRenewalStatus"]) == ("Renamed", -10.0, 1)

    listed = admin_a.get("/devices").json()["data"]
    assert [d["id"] for d in listed] == ["77FFF"] and "pac" not in listed[0]

    assert admin_a.delete("/devices/77FFF").status_code == 204
    assert tokens_in_use(admin_a, cid) == 0
    assert admin_a.get("/devices").json()["data"] == []
    deleted = admin_a.get("/devices?lifecycle=DELETED").json()["data"]
    assert [(d["id"], d["state"], d["token"]["state"]) for d in deleted] == [("77FFF", 5, 1)]
    assert_message(admin_a.delete("/devices/77FFF"), 404)
    assert_message(admin_a.put("/devices/77FFF", {"name": "x"}), 404)  # gone from the device resources

    assert admin_a.post("/devices/77FFF/restore", None).status_code == 204
    assert tokens_in_use(admin_a, cid) == 1
    assert admin_a.get("/devices/77FFF").json()["state"] == 0
    assert_message(admin_a.post("/devices/77FFF/restore", None), 409)
    with db.read() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "device")))
    assert actions == ["create", "update", "delete", "restore"]


def test_the_same_id_in_another_spelling_is_a_duplicate(admin_a: Api, db: Database, tenants: Tenants) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    admin_a.create("/devices", sigfox(dt, "00077FFF"))
    with unchanged(db):
        for spelling in ("77fff", "77FFF", "0x77FFF", "0077fff"):
            assert_message(admin_a.post("/devices", sigfox(dt, spelling)), 409)
    admin_a.delete("/devices/77FFF")
    with unchanged(db):
        assert_message(admin_a.post("/devices", sigfox(dt, "77fff")), 409)  # deleted, restorable: still there


def test_not_activable_device_takes_no_token_and_no_token_left_names_the_contract(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid, dt = setup_sigfox(admin_a, tenants, max_tokens=1)
    admin_a.create("/devices", sigfox(dt, "1", activable=False))
    got = admin_a.get("/devices/1").json()
    assert (got["state"], got["lifecycle"], got["token"]["state"]) == (7, "REGISTERED", 1) and "contract" not in got
    admin_a.create("/devices", sigfox(dt, "2"))
    assert tokens_in_use(admin_a, cid) == 1
    with unchanged(db):
        r = admin_a.post("/devices", sigfox(dt, "3"))
        assert_message(r, 409)
        assert "Plan A" in r.json()["message"] and cid in r.json()["message"]
        assert_message(admin_a.put("/devices/1", {"activable": True}), 409)
    admin_a.delete("/devices/2")
    assert admin_a.put("/devices/1", {"activable": True}).status_code == 204
    assert admin_a.get("/devices/1").json()["state"] == 0 and tokens_in_use(admin_a, cid) == 1


BAD_SIGFOX: list[tuple[dict[str, Any], str]] = [
    ({"id": "XYZ"}, "id"),
    ({"id": "123456789"}, "id"),
    ({"id": ""}, "id"),
    ({"pac": "ABC"}, "pac"),
    ({"pac": "A1B2C3D4E5F6071G"}, "pac"),
    ({"pac": PAC + "00"}, "pac"),
    ({"nak": "0011"}, "nak"),
    ({"lat": 90.5}, "lat"),
    ({"lat": -91}, "lat"),
    ({"lng": 180.01}, "lng"),
    ({"lng": -181}, "lng"),
    ({"deviceTypeId": "999999"}, "deviceTypeId"),
    ({"name": ""}, "name"),
    ({"productCertificate": {"key": "bad key!"}}, "productCertificate.key"),
    ({"tags": "a,b"}, "tags"),
]


@pytest.mark.parametrize(("change", "field"), BAD_SIGFOX, ids=[f for _, f in BAD_SIGFOX])
def test_bad_sigfox_input_is_400_naming_the_field_and_changes_nothing(
    admin_a: Api, db: Database, tenants: Tenants, change: dict[str, Any], field: str
) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    with unchanged(db):
        assert_invalid(admin_a.post("/devices", sigfox(dt) | change), field)


def test_missing_required_fields_and_bad_updates_are_400(admin_a: Api, db: Database, tenants: Tenants) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    admin_a.create("/devices", sigfox(dt, "AB"))
    with unchanged(db):
        for missing in ("id", "pac", "name", "deviceTypeId"):
            body = sigfox(dt, "CD")
            del body[missing]
            assert_invalid(admin_a.post("/devices", body), missing)
        for change, field in (({"lat": 100}, "lat"), ({"lng": "east"}, "lng"), ({"name": None}, "name")):
            assert_invalid(admin_a.put("/devices/AB", change), field)


def test_lorawan_device_registers_without_token_and_never_shows_its_app_key(
    admin_a: Api, db: Database, tenants: Tenants
) -> None:
    cid = admin_a.create("/contracts", contract_body(tenants.customer_a, name="LoRa plan"))
    pid = admin_a.create("/device-profiles", profile_body(tenants.customer_a))
    dt = admin_a.create(
        "/device-types",
        device_type_body(tenants.customer_a, network="LORAWAN", appEui="70B3D57ED0000001", contractId=cid),
    )
    body = {
        "devEui": "70b3d57ed0000abc",
        "appKey": APP_KEY.lower(),
        "joinEui": "00000000000100e0",
        "profId": pid,
        "name": "Meter",
        "deviceTypeId": dt,
        "tags": "floor=2",
    }
    sig_dt = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="Sigfox"))
    with unchanged(db):
        assert_invalid(admin_a.post("/devices", body | {"appKey": "00"}), "appKey")
        assert_invalid(admin_a.post("/devices", body | {"devEui": "70b3d57ed0000ab"}), "devEui")
        assert_invalid(admin_a.post("/devices", body | {"joinEui": "zz"}), "joinEui")
        assert_invalid(admin_a.post("/devices", body | {"profId": "999999"}), "profId")
        assert_invalid(admin_a.post("/devices", {k: v for k, v in body.items() if k != "appKey"}), "appKey")
        assert_invalid(admin_a.post("/devices", body | {"deviceTypeId": sig_dt}), "deviceTypeId")
    assert admin_a.create("/devices", body) == "70B3D57ED0000ABC"
    got = admin_a.get("/devices/70b3d57ed0000abc").json()
    assert (got["lifecycle"], got["state"], got["tags"]) == ("REGISTERED", 2, "floor=2") and "contract" not in got
    assert (got["joinEui"], got["profId"], got["devEui"]) == ("00000000000100E0", pid, "70B3D57ED0000ABC")
    assert APP_KEY not in str(got).upper() and tokens_in_use(admin_a, cid) == 0
    assert_message(admin_a.post("/devices", body | {"devEui": "70B3D57ED0000ABC"}), 409)
    assert admin_a.put("/devices/70B3D57ED0000ABC", {"tags": None}).status_code == 204
    assert "tags" not in admin_a.get("/devices/70B3D57ED0000ABC").json()


def test_devices_are_visible_only_in_their_subtree_and_the_pac_only_to_writers(
    admin_a: Api, reader_a: Api, admin_b: Api, root: Api, db: Database, tenants: Tenants
) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    site_dt = admin_a.create("/device-types", device_type_body(tenants.site_a, name="Site type"))
    admin_a.create("/devices", sigfox(dt, "A1"))
    admin_a.create("/devices", sigfox(site_dt, "A2", activable=False))
    admin_b_dt = admin_b.create("/device-types", device_type_body(tenants.customer_b))
    admin_b.create("/devices", sigfox(admin_b_dt, "B1"))
    assert "pac" not in reader_a.get("/devices/A1").json()
    assert admin_a.get("/devices/A1").json()["pac"] == PAC
    for path in ("/devices/A1", "/devices/A2"):
        assert_message(admin_b.get(path), 404)
        assert_message(admin_b.put(path, {"name": "x"}), 404)
        assert_message(admin_b.delete(path), 404)
    assert_message(admin_a.get("/devices/B1"), 404)
    assert_message(reader_a.put("/devices/A1", {"name": "x"}), 403)
    assert_message(reader_a.post("/devices", sigfox(dt, "A3")), 403)
    assert [d["id"] for d in admin_b.get("/devices").json()["data"]] == ["B1"]
    assert [d["id"] for d in reader_a.get("/devices").json()["data"]] == ["A1", "A2"]
    a = tenants.customer_a
    assert [d["id"] for d in admin_a.get(f"/devices?groupIds={a}").json()["data"]] == ["A1"]
    assert [d["id"] for d in admin_a.get(f"/devices?groupIds={a}&deep=true").json()["data"]] == ["A1", "A2"]
    assert [d["id"] for d in root.get("/devices?sort=-id").json()["data"]] == ["B1", "A2", "A1"]
    assert_message(admin_b.get(f"/devices?groupIds={a}"), 404)
    assert_invalid(admin_b.post("/devices", sigfox(dt, "B2")), "deviceTypeId")


def test_list_filters_sort_and_id_ranges(admin_a: Api, tenants: Tenants) -> None:
    _, dt = setup_sigfox(admin_a, tenants, max_tokens=0)
    other = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="Other"))
    for ident, name, type_ in (("FF", "b", dt), ("100", "a", dt), ("1A", "c", other), ("2", "d", dt)):
        admin_a.create("/devices", sigfox(type_, ident, name=name))

    def ids(query: str) -> list[str]:
        r = admin_a.get(f"/devices?{query}")
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["data"]]

    assert ids("") == ["2", "1A", "FF", "100"]  # numeric order, not text order
    assert ids("sort=-id") == ["100", "FF", "1A", "2"]
    assert ids("sort=name") == ["100", "FF", "1A", "2"]
    assert ids("sort=-name") == ["2", "1A", "FF", "100"]
    assert ids("id=1") == ["1A", "100"]
    assert ids("minId=1A&maxId=0FF") == ["1A", "FF"]
    assert ids(f"deviceTypeId={other}") == ["1A"]
    assert ids("limit=2&offset=1") == ["1A", "FF"]
    assert ids("lifecycle=ACTIVE") == ["2", "FF", "100"]  # "Other" has no default contract
    assert ids("lifecycle=REGISTERED") == ["1A"]
    assert ids("sort=lastCom") == ["2", "1A", "FF", "100"]
    for query, field in (
        ("sort=colour", "sort"),
        ("lifecycle=ALIVE", "lifecycle"),
        ("minId=zz", "minId"),
        ("id=q", "id"),
    ):
        assert_invalid(admin_a.get(f"/devices?{query}"), field, "query")


def test_a_device_type_with_devices_cannot_be_deleted(admin_a: Api, tenants: Tenants) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    admin_a.create("/devices", sigfox(dt, "5"))
    admin_a.delete("/devices/5")
    assert_message(admin_a.delete(f"/device-types/{dt}"), 409)


# -- tokens under concurrency --------------------------------------------------------------------
def test_concurrent_registrations_on_two_device_types_sharing_a_contract_count_tokens_exactly(
    admin_a: Api, ctx: AppContext, db: Database, tenants: Tenants
) -> None:
    max_tokens, quota, threads, per_thread = 15, 6, 6, 6
    cid = admin_a.create("/contracts", contract_body(tenants.customer_a, name="Shared", maxTokens=max_tokens))
    dt1 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="T1", contractId=cid))
    dt2 = admin_a.create("/device-types", device_type_body(tenants.customer_a, name="T2", contractId=cid))
    r = admin_a.put(f"/contracts/{cid}/allocations", {"allocations": [{"deviceTypeId": dt1, "maxTokens": quota}]})
    assert r.status_code == 204, r.text
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def register(worker: int) -> None:
        start.wait()
        for i in range(per_thread):
            ident = f"{worker + 1:X}{i:03X}"
            try:
                with db.write() as s:
                    devices.create_sigfox(
                        s,
                        SYSTEM,
                        ctx.keyring,
                        identifier=ident,
                        pac=PAC,
                        device_type_id=int(dt1 if (worker + i) % 2 else dt2),
                        fields=devices.DeviceFields(name=ident),
                    )
                result = "ok"
            except Conflict as exc:
                assert "Shared" in str(exc), exc
                result = "no token"
            with lock:
                outcomes.append(result)

    workers = [threading.Thread(target=register, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(outcomes) == threads * per_thread
    with db.read() as s:
        contract = s.get(Contract, int(cid))
        alloc = s.scalar(select(ContractAllocation).where(ContractAllocation.contract_id == int(cid)))
        holding = s.scalar(select(func.count()).where(Device.contract_id == int(cid)))
        holding_dt1 = s.scalar(
            select(func.count()).where(Device.contract_id == int(cid), Device.device_type_id == int(dt1))
        )
        total = s.scalar(select(func.count()).select_from(Device))
    assert contract is not None and alloc is not None
    assert contract.tokens_in_use == holding == max_tokens == outcomes.count("ok") == total
    assert alloc.tokens_in_use == holding_dt1 == quota


# -- keys at rest --------------------------------------------------------------------------------
def _key_spellings() -> list[bytes]:
    out = []
    for key in (PAC, NAK, APP_KEY):
        out += [key.upper().encode(), key.lower().encode(), bytes.fromhex(key)]
    return out


def _register_one_of_each(admin_a: Api, db: Database, tenants: Tenants) -> None:
    _, dt = setup_sigfox(admin_a, tenants)
    lora = admin_a.create(
        "/device-types", device_type_body(tenants.customer_a, name="L", network="LORAWAN", appEui="70B3D57ED0000002")
    )
    admin_a.create("/devices", sigfox(dt, "ABC", nak=NAK.lower()))
    admin_a.create("/devices", {"devEui": "0004A30B001C0530", "appKey": APP_KEY, "name": "L", "deviceTypeId": lora})
    # The bulk paths too: a Sigfox bulk job and a Senet register job (their stored input included).
    r = admin_a.post("/devices/bulk", {"deviceTypeId": dt, "data": [{"id": "ABD", "pac": PAC}]})
    assert r.status_code == 200, r.text
    with db.write() as s:
        code = registration_tokens.create(s, SYSTEM, group_id=tenants.customer_a, issued_to="test").code
    body = {"data": [{"devEui": "0004A30B001C0531", "appKey": APP_KEY}]}
    r = admin_a.client.post(
        f"/rest/integration/device/register?appEui=70B3D57ED0000002&token={code}",
        json=body,
        headers={"authorization": admin_a.cred.secret},
    )
    assert r.status_code == 200, r.text


def test_root_keys_never_appear_in_clear_in_the_database(
    admin_a: Api, db: Database, settings: Settings, tenants: Tenants
) -> None:
    _register_one_of_each(admin_a, db, tenants)
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        blobs = [p.read_bytes() for p in files]
        assert any(b"77FF" in b or b"ABC" in b for b in blobs)  # the file is the right one
    else:
        with db.read() as s:
            blobs = [
                repr(list(s.execute(select(*table.columns)).all())).encode() for table in Base.metadata.sorted_tables
            ]
            names = [r[0] for r in s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            blobs += [repr(list(s.execute(text(f'SELECT * FROM "{n}"')).all())).encode() for n in names]
    for blob in blobs:
        for needle in _key_spellings():
            assert needle not in blob, needle
    with db.read() as s:
        row = s.scalar(select(Device).where(Device.identifier == "ABC"))
        assert row is not None and row.pac is not None and row.pac.startswith("v1:")


def test_key_rotation_re_encrypts_device_keys(
    admin_a: Api, ctx: AppContext, db: Database, settings: Settings, tenants: Tenants
) -> None:
    _register_one_of_each(admin_a, db, tenants)
    new_kek = base64.b64encode(bytes(range(100, 132))).decode()
    count, new_id = rotate_all(settings, db, ctx.keyring, new_kek=new_kek)
    assert count >= 3
    fresh = Keyring.parse(new_kek)
    with db.read() as s:
        sig = s.scalar(select(Device).where(Device.identifier == "ABC"))
        lora = s.scalar(select(Device).where(Device.network == "LORAWAN"))
    assert sig is not None and lora is not None and sig.pac and sig.nak and lora.app_key
    assert fresh.key_id_of(sig.pac) == fresh.key_id_of(lora.app_key) == new_id
    assert fresh.decrypt(sig.pac, "devices.pac").decode() == PAC
    assert fresh.decrypt(sig.nak, "devices.nak").decode() == NAK
    assert fresh.decrypt(lora.app_key, "devices.app_key").decode() == APP_KEY
