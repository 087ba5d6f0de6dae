"""The Senet onboarding API as jobs of the one job engine: `register`, `activate`,
`deactivate`, `update` (and `activateOne`, the activation of one device inside the request).

A call is checked and its rows are validated, normalized and sealed at submission (in the
request, where the caller's rights are known): each stored row is either a clean row (DevEUI
upper-case, the AppKey already a keyring ciphertext, so no root key ever sits in clear in
`job_inputs`) or the error message it will report. What a handler needs later in the runner
thread (the application, the contract, the caller's read scopes) goes into the job's params.
Handlers are set-based: one SELECT ... IN per batch, one executemany per kind of write, tokens
taken for a whole batch at once (`bulk.reserve_tokens`).

Rules (docs/ARCHITECTURE.md, "Senet onboarding API"):
- A LoRaWAN device takes its token on activation: on `contractId` if given (one of the
  application's contracts), else the contract named at registration, else the application's
  default contract; with none left the row fails with a message naming the contract.
- Deactivation keeps the token of a device that has been heard (it may go on uplinking on its
  session and stays billable, as the seed says) and releases the token of one never heard.
- Changing an AppKey (through `register` on a device already in the application, or `activate`
  with an `appKey`) needs a valid registration token; messages show keys masked (`****ABC0`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from heron.db.base import UtcDateTime, utcnow
from heron.errors import FieldError, Forbidden, HeronError, InvalidInput, NotFound
from heron.jobs import engine
from heron.jobs.engine import JobContext, JobKind, RowOutcome
from heron.jobs.models import Job
from heron.jobs.notify import encrypt_headers, status_body
from heron.keys import Keyring
from heron.registry import bulk, device_profiles, registration_tokens
from heron.registry.device_types import current_contracts
from heron.registry.identifiers import mask_key
from heron.registry.models import Contract, Device, DeviceType
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.models import Group

REGISTER, ACTIVATE, DEACTIVATE, UPDATE = "senet.register", "senet.activate", "senet.deactivate", "senet.update"
KINDS = (REGISTER, ACTIVATE, DEACTIVATE, UPDATE)
MGMT_PREFIX, UPDATE_PREFIX = "DevMgmtJobReq", "DevUpdateJobReq"
STATUS_KEPT = timedelta(minutes=15)
MAX_ROWS = 100_000
TAG_OPERATIONS = ("APPEND", "REPLACE", "DELETE")
APP_KEY_PURPOSE = "devices.app_key"
JOIN_EUI_PURPOSE = "devices.join_eui"
PROF_ID_PURPOSE = "devices.prof_id"

_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
_REQ_ID = re.compile(r"(DevMgmtJobReq|DevUpdateJobReq):[0-9A-Fa-f]{1,32}")
_TAG_SPLIT = re.compile(r"[,;]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_LORAWAN = bulk.LORAWAN


def invalid(parameter: str, why: str) -> InvalidInput:
    """The Senet family's 400: `{"message"}` naming the parameter."""
    return InvalidInput(f"Invalid parameter: {parameter} ({why})", [FieldError(parameter, why, "query")])


# -- the application and the call's parameters ------------------------------------------------------
@dataclass(frozen=True)
class Application:
    """A LORAWAN device type seen as a Senet application."""

    device_type_id: int
    app_eui: str
    join_eui: str | None
    group_id: int
    group_path: str
    contract_id: int | None
    profile_id: int | None
    automatic_renewal: bool
    contract_ids: tuple[int, ...]


def parse_eui(value: str, parameter: str) -> str:
    if not _HEX16.fullmatch(value):
        raise invalid(parameter, "must be 16 hex digits (an EUI-64)")
    return value.upper()


def parse_int(value: str, parameter: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 10 or not 0 < int(value) < 2**31:
        raise invalid(parameter, "must be a positive integer")
    return int(value)


def application(session: Session, actor: Actor, app_eui: str | None, action: str = "device:write") -> Application:
    """The application a call acts on: `appEui`, else the one the API key is bound to. An
    unknown application and one of another tenant answer alike."""
    if app_eui is None:
        if actor.bound_device_type_id is None:
            raise invalid("appEui", "required: this API key is not bound to an application")
        cond = DeviceType.id == actor.bound_device_type_id
    else:
        cond = DeviceType.app_eui == parse_eui(app_eui, "appEui")
    row = session.execute(
        select(DeviceType, Group.path).join(Group, Group.id == DeviceType.group_id).where(cond)
    ).first()
    if row is None or row[0].network != _LORAWAN or not actor.can("device:read", row[1]):
        raise invalid("appEui", "no such application")
    dt, path = row
    actor.require(action, path, "application")
    assert dt.app_eui is not None
    return Application(
        dt.id,
        dt.app_eui,
        dt.join_eui,
        dt.group_id,
        path,
        dt.contract_id,
        dt.device_profile_id,
        dt.automatic_renewal,
        tuple(current_contracts(session, [dt.id])[dt.id]),
    )


def parse_tags(value: object) -> list[str]:
    """Tags as Senet sends them: a string separated by `,` (the tables) or `;` (the update
    example), or a JSON list. Raises ValueError."""
    if isinstance(value, str):
        parts: list[Any] = _TAG_SPLIT.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [p for v in value for p in _TAG_SPLIT.split(v)]
    else:
        raise ValueError("must be a string of tags separated by , or ;")
    tags = list(dict.fromkeys(t.strip() for t in parts if t.strip()))
    if any("\x00" in t or len(t) > 100 for t in tags):
        raise ValueError("each tag must be at most 100 characters, without NUL")
    if len(",".join(tags)) > 4000:
        raise ValueError("must be at most 4000 characters in all")
    return tags


def tags_text(tags: list[str]) -> str | None:
    return ",".join(tags) if tags else None


def _stored_tags(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


@dataclass
class Call:
    """A validated call: what every kind records in its job params."""

    app: Application
    join_eui: str | None = None
    contract_id: int | None = None
    prof_id: int | None = None
    tags: list[str] | None = None
    tags_operation: str | None = None
    token: str | None = None


def check_call(
    session: Session,
    actor: Actor,
    *,
    app_eui: str | None,
    join_eui: str | None = None,
    contract_id: str | None = None,
    prof_id: str | None = None,
    tags: str | None = None,
    tags_operation: str | None = None,
    token: str | None = None,
) -> Call:
    """Parse and check a call's query parameters (400 naming the first bad one)."""
    app = application(session, actor, app_eui)
    call = Call(app)
    if join_eui is not None:
        call.join_eui = parse_eui(join_eui, "joinEui")
    if contract_id is not None:
        call.contract_id = parse_int(contract_id, "contractId")
        if call.contract_id not in app.contract_ids:
            raise invalid("contractId", "not a contract of this application")
    if prof_id is not None:
        call.prof_id = parse_int(prof_id, "profId")
        group = session.get(Group, app.group_id)
        assert group is not None
        if device_profiles.usable_by(session, call.prof_id, group) is None:
            raise invalid("profId", "no such device profile for this application")
    if tags is not None:
        try:
            call.tags = parse_tags(tags)
        except ValueError as exc:
            raise invalid("tags", str(exc)) from None
    if tags_operation is not None:
        if tags_operation.upper() not in TAG_OPERATIONS:
            raise invalid("tagsOperation", "must be APPEND, REPLACE or DELETE")
        call.tags_operation = tags_operation.upper()
    if token is not None:
        if not registration_tokens.well_formed(token):
            raise invalid("token", "must be a six-digit number")
        call.token = token
    return call


def _use_token(session: Session, actor: Actor, call: Call) -> None:
    assert call.token is not None
    if not registration_tokens.consume(session, call.token, call.app.group_path, actor.ref):
        raise invalid("token", "unknown, expired or already used, or issued for another group")


# -- rows: validated, normalized and sealed at submission ----------------------------------------------
def _sealer(keyring: Keyring) -> Callable[[str], str]:
    encrypt = keyring.encrypter(APP_KEY_PURPOSE)
    return lambda key: encrypt(key.encode())


def prepare_rows(
    rows: list[Any], *, app_key: str, seal: Callable[[str], str] | None, settings: bool = True
) -> list[dict[str, Any]]:
    """The stored form of the request's rows. `app_key`: "required" (register), "optional"
    (activate) or "ignored". A bad row becomes `{"e": message, "d": devEui or null}`; a good one
    `{"d": devEui, "k": sealed AppKey, "lat", "lng", "tags": [...], "t": devType}` with only the
    keys given. Later rows repeating a DevEUI are errors (the first one counts)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            out.append({"e": f"Row {n}: must be a JSON object with a devEui.", "d": None})
            continue
        raw = row.get("devEui")
        if not isinstance(raw, str) or not _HEX16.fullmatch(raw):
            shown = json.dumps(raw)[:40] if raw is not None else "missing"
            out.append({"e": f"Row {n}: devEui must be 16 hex digits (an EUI-64), got {shown}.", "d": None})
            continue
        eui = raw.upper()
        if eui in seen:
            out.append({"e": f"DevEUI: {eui} appears more than once in the request; its first row is used.", "d": eui})
            continue
        seen.add(eui)
        good: dict[str, Any] = {"d": eui}
        problem = None
        if app_key != "ignored":
            key = row.get("appKey")
            if key is None:
                if app_key == "required":
                    problem = f"The AppKey for DevEUI: {eui} is missing (32 hex digits)."
            elif not isinstance(key, str) or not _HEX32.fullmatch(key):
                problem = f"The AppKey for DevEUI: {eui} must be 32 hex digits (an AES-128 key)."
            elif seal is not None:
                good["k"] = seal(key.upper())
        if settings and problem is None:
            problem = _settings(row, eui, good)
        out.append({"e": problem, "d": eui} if problem else good)
    return out


def _settings(row: dict[str, Any], eui: str, good: dict[str, Any]) -> str | None:
    position = {name: row[name] for name in ("lat", "lng") if row.get(name) is not None}
    if position:
        try:
            good |= bulk.check_settings(_LORAWAN, position)
        except InvalidInput as exc:
            problem = exc.errors[0]
            return f"DevEUI: {eui}: {problem.field} {problem.message}."
    tags = row.get("tags")
    if tags is not None:
        try:
            good["tags"] = parse_tags(tags)
        except ValueError as exc:
            return f"DevEUI: {eui}: tags {exc}."
    dev_type = row.get("devType")
    if dev_type is not None:
        if not isinstance(dev_type, str) or not 1 <= len(dev_type) <= 100 or "\x00" in dev_type:
            return f"DevEUI: {eui}: devType must be 1 to 100 characters."
        good["t"] = dev_type
    return None


# -- submission -----------------------------------------------------------------------------------------
_SUMMARY = {
    REGISTER: ("registration", (("registered", "Registered"), ("updated", "Updated"), ("notChanged", "Not Changed"))),
    ACTIVATE: ("activation", (("activated", "Activated"), ("updated", "Updated"), ("notChanged", "Not Changed"))),
    DEACTIVATE: ("deactivation", (("deactivated", "Deactivated"), ("notChanged", "Not Changed"))),
    UPDATE: ("update", (("updated", "Updated"), ("notChanged", "Not Changed"))),
}
_INTERNAL = {
    REGISTER: "An internal server error occurred while registering devices. {skipped} devices were skipped.",
    ACTIVATE: "An internal server error occurred while activating devices.",
    DEACTIVATE: "An internal server error occurred while deactivating devices. {skipped} devices were skipped.",
    UPDATE: "An internal server error occurred while updating devices. {skipped} devices were skipped.",
}


def _summary(kind: str) -> Callable[[dict[str, Any], dict[str, int]], str]:
    what, stats = _SUMMARY[kind]

    def summary(params: dict[str, Any], counts: dict[str, int]) -> str:
        parts = " ".join(f"{label}: {counts.get(key, 0)}" for key, label in stats)
        return f"Device {what} on App EUI: {params['app_eui']} completed. {parts} Errors: {counts.get('errors', 0)}"

    return summary


def _params(call: Call, actor: Actor, keyring: Keyring, *, key_change: bool) -> dict[str, Any]:
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


def submit(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    *,
    kind: str,
    call: Call,
    rows: list[Any],
    callback: Callback | None,
) -> Job:
    return prepare_submit(actor, keyring, kind=kind, call=call, rows=rows, callback=callback)(session)


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
    prepared = prepare_rows(rows, app_key=mode, seal=_sealer(keyring), settings=kind != DEACTIVATE)
    params = _params(call, actor, keyring, key_change=key_change)
    headers = encrypt_headers(keyring, callback.headers) if callback else None
    encoded = engine.encode_rows(prepared)

    def store(session: Session) -> Job:
        if key_change:
            _use_token(session, actor, call)
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


# -- reading devices -----------------------------------------------------------------------------------
class _Dev(NamedTuple):
    id: int
    identifier: str
    device_type_id: int
    lifecycle: str
    contract_id: int | None
    token_alloc: str | None
    token_state: str
    token_end_at: datetime | None
    requested_contract_id: int | None
    last_seen_at: datetime | None
    lat: float | None
    lng: float | None
    tags: str | None
    dev_type: str | None


def _devices(session: Session, euis: list[str]) -> dict[str, _Dev]:
    """The LoRaWAN devices among `euis`, with what activation, deactivation and update need
    (bulk.existing plus tags, position, devType, requested contract and last seen: one query)."""
    out: dict[str, _Dev] = {}
    conn = session.connection()  # Core rows: no ORM loading for a plain column list
    for start in range(0, len(euis), 5000):
        rows = conn.execute(
            select(
                Device.id,
                Device.identifier,
                Device.device_type_id,
                Device.lifecycle,
                Device.contract_id,
                Device.token_alloc,
                Device.token_state,
                Device.token_end_at,
                Device.requested_contract_id,
                Device.last_seen_at,
                Device.lat,
                Device.lng,
                Device.tags,
                Device.dev_type,
            )
            .where(Device.network == _LORAWAN, Device.identifier.in_(euis[start : start + 5000]))
            .order_by(Device.id)
            .with_for_update()  # held to commit: no other writer changes their tokens meanwhile
        )
        for row in rows:
            out[row.identifier] = _Dev._make(row)
    return out


def _secrets(session: Session, ids: list[int], column: Any) -> dict[int, str | None]:
    if not ids:
        return {}
    return {i: v for i, v in session.execute(select(Device.id, column).where(Device.id.in_(ids)))}


def _app_euis(session: Session, device_type_ids: set[int], scopes: list[str]) -> dict[int, str]:
    """AppEUIs of other applications the caller may see (messages name only those)."""
    if not device_type_ids:
        return {}
    rows = session.execute(
        select(DeviceType.id, DeviceType.app_eui, Group.path)
        .join(Group, Group.id == DeviceType.group_id)
        .where(DeviceType.id.in_(device_type_ids))
    )
    return {i: eui for i, eui, path in rows if eui and any(path.startswith(s) for s in scopes)}


# Outcomes without a message, shared (they are frozen): most rows of a batch end in one of these.
_PLAIN = {stat: RowOutcome(stat) for stat in ("registered", "activated", "deactivated", "updated", "notChanged")}


def _errors_of(
    batch: list[tuple[int, dict[str, Any]]],
) -> tuple[list[RowOutcome | None], list[tuple[int, dict[str, Any]]]]:
    outcomes: list[RowOutcome | None] = [None] * len(batch)
    good = []
    for i, (_seq, row) in enumerate(batch):
        if row.get("e"):
            outcomes[i] = RowOutcome("errors", row["e"], row.get("d"))
        else:
            good.append((i, row))
    return outcomes, good


def _done(outcomes: list[RowOutcome | None]) -> list[RowOutcome]:
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _merge_tags(current: str | None, *extra: list[str] | None) -> str | None:
    tags = _stored_tags(current)
    for more in extra:
        tags += more or []
    return tags_text(list(dict.fromkeys(tags)))


_SETTINGS_UPDATE = (
    update(Device.__table__)  # type: ignore[arg-type]
    .where(Device.__table__.c.id == bindparam("b_id"))
    .values(
        lat=bindparam("b_lat"),
        lng=bindparam("b_lng"),
        tags=bindparam("b_tags"),
        dev_type=bindparam("b_dev_type"),
        updated_at=bindparam("b_now"),
        updated_by=bindparam("b_by"),
    )
    .execution_options(synchronize_session=False)
)


def _key_changed_message(eui: str, old: str, new: str) -> str:
    return f"The AppKey for DevEUI: {eui} has been updated. Old AppKey: {mask_key(old)} New AppKey: {mask_key(new)}."


# -- register ------------------------------------------------------------------------------------------
def _register(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = bulk.existing(session, _LORAWAN, [row["d"] for _, row in good])
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    same_app: list[tuple[int, dict[str, Any], int]] = []
    others: list[tuple[int, str, int]] = []
    # Every new row starts from the same template (bulk.new_row), with the call's values.
    template = bulk.new_row(
        network=_LORAWAN,
        identifier="",
        device_type_id=p["dt"],
        group_id=p["group_id"],
        automatic_renewal=p["automatic_renewal"],
        created_by=ctx.created_by,
        now=now,
    )
    template |= {
        "join_eui": p["join_sealed"],
        "prof_id": p["prof_sealed"],
        "requested_contract_id": p["contract_id"],
    }
    call_tags, call_tags_text = p["tags"], tags_text(p["tags"])
    for i, row in good:
        eui = row["d"]
        ex = found.get(eui)
        if ex is None:
            row_tags = row.get("tags")
            values = template | {
                "identifier": eui,
                "sort_key": bulk.sort_key(eui),
                "name": eui,
                "lat": row.get("lat"),
                "lng": row.get("lng"),
                "tags": tags_text(list(dict.fromkeys(row_tags + call_tags))) if row_tags else call_tags_text,
                "dev_type": row.get("t"),
                "app_key": row["k"],
            }
            new_rows.append(values)
            outcomes[i] = _PLAIN["registered"]
        elif ex.device_type_id == p["dt"] and ex.lifecycle != bulk.DELETED:
            same_app.append((i, row, ex.id))
        elif ex.device_type_id == p["dt"]:
            outcomes[i] = RowOutcome(
                "errors", f"DevEUI: {eui} was deleted; it cannot be registered again until it is purged.", eui
            )
        else:
            others.append((i, eui, ex.device_type_id))
    if others:
        visible = _app_euis(session, {dt for _, _, dt in others}, p["read_scopes"])
        for i, eui, dt in others:
            where = f" on AppEUI: {visible[dt]}" if dt in visible else " on another application"
            outcomes[i] = RowOutcome(
                "errors",
                f"DevEUI: {eui} is already registered{where}. "
                f"The device cannot be registered on AppEUI: {p['app_eui']}.",
                eui,
            )
    if same_app:
        decisions = _key_decisions(session, ctx, same_app, outcomes)
        for i, change in decisions.items():
            outcomes[i] = RowOutcome("updated", change.message, batch[i][1]["d"]) if change else _PLAIN["notChanged"]
        _write_keys(session, [c for c in decisions.values() if c is not None], now, ctx.created_by)
    bulk.insert_devices(session, new_rows)
    return _done(outcomes)


@dataclass(frozen=True)
class _KeyChange:
    dev_id: int
    sealed: str
    message: str


def _key_decisions(
    session: Session, ctx: JobContext, rows: list[tuple[int, dict[str, Any], int]], outcomes: list[RowOutcome | None]
) -> dict[int, _KeyChange | None]:
    """Rows carrying an AppKey for devices already in the application, by batch position: None
    when the stored key is the same, a change (with the masked message) when it differs and the
    call used a registration token; without one the row's outcome becomes an error. Writes
    nothing (`_write_keys` does, for the rows that go through)."""
    keyring = ctx.keys()
    stored = _secrets(session, [dev_id for _, _, dev_id in rows], Device.app_key)
    out: dict[int, _KeyChange | None] = {}
    for i, row, dev_id in rows:
        eui = row["d"]
        new = keyring.decrypt(row["k"], APP_KEY_PURPOSE).decode()
        sealed = stored.get(dev_id)
        old = keyring.decrypt(sealed, APP_KEY_PURPOSE).decode() if sealed else ""
        if old == new:
            out[i] = None
        elif not ctx.params["key_change"]:
            outcomes[i] = RowOutcome(
                "errors",
                f"The AppKey for DevEUI: {eui} cannot be changed without a registration token (token parameter).",
                eui,
            )
        else:
            out[i] = _KeyChange(dev_id, row["k"], _key_changed_message(eui, old, new))
    return out


def _write_keys(session: Session, changes: list[_KeyChange], now: Any, by: str) -> None:
    if not changes:
        return
    table = Device.__table__
    assert isinstance(table, Table)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(app_key=bindparam("b_key"), updated_at=bindparam("b_now"), updated_by=bindparam("b_by"))
        .execution_options(synchronize_session=False),
        [{"b_id": c.dev_id, "b_key": c.sealed, "b_now": now, "b_by": by} for c in changes],
    )


# -- activate ------------------------------------------------------------------------------------------
def _activate(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = _devices(session, [row["d"] for _, row in good])
    now = utcnow()
    mine: list[tuple[int, dict[str, Any], _Dev]] = []
    others: list[tuple[int, str, _Dev]] = []
    for i, row in good:
        dev = found.get(row["d"])
        if dev is None or (dev.device_type_id == p["dt"] and dev.lifecycle == bulk.DELETED):
            outcomes[i] = RowOutcome("errors", _not_registered(row["d"], p), row["d"])
        elif dev.device_type_id != p["dt"]:
            others.append((i, row["d"], dev))
        else:
            mine.append((i, row, dev))
    if others:
        visible = _app_euis(session, {d.device_type_id for _, _, d in others}, p["read_scopes"])
        for i, eui, dev in others:
            other = visible.get(dev.device_type_id)
            if other is None or dev.lifecycle == bulk.REGISTERED or dev.lifecycle == bulk.DELETED:
                message = _not_registered(eui, p)
            elif dev.last_seen_at is not None:
                message = (
                    f"DevEUI: {eui} has already joined on AppEUI: {other}. "
                    f"The device cannot be activated on AppEUI: {p['app_eui']}."
                )
            else:
                message = (
                    f"DevEUI: {eui} was already activated on AppEUI: {other}. "
                    f"The device cannot be activated on AppEUI: {p['app_eui']}."
                )
            outcomes[i] = RowOutcome("errors", message, eui)
    # AppKeys given for devices of the application: the same, changed (with a token) or refused.
    keyed = [(i, row, dev.id) for i, row, dev in mine if "k" in row]
    keys = _key_decisions(session, ctx, keyed, outcomes) if keyed else {}
    # The rows still standing: activate them, or count them updated / not changed when active.
    to_token: dict[int | None, list[tuple[int, _Dev]]] = {}
    going: list[tuple[int, dict[str, Any], _Dev]] = []
    for i, row, dev in mine:
        if outcomes[i] is not None:
            continue  # refused AppKey change
        change = keys.get(i)
        note: str | None = change.message if change else None
        entity: str | None = row["d"] if change else None
        if dev.lifecycle == bulk.ACTIVE:
            changed = _settings_change(row, dev, p) is not None or change is not None
            stat = "updated" if changed else "notChanged"
            outcomes[i] = RowOutcome(stat, note, entity) if note else _PLAIN[stat]
        else:
            outcomes[i] = RowOutcome("activated", note, entity) if note else _PLAIN["activated"]
            if dev.contract_id is None:
                cid = p["contract_id"] or dev.requested_contract_id or p["default_contract"]
                to_token.setdefault(cid, []).append((i, dev))
        going.append((i, row, dev))
    refused: set[int] = set()
    tokens: dict[int, dict[str, Any]] = {}
    for cid, waiting in to_token.items():
        refused_here, granted = _take_tokens(session, ctx, cid, waiting, outcomes, now)
        refused |= refused_here
        tokens |= granted
    going = [(i, row, dev) for i, row, dev in going if i not in refused]
    # Writes, for the rows that go through only.
    _write_keys(session, [c for i, c in keys.items() if c is not None and i not in refused], now, ctx.created_by)
    _write_activation(session, p, going, tokens, now, ctx.created_by)
    return _done(outcomes)


_ACTIVATION_UPDATE = (
    update(Device.__table__)  # type: ignore[arg-type]
    .where(Device.__table__.c.id == bindparam("b_id"))
    .values(
        lifecycle=bindparam("b_lifecycle"),
        contract_id=bindparam("b_contract_id"),
        token_alloc=bindparam("b_token_alloc"),
        token_state=bindparam("b_token_state"),
        token_end_at=bindparam("b_token_end_at"),
        activated_at=func.coalesce(Device.__table__.c.activated_at, bindparam("b_activated_at", type_=UtcDateTime())),
        lat=bindparam("b_lat"),
        lng=bindparam("b_lng"),
        tags=bindparam("b_tags"),
        dev_type=bindparam("b_dev_type"),
        updated_at=bindparam("b_now"),
        updated_by=bindparam("b_by"),
    )
    .execution_options(synchronize_session=False)
)


def _write_activation(
    session: Session,
    p: dict[str, Any],
    going: list[tuple[int, dict[str, Any], _Dev]],
    tokens: dict[int, dict[str, Any]],
    now: datetime,
    by: str,
) -> None:
    """Activate the devices of the batch that go through: those that only change lifecycle and
    token share their new values, so they are one UPDATE ... WHERE id IN (...) per (contract,
    allocation) group; devices whose settings change too are one executemany. Then the call's
    joinEui / profId."""
    grouped: dict[tuple[Any, ...], list[int]] = {}
    params = []
    for i, row, dev in going:
        settings = _settings_change(row, dev, p)
        if dev.lifecycle == bulk.ACTIVE and settings is None:
            continue  # not changed (or only its AppKey, written by _write_keys)
        token = tokens.get(i) or {
            "contract_id": dev.contract_id,
            "token_alloc": dev.token_alloc,
            "token_state": dev.token_state,
            "token_end_at": dev.token_end_at,
        }
        if settings is None:
            key = (token["contract_id"], token["token_alloc"], token["token_state"], token["token_end_at"])
            grouped.setdefault(key, []).append(dev.id)
            continue
        params.append(
            {
                "b_id": dev.id,
                "b_lifecycle": bulk.ACTIVE,
                "b_contract_id": token["contract_id"],
                "b_token_alloc": token["token_alloc"],
                "b_token_state": token["token_state"],
                "b_token_end_at": token["token_end_at"],
                "b_activated_at": now,
                "b_now": now,
                "b_by": by,
            }
            | settings
        )
    if params:
        session.execute(_ACTIVATION_UPDATE, params)
    for (contract_id, alloc, state, end), ids in grouped.items():
        for start in range(0, len(ids), 5000):
            session.execute(
                update(Device)
                .where(Device.id.in_(ids[start : start + 5000]))
                .values(
                    lifecycle=bulk.ACTIVE,
                    contract_id=contract_id,
                    token_alloc=alloc,
                    token_state=state,
                    token_end_at=end,
                    activated_at=func.coalesce(Device.activated_at, now),
                    updated_at=now,
                    updated_by=by,
                )
                .execution_options(synchronize_session=False)
            )
    _stamp_join_and_profile(session, p, [dev.id for _, _, dev in going])


def _stamp_join_and_profile(session: Session, p: dict[str, Any], ids: list[int]) -> None:
    stamp: dict[str, Any] = {}
    if p.get("join_sealed"):
        stamp["join_eui"] = p["join_sealed"]
    if p.get("prof_sealed"):
        stamp["prof_id"] = p["prof_sealed"]
    if not stamp:
        return
    for start in range(0, len(ids), 5000):
        session.execute(
            update(Device)
            .where(Device.id.in_(ids[start : start + 5000]))
            .values(**stamp)
            .execution_options(synchronize_session=False)
        )


def _not_registered(eui: str, p: dict[str, Any]) -> str:
    return f"DevEUI: {eui} has not been registered. The device cannot be activated on JoinEUI: {p['join_eui']}."


def _settings_change(row: dict[str, Any], dev: _Dev, p: dict[str, Any]) -> dict[str, Any] | None:
    """The device's new settings (lat, lng, tags, devType) from the row and the call, or None
    when they change nothing. Tags are added (register, activate) or applied with the update's
    tagsOperation."""
    if len(row) == 1 and not p["tags"]:
        return None  # a bare {"d": devEui}: nothing to change
    lat = row.get("lat", dev.lat)
    lng = row.get("lng", dev.lng)
    given = (row.get("tags") or []) + p["tags"]
    operation = p.get("tags_operation") or "APPEND"
    if operation == "APPEND" or not given:
        tags = _merge_tags(dev.tags, given)
    elif operation == "REPLACE":
        tags = _merge_tags(None, given)
    else:
        drop = set(given)
        tags = tags_text([t for t in _stored_tags(dev.tags) if t not in drop])
    dev_type = row.get("t", dev.dev_type)
    if (lat, lng, tags, dev_type) == (dev.lat, dev.lng, dev.tags, dev.dev_type):
        return None
    return {"b_lat": lat, "b_lng": lng, "b_tags": tags, "b_dev_type": dev_type}


def _write_settings(
    session: Session, p: dict[str, Any], rows: list[tuple[dict[str, Any], _Dev]], now: datetime, by: str
) -> None:
    """The update kind's writes: one executemany of settings and editor, then the profId."""
    if not rows:
        return
    params = [
        (
            _settings_change(row, dev, p)
            or {"b_lat": dev.lat, "b_lng": dev.lng, "b_tags": dev.tags, "b_dev_type": dev.dev_type}
        )
        | {"b_id": dev.id, "b_now": now, "b_by": by}
        for row, dev in rows
    ]
    session.execute(_SETTINGS_UPDATE, params)
    _stamp_join_and_profile(session, p, [dev.id for _, dev in rows])


def _take_tokens(
    session: Session,
    ctx: JobContext,
    contract_id: int | None,
    waiting: list[tuple[int, _Dev]],
    outcomes: list[RowOutcome | None],
    now: datetime,
) -> tuple[set[int], dict[int, dict[str, Any]]]:
    """Tokens for the devices being activated on one contract, in row order, taken at once
    (`bulk.reserve_tokens`): the batch positions refused (their outcome becomes the error naming
    the contract) and the token columns of those granted."""
    p = ctx.params
    refusal = None
    if contract_id is None:
        refusal = "the application has no contract: name one with contractId or give the application a default contract"
    elif contract_id not in p["contracts"]:
        name = session.scalar(select(Contract.name).where(Contract.id == contract_id))
        refusal = f"contract {name!r} (id {contract_id}) is no longer one of the application's contracts"
    granted: dict[int, dict[str, Any]] = {}
    if refusal is None:
        assert contract_id is not None
        reservation = bulk.reserve_tokens(session, contract_id, p["dt"], p["group_path"], len(waiting), now)
        columns = reservation.columns(now)
        granted = {i: columns for i, _dev in waiting[: reservation.granted]}
        refusal = reservation.refusal
    refused = set()
    for i, dev in waiting[len(granted) :]:
        outcomes[i] = RowOutcome("errors", f"DevEUI: {dev.identifier} cannot be activated: {refusal}.", dev.identifier)
        refused.add(i)
    return refused, granted


# -- deactivate ----------------------------------------------------------------------------------------
def _deactivate(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = _devices(session, [row["d"] for _, row in good])
    now = utcnow()
    going: list[_Dev] = []
    for i, row in good:
        eui = row["d"]
        dev = found.get(eui)
        if dev is None or dev.device_type_id != p["dt"] or dev.lifecycle == bulk.DELETED:
            outcomes[i] = RowOutcome(
                "errors", f"DevEUI: {eui} has not been registered. The device cannot be deactivated.", eui
            )
        elif dev.lifecycle == bulk.DEACTIVATED:
            outcomes[i] = _PLAIN["notChanged"]
        else:
            outcomes[i] = _PLAIN["deactivated"]
            going.append(dev)
    # Never heard: it can no longer join, so nothing will bill it; its token goes back.
    silent = [bulk.Holder(d.id, d.contract_id, d.token_alloc) for d in going if d.last_seen_at is None]
    bulk.release_tokens(session, silent)
    ids = [d.id for d in going]
    for start in range(0, len(ids), 5000):
        session.execute(
            update(Device)
            .where(Device.id.in_(ids[start : start + 5000]))
            .values(lifecycle=bulk.DEACTIVATED, updated_at=now, updated_by=ctx.created_by)
            .execution_options(synchronize_session=False)
        )
    return _done(outcomes)


# -- update --------------------------------------------------------------------------------------------
def _update(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = _devices(session, [row["d"] for _, row in good])
    now = utcnow()
    prof_changes: set[int] = set()
    if p.get("prof_id") is not None:
        keyring = ctx.keys()
        ids = [d.id for d in found.values() if d.device_type_id == p["dt"]]
        for dev_id, sealed in _secrets(session, ids, Device.prof_id).items():
            current = keyring.decrypt(sealed, PROF_ID_PURPOSE).decode() if sealed else None
            if current != str(p["prof_id"]):
                prof_changes.add(dev_id)
    going: list[tuple[dict[str, Any], _Dev]] = []
    for i, row in good:
        eui = row["d"]
        dev = found.get(eui)
        if dev is None or dev.device_type_id != p["dt"] or dev.lifecycle == bulk.DELETED:
            outcomes[i] = RowOutcome(
                "errors", f"DevEUI: {eui} has not been registered. The device cannot be updated.", eui
            )
        elif _settings_change(row, dev, p) is None and dev.id not in prof_changes:
            outcomes[i] = _PLAIN["notChanged"]
        else:
            outcomes[i] = _PLAIN["updated"]
            going.append((row, dev))
    _write_settings(session, p, going, now, ctx.created_by)
    return _done(outcomes)


_STATS = {
    REGISTER: ("registered", "updated", "notChanged", "errors"),
    ACTIVATE: ("activated", "updated", "notChanged", "errors"),
    DEACTIVATE: ("deactivated", "notChanged", "errors"),
    UPDATE: ("updated", "notChanged", "errors"),
}
_HANDLERS = {REGISTER: _register, ACTIVATE: _activate, DEACTIVATE: _deactivate, UPDATE: _update}
BATCH_SIZE = 5000
# The Senet onboarding job kinds (registered by heron.runtime.job_kinds).
JOB_KINDS = [
    JobKind(kind, handler, _STATS[kind], batch_size=BATCH_SIZE, summary=_summary(kind))
    for kind, handler in _HANDLERS.items()
]


# -- activateOne: one device, inside the request ---------------------------------------------------------
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
    if prepared.get("e"):
        raise _RowRefused(prepared["e"])
    params = _params(call, actor, keyring, key_change=False)
    ctx = JobContext(-1, "", actor.ref, app.group_path, params, keyring)
    outcome = _activate(session, ctx, [(0, prepared)])[0]
    if outcome.stat == "errors":
        assert outcome.message is not None
        if outcome.message == _not_registered(prepared["d"], params):  # not in this application
            raise NotFound("Device EUI was not found")
        raise _RowRefused(outcome.message)
    audit.record(session, actor, "activate", _Ref(prepared["d"]), "device", app.group_path, {"devEui": prepared["d"]})
    return ACTIVATED_ONE


class _RowRefused(HeronError):
    status_code = 400


@dataclass(frozen=True)
class _Ref:
    id: str


# -- task status ---------------------------------------------------------------------------------------
def _latest_task_of_application(session: Session, prefix: str, app_eui: str) -> Job | None:
    """The seed's statusUrl examples end in the application EUI (`DevMgmtJobReq:00000000000100E0`),
    so a client may build the URL from its AppEUI: that names the application's latest task of
    the prefix's family (register, activate, deactivate; or update). Heron's own reqIds are tried
    first."""
    dt_id = session.scalar(select(DeviceType.id).where(DeviceType.app_eui == app_eui, DeviceType.network == _LORAWAN))
    if dt_id is None:
        return None
    kinds = (UPDATE,) if prefix == UPDATE_PREFIX else (REGISTER, ACTIVATE, DEACTIVATE)
    return session.scalar(
        select(Job)
        .where(Job.kind.in_(kinds), Job.lock_keys.contains(f",{lock_key(dt_id)},"))
        .order_by(Job.id.desc())
        .limit(1)
    )


def task_status(session: Session, actor: Actor, req_id: str | None) -> dict[str, Any]:
    """The Senet task status: 400 for a missing or malformed reqId, 404 for an unknown task or one
    ended more than 15 minutes ago, 403 for a task of another tenant (as the seed lists)."""
    if req_id is None or not req_id:
        raise invalid("reqId", "required")
    if not _REQ_ID.fullmatch(req_id):
        raise invalid("reqId", "must look like DevMgmtJobReq:<hex> or DevUpdateJobReq:<hex>")
    prefix, _, code = req_id.partition(":")
    code = code.upper()
    # Not the stored rows: a client polling a 10,000-row task must not fetch them each time.
    job = session.scalar(select(Job).where(Job.req_id == f"{prefix}:{code}"))
    if job is None and len(code) == 16:
        job = _latest_task_of_application(session, prefix, code)
    gone = job is None or job.kind not in KINDS
    if job is not None and job.ended_at is not None and job.ended_at < utcnow() - STATUS_KEPT:
        gone = True
    if gone or job is None:
        raise NotFound("No task could be found with the requested reqId.")
    if not actor.can("device:read", job.group_path):
        raise Forbidden("The API key is not authorized to get the status of the task.")
    body = status_body(engine.report(session, job))
    del body["reqId"]
    if job.state not in engine.FINISHED:
        body["result"]["status"] = ""
    elif job.state == "DONE_FAIL":
        body["result"]["msgs"].append(_INTERNAL[job.kind].format(skipped=job.total - job.processed))
    return body
