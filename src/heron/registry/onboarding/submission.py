"""Storing an onboarding job, and `activateOne` (one device activated inside the request)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from heron.errors import HeronError, NotFound
from heron.jobs import engine
from heron.jobs.engine import JobContext
from heron.jobs.models import Job
from heron.jobs.notify import encrypt_headers
from heron.keys import Keyring
from heron.registry import bulk
from heron.registry.onboarding.calls import (
    ACTIVATE,
    DEACTIVATE,
    JOIN_EUI_PURPOSE,
    MAX_ROWS,
    MGMT_PREFIX,
    PROF_ID_PURPOSE,
    REGISTER,
    UPDATE,
    UPDATE_PREFIX,
    Call,
    invalid,
    parse_eui,
    use_token,
)
from heron.registry.onboarding.handlers import activate_batch, not_registered
from heron.registry.onboarding.rows import ERROR, EUI, prepare_rows, sealer
from heron.tenancy import audit
from heron.tenancy.access import Actor

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_LORAWAN = bulk.LORAWAN


def job_params(call: Call, actor: Actor, keyring: Keyring, *, key_change: bool) -> dict[str, Any]:
    """What a handler needs later, in the runner thread: the application, the call's values
    (joinEui and profId already sealed), and the caller's read scopes (messages name another
    application only when the caller may see it)."""
    app = call.app
    return {
        "dt": app.device_type_id,
        "group_id": app.group_id,
        "group_path": app.group_path,
        "app_eui": app.app_eui,
        "join_eui": call.join_eui or app.join_eui or app.app_eui,
        "join_sealed": keyring.encrypt(call.join_eui.encode(), JOIN_EUI_PURPOSE) if call.join_eui else None,
        "prof_id": call.prof_id,
        "prof_sealed": keyring.encrypt(str(call.prof_id).encode(), PROF_ID_PURPOSE) if call.prof_id else None,
        "contract_id": call.contract_id,
        "default_contract": app.contract_id,
        "contracts": list(app.contract_ids),
        "automatic_renewal": app.automatic_renewal,
        "tags": call.tags or [],
        "tags_operation": call.tags_operation,
        "key_change": key_change,
        "read_scopes": actor.scopes("device:read"),
    }


def lock_key(device_type_id: int) -> str:
    return f"dt:{device_type_id}"


@dataclass(frozen=True)
class Callback:
    url: str
    headers: dict[str, str]


def prepare_submit(
    actor: Actor,
    keyring: Keyring,
    *,
    kind: str,
    call: Call,
    rows: list[Any],
    callback: Callback | None,
) -> Callable[[Session], Job]:
    """Check the call and the rows and seal their keys (the part whose cost grows with the
    rows: no transaction needed, so none holds SQLite's write lock meanwhile); the `store`
    returned then stores the job (refused while another runs for the application) and uses the
    registration token in one write transaction: a refused call uses nothing up."""
    app = call.app
    if not rows:
        raise invalid("data", "must list at least one device")
    if len(rows) > MAX_ROWS:
        raise invalid("data", f"must list at most {MAX_ROWS} devices")
    if callback is not None:
        if not callback.url.lower().startswith(("http://", "https://")):
            raise invalid("callback.url", "must be an http or https URL")
        for name, value in callback.headers.items():
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\x00"):
                raise invalid("callback.headers", f"{name[:40]!r} is not a valid HTTP header")
    if (
        kind == UPDATE
        and call.tags_operation is None
        and (call.tags or any(isinstance(r, dict) and r.get("tags") is not None for r in rows))
    ):
        raise invalid("tagsOperation", "required when tags are given: APPEND, REPLACE or DELETE")
    if kind == REGISTER and call.token is None:
        raise invalid("token", "required: a six-digit registration token")
    key_change = kind == REGISTER or (kind == ACTIVATE and call.token is not None)
    mode = {REGISTER: "required", ACTIVATE: "optional"}.get(kind, "ignored")
    prepared = prepare_rows(rows, app_key=mode, seal=sealer(keyring), settings=kind != DEACTIVATE)
    params = job_params(call, actor, keyring, key_change=key_change)
    headers = encrypt_headers(keyring, callback.headers) if callback else None
    encoded = engine.encode_rows(prepared)

    def store(session: Session) -> Job:
        if key_change:
            use_token(session, actor, call)
        job = engine.submit(
            session,
            kind=kind,
            created_by=actor.ref,
            group_path=app.group_path,
            rows=encoded,
            lock_keys=[lock_key(app.device_type_id)],
            params=params,
            refuse_if_busy=True,
            req_id_prefix=UPDATE_PREFIX if kind == UPDATE else MGMT_PREFIX,
            callback_url=callback.url if callback else None,
            callback_headers=headers,
        )
        audit.record(
            session,
            actor,
            "submit",
            job,
            "job",
            app.group_path,
            {"kind": kind, "reqId": job.req_id, "rows": len(rows)},
        )
        return job

    return store


ACTIVATED_ONE = "Device successfully activated"


def activate_one(
    session: Session, actor: Actor, keyring: Keyring, *, call: Call, dev_eui: str | None, row: dict[str, Any]
) -> str:
    """Activate one device at once (no job), under the same rules as `activate`; refused while
    a job runs for the application. Returns the answer's message; raises on a refused row
    (404 for a device not in the application, 400 with the row's message otherwise)."""
    if dev_eui is None:
        raise invalid("devEui", "required")
    parse_eui(dev_eui, "devEui")
    app = call.app
    busy = engine.find_unfinished(session, [lock_key(app.device_type_id)])
    if busy is not None:
        raise engine.JobBusy(busy)
    prepared = prepare_rows([row | {"devEui": dev_eui}], app_key="ignored", seal=None)[0]
    if prepared.get(ERROR):
        raise _RowRefused(prepared[ERROR])
    params = job_params(call, actor, keyring, key_change=False)
    ctx = JobContext(-1, "", actor.ref, app.group_path, params, keyring)
    outcome = activate_batch(session, ctx, [(0, prepared)])[0]
    if outcome.stat == "errors":
        assert outcome.message is not None
        if outcome.message == not_registered(prepared[EUI], params):  # not in this application
            raise NotFound("Device EUI was not found")
        raise _RowRefused(outcome.message)
    audit.record(session, actor, "activate", _Ref(prepared[EUI]), "device", app.group_path, {"devEui": prepared[EUI]})
    return ACTIVATED_ONE


class _RowRefused(HeronError):
    status_code = 400


@dataclass(frozen=True)
class _Ref:
    id: str
