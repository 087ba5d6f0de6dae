"""The onboarding job kinds' batch handlers: set-based, one SELECT ... IN per batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from heron.db.base import UtcDateTime, utcnow
from heron.jobs.engine import JobContext, JobKind, RowOutcome
from heron.registry import bulk
from heron.registry.identifiers import mask_key
from heron.registry.models import Contract, Device, DeviceType
from heron.registry.onboarding.calls import (
    ACTIVATE,
    APP_KEY_PURPOSE,
    DEACTIVATE,
    PROF_ID_PURPOSE,
    REGISTER,
    UPDATE,
    tags_text,
)
from heron.registry.onboarding.rows import DEV_TYPE, ERROR, EUI, SEALED_APP_KEY
from heron.tenancy.models import Group

_LORAWAN = bulk.LORAWAN


def _stored_tags(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


_SUMMARY = {
    REGISTER: ("registration", (("registered", "Registered"), ("updated", "Updated"), ("notChanged", "Not Changed"))),
    ACTIVATE: ("activation", (("activated", "Activated"), ("updated", "Updated"), ("notChanged", "Not Changed"))),
    DEACTIVATE: ("deactivation", (("deactivated", "Deactivated"), ("notChanged", "Not Changed"))),
    UPDATE: ("update", (("updated", "Updated"), ("notChanged", "Not Changed"))),
}


def _summary(kind: str) -> Callable[[dict[str, Any], dict[str, int]], str]:
    what, stats = _SUMMARY[kind]

    def summary(params: dict[str, Any], counts: dict[str, int]) -> str:
        parts = " ".join(f"{label}: {counts.get(key, 0)}" for key, label in stats)
        return f"Device {what} on App EUI: {params['app_eui']} completed. {parts} Errors: {counts.get('errors', 0)}"

    return summary


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
        if row.get(ERROR):
            outcomes[i] = RowOutcome("errors", row[ERROR], row.get(EUI))
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


def _update_by_id(**values: Any) -> Any:
    """An executemany UPDATE of devices by `b_id`, setting `values` and the editor."""
    table = Device.__table__
    assert isinstance(table, Table)
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(**values, updated_at=bindparam("b_now"), updated_by=bindparam("b_by"))
        .execution_options(synchronize_session=False)
    )


_SETTINGS: dict[str, Any] = {
    name: bindparam(f"b_{name}") for name in ("lat", "lng", "tags", "dev_type")
}  # _settings_change's
_SETTINGS_UPDATE = _update_by_id(**_SETTINGS)


def _key_changed_message(eui: str, old: str, new: str) -> str:
    return f"The AppKey for DevEUI: {eui} has been updated. Old AppKey: {mask_key(old)} New AppKey: {mask_key(new)}."


# -- register ------------------------------------------------------------------------------------------
def _register(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = bulk.existing(session, _LORAWAN, [row[EUI] for _, row in good])
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
        eui = row[EUI]
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
                "dev_type": row.get(DEV_TYPE),
                "app_key": row[SEALED_APP_KEY],
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
            outcomes[i] = RowOutcome("updated", change.message, batch[i][1][EUI]) if change else _PLAIN["notChanged"]
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
        eui = row[EUI]
        new = keyring.decrypt(row[SEALED_APP_KEY], APP_KEY_PURPOSE).decode()
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
            out[i] = _KeyChange(dev_id, row[SEALED_APP_KEY], _key_changed_message(eui, old, new))
    return out


def _write_keys(session: Session, changes: list[_KeyChange], now: Any, by: str) -> None:
    if not changes:
        return
    session.execute(
        _update_by_id(app_key=bindparam("b_key")),
        [{"b_id": c.dev_id, "b_key": c.sealed, "b_now": now, "b_by": by} for c in changes],
    )


# -- activate ------------------------------------------------------------------------------------------
def activate_batch(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = _devices(session, [row[EUI] for _, row in good])
    now = utcnow()
    mine: list[tuple[int, dict[str, Any], _Dev]] = []
    others: list[tuple[int, str, _Dev]] = []
    for i, row in good:
        dev = found.get(row[EUI])
        if dev is None or (dev.device_type_id == p["dt"] and dev.lifecycle == bulk.DELETED):
            outcomes[i] = RowOutcome("errors", not_registered(row[EUI], p), row[EUI])
        elif dev.device_type_id != p["dt"]:
            others.append((i, row[EUI], dev))
        else:
            mine.append((i, row, dev))
    if others:
        visible = _app_euis(session, {d.device_type_id for _, _, d in others}, p["read_scopes"])
        for i, eui, dev in others:
            other = visible.get(dev.device_type_id)
            if other is None or dev.lifecycle == bulk.REGISTERED or dev.lifecycle == bulk.DELETED:
                message = not_registered(eui, p)
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
    keyed = [(i, row, dev.id) for i, row, dev in mine if SEALED_APP_KEY in row]
    keys = _key_decisions(session, ctx, keyed, outcomes) if keyed else {}
    # The rows still standing: activate them, or count them updated / not changed when active.
    to_token: dict[int | None, list[tuple[int, _Dev]]] = {}
    going: list[tuple[int, dict[str, Any], _Dev]] = []
    for i, row, dev in mine:
        if outcomes[i] is not None:
            continue  # refused AppKey change
        change = keys.get(i)
        note: str | None = change.message if change else None
        entity: str | None = row[EUI] if change else None
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


_ACTIVATION_UPDATE = _update_by_id(
    lifecycle=bindparam("b_lifecycle"),
    contract_id=bindparam("b_contract_id"),
    token_alloc=bindparam("b_token_alloc"),
    token_state=bindparam("b_token_state"),
    token_end_at=bindparam("b_token_end_at"),
    activated_at=func.coalesce(Device.__table__.c.activated_at, bindparam("b_activated_at", type_=UtcDateTime())),
    **_SETTINGS,
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


def not_registered(eui: str, p: dict[str, Any]) -> str:
    return f"DevEUI: {eui} has not been registered. The device cannot be activated on JoinEUI: {p['join_eui']}."


def _settings_change(row: dict[str, Any], dev: _Dev, p: dict[str, Any]) -> dict[str, Any] | None:
    """The device's new settings (lat, lng, tags, devType) from the row and the call, or None
    when they change nothing. Tags are added (register, activate) or applied with the update's
    tagsOperation."""
    if len(row) == 1 and not p["tags"]:
        return None  # a bare {EUI: devEui}: nothing to change
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
    dev_type = row.get(DEV_TYPE, dev.dev_type)
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


def _in_application(dev: _Dev, p: dict[str, Any]) -> bool:
    return dev.device_type_id == p["dt"] and dev.lifecycle != bulk.DELETED


def _unregistered(eui: str, action: str) -> RowOutcome:
    return RowOutcome("errors", f"DevEUI: {eui} has not been registered. The device cannot be {action}.", eui)


# -- deactivate ----------------------------------------------------------------------------------------
def _deactivate(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    p = ctx.params
    outcomes, good = _errors_of(batch)
    found = _devices(session, [row[EUI] for _, row in good])
    now = utcnow()
    going: list[_Dev] = []
    for i, row in good:
        eui = row[EUI]
        dev = found.get(eui)
        if dev is None or not _in_application(dev, p):
            outcomes[i] = _unregistered(eui, "deactivated")
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
    found = _devices(session, [row[EUI] for _, row in good])
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
        eui = row[EUI]
        dev = found.get(eui)
        if dev is None or not _in_application(dev, p):
            outcomes[i] = _unregistered(eui, "updated")
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
_HANDLERS = {REGISTER: _register, ACTIVATE: activate_batch, DEACTIVATE: _deactivate, UPDATE: _update}
BATCH_SIZE = 5000
# The Senet onboarding job kinds (registered by heron.runtime.job_kinds).
JOB_KINDS = [
    JobKind(kind, handler, _STATS[kind], batch_size=BATCH_SIZE, summary=_summary(kind))
    for kind, handler in _HANDLERS.items()
]
