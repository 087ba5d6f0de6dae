"""Token renewal and expiry, and the purge of deleted devices: called with a clock of the test's
choosing, and once through the app's own job runner (its periodic upkeep)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from heron.config import Settings
from heron.db.base import utcnow
from heron.db.engine import Database
from heron.registry import maintenance
from heron.registry.models import Contract, Device
from tests.conftest import Tenants
from tests.registry.conftest import Api, contract_body, device_type_body

PAC = "A1B2C3D4E5F60718"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"maintenance_interval_seconds": 0.05})


def _setup(api: Api, tenants: Tenants, **contract: object) -> tuple[str, str]:
    cid = api.create("/contracts", contract_body(tenants.customer_a, name="Plan", **contract))
    dt = api.create("/device-types", device_type_body(tenants.customer_a, contractId=cid))
    for ident, renew in (("1", True), ("2", False)):
        api.create("/devices", {"id": ident, "name": ident, "pac": PAC, "deviceTypeId": dt, "automaticRenewal": renew})
    return cid, dt


def _end(db: Database, ident: str) -> Device:
    with db.read() as s:
        d = s.scalar(select(Device).where(Device.identifier == ident))
        assert d is not None
        return d


def test_due_tokens_are_renewed_or_released_by_the_clock_given(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, _dt = _setup(admin_a, tenants, tokenDuration=12)
    first_end = _end(db, "1").token_end_at
    assert first_end is not None
    with db.write() as s:  # nothing is due yet
        assert maintenance.expire_tokens(s, utcnow()) == (0, 0)
    later = first_end + timedelta(days=400)  # past one more token period
    with db.write() as s:
        assert maintenance.expire_tokens(s, later) == (1, 1)
    renewed, ended = _end(db, "1"), _end(db, "2")
    assert renewed.token_end_at is not None and renewed.token_end_at > later
    assert renewed.token_end_at.year == first_end.year + 2 and renewed.token_renewed_at == later
    assert ended.contract_id is None and ended.token_state == "OFF_CONTRACT"
    assert admin_a.get(f"/contracts/{cid}").json()["tokensInUse"] == 1
    assert admin_a.get("/devices/1").json()["automaticRenewalStatus"] == 2  # RENEWED
    with db.write() as s:
        assert maintenance.expire_tokens(s, later) == (0, 0)  # done once, never twice


def test_a_contract_that_ended_renews_nothing(admin_a: Api, db: Database, tenants: Tenants) -> None:
    cid, _dt = _setup(admin_a, tenants, tokenDuration=1)
    with db.write() as s:
        s.execute(update(Contract).where(Contract.id == int(cid)).values(end_at=utcnow() + timedelta(days=10)))
    with db.write() as s:
        assert maintenance.expire_tokens(s, utcnow() + timedelta(days=60)) == (0, 2)
    assert admin_a.get(f"/contracts/{cid}").json()["tokensInUse"] == 0


def test_the_runner_renews_releases_and_purges_on_its_own(
    admin_a: Api, db: Database, tenants: Tenants, settings: Settings
) -> None:
    cid, _dt = _setup(admin_a, tenants)
    admin_a.create("/devices", {"id": "3", "name": "gone", "pac": PAC, "deviceTypeId": _dt})
    assert admin_a.delete("/devices/3").status_code == 204
    past = utcnow() - timedelta(minutes=1)
    long_ago = utcnow() - timedelta(days=settings.deleted_device_retention_days + 1)
    with db.write() as s:
        s.execute(update(Device).where(Device.identifier.in_(["1", "2"])).values(token_end_at=past))
        s.execute(update(Device).where(Device.identifier == "3").values(deleted_at=long_ago))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        one, two = admin_a.get("/devices/1").json(), admin_a.get("/devices/2").json()
        if one["automaticRenewalStatus"] == 2 and two["automaticRenewalStatus"] == 3:
            break
        time.sleep(0.05)
    assert one["automaticRenewalStatus"] == 2 and one["token"]["state"] == 0, one
    assert two["automaticRenewalStatus"] == 3 and two["token"]["state"] == 1 and "contract" not in two, two
    assert admin_a.get(f"/contracts/{cid}").json()["tokensInUse"] == 1
    while time.monotonic() < deadline and admin_a.get("/devices?lifecycle=DELETED").json()["data"]:
        time.sleep(0.05)
    assert admin_a.get("/devices?lifecycle=DELETED").json()["data"] == []
    assert admin_a.post("/devices/3/restore", None).status_code == 404


def test_purge_keeps_recently_deleted_devices(admin_a: Api, db: Database, tenants: Tenants) -> None:
    _setup(admin_a, tenants)
    assert admin_a.delete("/devices/1").status_code == 204
    with db.write() as s:
        assert maintenance.purge_deleted(s, utcnow() - timedelta(days=30)) == 0
    with db.write() as s:
        assert maintenance.purge_deleted(s, utcnow() + timedelta(seconds=1)) == 1
    assert admin_a.get("/devices/1").status_code == 404 and admin_a.get("/devices/2").status_code == 200
