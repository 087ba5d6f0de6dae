"""Registration tokens and the Senet onboarding jobs below the HTTP layer: single use under
concurrency, group scope, expiry, hashing, the CLI; a failing batch ends DONE_FAIL with the
seed's internal-error message and nothing half-written; two applications sharing a contract
activated at once keep tokensInUse exact; binding through the CLI."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.errors import Forbidden
from heron.jobs.engine import JobRunner
from heron.jobs.models import Job, JobInput
from heron.registry import contracts, device_types, onboarding, registration_tokens
from heron.registry.models import Contract, Device, RegistrationToken
from heron.runtime.context import AppContext
from heron.tenancy.access import SYSTEM, Actor, Role
from heron.tenancy.models import ApiUser, Group
from tests.conftest import Tenants
from tests.test_cli import Cli, cli  # noqa: F401 - the `cli` fixture

APP_EUI = "00000000000100E0"


def _path(db: Database, group_id: int) -> str:
    with db.read() as s:
        group = s.get(Group, group_id)
        assert group is not None
        return group.path


def _issue(db: Database, group_id: int) -> str:
    with db.write() as s:
        return registration_tokens.create(s, SYSTEM, group_id=group_id, issued_to="Ada Lovelace").code


def _consume(db: Database, code: str, group_id: int) -> bool:
    with db.write() as s:
        return registration_tokens.consume(s, code, _path(db, group_id), "api_user:1")


# -- registration tokens -----------------------------------------------------------------------------
def test_token_is_single_use_even_when_many_threads_present_it_at_once(db: Database, tenants: Tenants) -> None:
    code = _issue(db, tenants.customer_a)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        results.append(_consume(db, code, tenants.customer_a))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    with db.read() as s:
        token = s.scalar(select(RegistrationToken))
        assert token is not None and token.used_by == "api_user:1" and token.used_at is not None


def test_token_serves_its_group_and_subgroups_only(db: Database, tenants: Tenants) -> None:
    assert _consume(db, _issue(db, tenants.customer_a), tenants.site_a)  # a subgroup
    assert not _consume(db, _issue(db, tenants.customer_a), tenants.customer_b)  # a sibling
    assert not _consume(db, _issue(db, tenants.site_a), tenants.customer_a)  # a parent
    assert _consume(db, _issue(db, tenants.root), tenants.site_a)


def test_expired_or_malformed_tokens_are_refused(db: Database, tenants: Tenants) -> None:
    code = _issue(db, tenants.customer_a)
    with db.write() as s:
        s.execute(update(RegistrationToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert not _consume(db, code, tenants.customer_a)
    for bad in ("", "12345", "1234567", "abcdef", "12 456"):
        assert not _consume(db, bad, tenants.customer_a)


def test_token_lives_ten_minutes_is_six_digits_and_only_its_salted_hash_is_stored(
    db: Database, tenants: Tenants
) -> None:
    with db.write() as s:
        issued = registration_tokens.create(s, SYSTEM, group_id=tenants.customer_a, issued_to="Ada")
        token = issued.token
    assert len(issued.code) == 6 and issued.code.isdigit()
    assert token.expires_at - token.created_at == timedelta(minutes=10)
    with db.read() as s:
        stored = s.execute(select(RegistrationToken.code_hash, RegistrationToken.issued_to)).one()
    assert issued.code not in stored.code_hash and stored.issued_to == "Ada"
    assert stored.code_hash == registration_tokens.code_hash(tenants.customer_a, issued.code)


def test_an_api_key_can_never_mint_a_token(db: Database, tenants: Tenants) -> None:
    key = Actor("api_user", 7, "key", (Role(tenants.customer_a, _path(db, tenants.customer_a), frozenset({"ADMIN"})),))
    with db.write() as s, pytest.raises(Forbidden):
        registration_tokens.create(s, key, group_id=tenants.customer_a, issued_to="me")


def test_cli_issues_a_token_for_a_group_and_binds_api_access_to_an_application(
    cli: Cli,  # noqa: F811
    ctx: AppContext,
    tenants: Tenants,
) -> None:
    out = cli("registration-token", "create", "--group", str(tenants.customer_a), "--issued-to", "Ada", "--json")
    assert out.returncode == 0, out.stderr
    issued = json.loads(out.stdout)
    assert set(issued) == {"token", "groupId", "issuedTo", "expiresAt"}
    assert issued["groupId"] == str(tenants.customer_a) and issued["issuedTo"] == "Ada"
    assert _consume(ctx.db, issued["token"], tenants.customer_a)
    app = _application(ctx.db, tenants)
    out = cli("api-access", "create", "--group", str(tenants.customer_a), "--profile", "DEVICE_MANAGER_W",
              "--device-type", str(app), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    login = json.loads(out.stdout)["login"]
    with ctx.db.read() as s:
        assert s.scalar(select(ApiUser.device_type_id).where(ApiUser.id == int(login))) == app
    refused = cli("api-access", "create", "--group", str(tenants.customer_b), "--profile", "ADMIN",
                  "--device-type", str(app))  # fmt: skip
    assert refused.returncode == 2 and "deviceTypeId" in refused.stderr


# -- jobs ------------------------------------------------------------------------------------------------
def _application(db: Database, tenants: Tenants, app_eui: str = APP_EUI, contract_id: int | None = None) -> int:
    with db.write() as s:
        if contract_id is None:
            contract_id = contracts.create(
                s, SYSTEM, group_id=tenants.customer_a, name="Plan", max_tokens=100_000
            ).contract.id
        fields = device_types.DeviceTypeFields(name=f"App {app_eui}", app_eui=app_eui, contract_id=contract_id)
        return device_types.create(
            s, SYSTEM, group_id=tenants.customer_a, network="LORAWAN", fields=fields
        ).device_type.id


def _submit(ctx: AppContext, kind: str, app_eui: str, rows: list[Any], token: str | None = None) -> Job:
    with ctx.db.write() as s:
        call = onboarding.check_call(s, SYSTEM, app_eui=app_eui, token=token)
        job = onboarding.prepare_submit(SYSTEM, ctx.keyring, kind=kind, call=call, rows=rows, callback=None)(s)
        s.expunge(job)
        return job


def _status(ctx: AppContext, req_id: str) -> dict[str, Any]:
    with ctx.db.read() as s:
        return onboarding.task_status(s, SYSTEM, req_id)


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"devEui": f"0A{i:014X}", "appKey": f"{i:032X}"} for i in range(start, start + n)]


def test_a_failing_batch_ends_done_fail_with_the_seed_message_and_keeps_earlier_batches_whole(
    ctx: AppContext, tenants: Tenants
) -> None:
    _application(ctx.db, tenants)
    rows = _rows(onboarding.BATCH_SIZE + 100)
    job = _submit(ctx, onboarding.REGISTER, APP_EUI, rows, token=_issue(ctx.db, tenants.customer_a))
    with ctx.db.write() as s:  # a stored row the handler cannot read: an internal error in batch 2
        stored = json.loads(s.scalar(select(JobInput.rows).where(JobInput.job_id == job.id)) or "[]")
        del stored[onboarding.BATCH_SIZE + 50][onboarding.SEALED_APP_KEY]
        s.execute(update(JobInput).where(JobInput.job_id == job.id).values(rows=json.dumps(stored)))
    JobRunner(ctx.db, keyring=ctx.keyring).run_until_idle()
    status = _status(ctx, job.req_id)
    assert status["state"] == "DONE_FAIL" and status["pctDone"] == 100
    assert status["result"]["stats"]["registered"] == onboarding.BATCH_SIZE
    assert status["result"]["msgs"] == [
        "An internal server error occurred while registering devices. 100 devices were skipped."
    ]
    with ctx.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == onboarding.BATCH_SIZE


def test_two_applications_sharing_a_contract_activated_at_once_count_tokens_exactly(
    ctx: AppContext, tenants: Tenants
) -> None:
    with ctx.db.write() as s:
        shared = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Shared", max_tokens=5000).contract.id
    first, second = "00000000000100E1", "00000000000100E2"
    _application(ctx.db, tenants, first, shared)
    _application(ctx.db, tenants, second, shared)
    n = 3000
    for app_eui, start in ((first, 0), (second, n)):
        _submit(ctx, onboarding.REGISTER, app_eui, _rows(n, start), token=_issue(ctx.db, tenants.customer_a))
    JobRunner(ctx.db, keyring=ctx.keyring).run_until_idle()
    jobs = [
        _submit(ctx, onboarding.ACTIVATE, app_eui, [{"devEui": r["devEui"]} for r in _rows(n, start)])
        for app_eui, start in ((first, 0), (second, n))
    ]
    runners = [JobRunner(ctx.db, keyring=ctx.keyring), JobRunner(ctx.db, keyring=ctx.keyring)]
    threads = [threading.Thread(target=r.run_until_idle) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = [_status(ctx, j.req_id)["result"]["stats"] for j in jobs]
    assert sum(st["activated"] for st in stats) == 5000 and sum(st["errors"] for st in stats) == 1000
    with ctx.db.read() as s:
        in_use = s.scalar(select(Contract.tokens_in_use).where(Contract.id == shared))
        holding = s.scalar(select(func.count()).select_from(Device).where(Device.contract_id == shared))
        active = s.scalar(select(func.count()).select_from(Device).where(Device.lifecycle == "ACTIVE"))
    assert in_use == holding == active == 5000
    msgs = [m for j in jobs for m in _status(ctx, j.req_id)["result"]["msgs"]]
    assert len(msgs) == 1000 and all(m.endswith(f"contract 'Shared' (id {shared}) has no token left.") for m in msgs)


def test_activate_deactivate_activate_releases_and_retakes_tokens_of_devices_never_heard(
    ctx: AppContext, tenants: Tenants
) -> None:
    _application(ctx.db, tenants)
    rows = _rows(10)
    _submit(ctx, onboarding.REGISTER, APP_EUI, rows, token=_issue(ctx.db, tenants.customer_a))
    plain = [{"devEui": r["devEui"]} for r in rows]
    for kind in (onboarding.ACTIVATE, onboarding.DEACTIVATE, onboarding.ACTIVATE):
        JobRunner(ctx.db, keyring=ctx.keyring).run_until_idle()
        _submit(ctx, kind, APP_EUI, plain)
    JobRunner(ctx.db, keyring=ctx.keyring).run_until_idle()
    with ctx.db.read() as s:
        assert s.scalar(select(func.sum(Contract.tokens_in_use))) == 10
        states = set(s.scalars(select(Device.lifecycle)))
    assert states == {"ACTIVE"}
