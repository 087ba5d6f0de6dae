"""The native bulk operations (Sigfox v2 `/devices/bulk...` and the GUI's series operations) as
kinds of the one job engine: create, edit, transfer, replace, unsubscribe, delete.

Submission (`submit_*`) runs in the caller's request: it checks the caller's rights on the
target device type, encrypts root keys before anything is stored (a job's input never holds a
key in clear), records the caller's `device:write` subtrees in the job's params and picks the
lock keys (the device types the job touches; a transfer locks both ends). Each `prepare_*` does
the part whose cost grows with the rows (checks, sealing, reading the named devices) on a read
session and returns the `Store` that writes the job: on SQLite a write transaction holds the
one write lock, so the station ingest must not wait behind 100,000 rows being sealed. The handlers run
later in a job runner, batch by batch, each batch one transaction with set-based statements
(`registry.bulk`); a row naming a device outside the recorded subtrees fails as "unknown
device", exactly like a missing one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Forbidden, InvalidInput, NotFound
from heron.jobs import engine, queries
from heron.jobs.engine import JobContext, JobKind, RowOutcome
from heron.jobs.models import Job
from heron.keys import Keyring
from heron.registry import contracts as contracts_service
from heron.registry import device_types as device_types_service
from heron.registry.bulk import (
    DELETED,
    SIGFOX,
    TOKEN_OFF,
    ExistingDevice,
    Holder,
    adjust_counters,
    check_settings,
    existing,
    grant_existing,
    insert_devices,
    new_row,
    release_tokens,
    reserve_tokens,
    sort_key,
    unsubscribe,
    update_devices,
)
from heron.registry.devices import ENCRYPTED, parse_ref, writable_device_type
from heron.registry.identifiers import SigfoxId, parse_pac
from heron.registry.models import Contract, Device, DeviceType
from heron.tenancy import audit
from heron.tenancy.access import Actor, in_any_subtree
from heron.tenancy.models import Group
from heron.tenancy.owned import MAX_EPOCH_MS, check_name

CREATE, EDIT, TRANSFER = "devices.create", "devices.edit", "devices.transfer"
REPLACE, UNSUBSCRIBE, DELETE = "devices.replace", "devices.unsubscribe", "devices.delete"
RESTART, SUSPEND, RESUME = "devices.restart", "devices.suspend", "devices.resume"
KINDS = (CREATE, EDIT, TRANSFER, REPLACE, UNSUBSCRIBE, DELETE, RESTART, SUSPEND, RESUME)
SUCCESS, ERRORS = "success", "errors"
MAX_ROWS = 100_000  # per request; a series file of 50 MB holds fewer
UNKNOWN = "Unknown device"

# API (camelCase) row fields -> `check_settings` attribute names.
_SETTINGS = {
    "name": "name",
    "lat": "lat",
    "lng": "lng",
    "activable": "activable",
    "automaticRenewal": "automatic_renewal",
    "prototype": "prototype",
    "productCertificate": "product_certificate",
}


def _ok() -> RowOutcome:
    return RowOutcome(SUCCESS)


def _error(entity: Any, message: str) -> RowOutcome:
    return RowOutcome(ERRORS, message, str(entity)[:40] if entity is not None else None)


def _reason(exc: InvalidInput) -> str:
    if exc.errors:
        e = exc.errors[0]
        return f"{e.field}: {e.message}" if e.field else e.message
    return exc.message


# -- what a handler knows about the submitter -----------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """The subtrees where the submitter held `device:write` when the job was submitted."""

    paths: tuple[str, ...]

    def allows(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.paths)


def _common_path(paths: Iterable[str]) -> str:
    """The deepest group path that is an ancestor-or-self of every one of `paths`."""
    common: list[str] | None = None
    for path in paths:
        segments = path.strip("/").split("/")
        if common is None:
            common = segments
            continue
        n = 0
        while n < min(len(common), len(segments)) and common[n] == segments[n]:
            n += 1
        common = common[:n]
    return "/" + "".join(f"{s}/" for s in common) if common else "/"


@dataclass
class _Batch:
    """The devices a batch names, with their group paths and the submitter's scope."""

    session: Session
    ctx: JobContext
    now: datetime = field(default_factory=utcnow)

    @property
    def scope(self) -> Scope:
        return Scope(tuple(self.ctx.params.get("scope", [])))

    def found(self, network: str, identifiers: list[str]) -> dict[str, ExistingDevice]:
        """The named devices the submitter may write (others are left out: "unknown")."""
        rows = existing(self.session, network, identifiers, for_update=True)
        paths = _group_paths(self.session, {d.group_id for d in rows.values()})
        scope = self.scope
        return {k: d for k, d in rows.items() if scope.allows(paths[d.group_id])}

    def stamp(self) -> dict[str, Any]:
        return {"updated_at": self.now, "updated_by": self.ctx.created_by}


def _group_paths(session: Session, group_ids: Iterable[int]) -> dict[int, str]:
    ids = list(set(group_ids))
    if not ids:
        return {}
    return {gid: path for gid, path in session.execute(select(Group.id, Group.path).where(Group.id.in_(ids)))}


@dataclass(frozen=True)
class _TypeInfo:
    id: int
    network: str
    group_id: int
    group_path: str
    contract_id: int | None


def _type_infos(session: Session, ids: Iterable[int]) -> dict[int, _TypeInfo]:
    rows = session.execute(
        select(DeviceType.id, DeviceType.network, DeviceType.group_id, Group.path, DeviceType.contract_id)
        .join(Group, Group.id == DeviceType.group_id)
        .where(DeviceType.id.in_(list(set(ids))))
    )
    return {r[0]: _TypeInfo(*r) for r in rows}


def _resolve(batch: list[tuple[int, dict[str, Any]]], key: str = "id") -> list[tuple[int, str, str] | RowOutcome]:
    """Each row's (index, network, identifier), or its error outcome."""
    out: list[tuple[int, str, str] | RowOutcome] = []
    for i, (_seq, row) in enumerate(batch):
        if "error" in row:
            out.append(_error(row.get(key), row["error"]))
            continue
        raw = row.get(key)
        try:
            network, identifier = parse_ref(raw if isinstance(raw, str) else "", key, "body")
        except InvalidInput as exc:
            out.append(_error(raw, _reason(exc)))
            continue
        out.append((i, network, identifier))
    return out


def _lookup(b: _Batch, resolved: list[tuple[int, str, str] | RowOutcome]) -> dict[tuple[str, str], ExistingDevice]:
    by_network: dict[str, list[str]] = defaultdict(list)
    for item in resolved:
        if isinstance(item, tuple):
            by_network[item[1]].append(item[2])
    out: dict[tuple[str, str], ExistingDevice] = {}
    for network, identifiers in by_network.items():
        for identifier, d in b.found(network, identifiers).items():
            out[(network, identifier)] = d
    return out


def _named(
    b: _Batch, batch: list[tuple[int, dict[str, Any]]]
) -> tuple[list[RowOutcome | None], list[tuple[int, str, str, ExistingDevice]]]:
    """The rows of a batch that name existing devices the submitter may write, as (index,
    network, identifier, device); the outcomes list already holds the other rows' errors
    (bad ids, a device twice in the batch, "Unknown device")."""
    resolved = _resolve(batch)
    _one_per_device(resolved)
    found = _lookup(b, resolved)
    outcomes: list[RowOutcome | None] = [x if isinstance(x, RowOutcome) else None for x in resolved]
    named = []
    for item in resolved:
        if isinstance(item, tuple):
            i, network, identifier = item
            d = found.get((network, identifier))
            if d is None:
                outcomes[i] = _error(identifier, UNKNOWN)
            else:
                named.append((i, network, identifier, d))
    return outcomes, named


def _settings_of(row: dict[str, Any]) -> dict[str, Any]:
    given = {_SETTINGS[k]: v for k, v in row.items() if k in _SETTINGS}
    cert = given.get("product_certificate")
    if isinstance(cert, dict):
        given["product_certificate"] = cert.get("key")
    return given


def _one_per_device(resolved: list[tuple[int, str, str] | RowOutcome]) -> None:
    """A device named twice in a batch: the later rows fail (rows of other batches are caught
    by the state they find)."""
    seen: set[tuple[str, str]] = set()
    for pos, item in enumerate(resolved):
        if isinstance(item, tuple):
            ref = (item[1], item[2])
            if ref in seen:
                resolved[pos] = _error(item[2], f"device {item[2]} appears twice in this batch")
            seen.add(ref)


# -- create ---------------------------------------------------------------------------------------
def _create(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    b, p = _Batch(session, ctx), ctx.params
    defaults = check_settings(SIGFOX, _create_defaults(p))  # checked at submission already
    template = new_row(
        network=SIGFOX,
        identifier="",
        device_type_id=p["deviceTypeId"],
        group_id=p["groupId"],
        automatic_renewal=defaults["automatic_renewal"],
        created_by=ctx.created_by,
        now=b.now,
    )
    template.update(defaults)
    prefix = p.get("prefix") or ""
    outcomes: list[RowOutcome | None] = [None] * len(batch)
    candidates: list[tuple[int, dict[str, Any]]] = []
    for i, (seq, row) in enumerate(batch):
        if "error" in row:
            outcomes[i] = _error(row.get("id"), row["error"])
            continue
        identifier: str = row["id"]  # normalized at submission
        if _SETTINGS.keys() & row.keys():
            try:
                given = _settings_of(row)
                given["name"] = _name(prefix, given.get("name"), seq, identifier)
                values = check_settings(SIGFOX, given)
            except InvalidInput as exc:
                outcomes[i] = _error(identifier, _reason(exc))
                continue
        else:  # the usual series line: the name is prefix + increment (at most 40 + 6 characters)
            values = {"name": check_name(_name(prefix, None, seq, identifier))}
        new = template | values
        new.update(identifier=identifier, sort_key=sort_key(identifier), pac=row["pacCipher"])
        candidates.append((i, new))
    seen: set[str] = set()
    taken = existing(session, SIGFOX, [n["identifier"] for _, n in candidates])
    fresh: list[tuple[int, dict[str, Any]]] = []
    for i, new in candidates:
        ident = new["identifier"]
        if ident in taken or ident in seen:
            outcomes[i] = _error(ident, f"device {ident} already exists")
        else:
            seen.add(ident)
            fresh.append((i, new))
    wanting = [(i, new) for i, new in fresh if new["activable"]] if p.get("contractId") else []
    if wanting:
        res = reserve_tokens(session, p["contractId"], p["deviceTypeId"], ctx.group_path, len(wanting), b.now)
        for i, new in wanting[res.granted :]:
            outcomes[i] = _error(new["identifier"], res.refusal or "no token left")
        for _i, new in wanting[: res.granted]:
            new.update(res.columns(b.now))
    rows = [new for i, new in fresh if outcomes[i] is None]
    insert_devices(session, rows)
    return [o or _ok() for o in outcomes]


def _create_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """The job-wide settings of a bulk creation, as `check_settings` takes them."""
    return {
        "activable": params["activable"],
        "automatic_renewal": params["automaticRenewal"],
        "prototype": params["prototype"],
        "product_certificate": params["productCertificate"],
    }


def _name(prefix: str, name: Any, seq: int, identifier: str) -> Any:
    """Sigfox `prefix` + the row's name; without a name, prefix + increment (the row's position,
    from 1) as the GUI's New series does; without either, the device id."""
    if name is not None:
        return prefix + name if isinstance(name, str) else name
    return f"{prefix}{seq + 1}" if prefix else identifier


# -- edit -----------------------------------------------------------------------------------------
def _edit(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    b = _Batch(session, ctx)
    outcomes, named = _named(b, batch)
    planned: list[tuple[int, ExistingDevice, dict[str, Any]]] = []
    for i, network, identifier, d in named:
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, f"device {identifier} is deleted: restore it first")
            continue
        try:
            values = check_settings(network, _settings_of(batch[i][1]))
        except InvalidInput as exc:
            outcomes[i] = _error(identifier, _reason(exc))
            continue
        planned.append((i, d, values))
    # Sigfox devices made activable without a token take one, per device type (its contract).
    needing: dict[int, list[tuple[int, ExistingDevice]]] = defaultdict(list)
    for i, d, values in planned:
        if values.get("activable") is True and d.contract_id is None:
            needing[d.device_type_id].append((i, d))
    infos = _type_infos(session, needing)
    for dt_id, items in needing.items():
        info = infos[dt_id]
        if info.network != SIGFOX or info.contract_id is None:
            continue
        res = reserve_tokens(session, info.contract_id, dt_id, info.group_path, len(items), b.now)
        for i, d in items[res.granted :]:
            outcomes[i] = _error(d.identifier, res.refusal or "no token left")
        grant_existing(session, res, [d.id for _i, d in items[: res.granted]], b.now)
    update_devices(session, [{"b_id": d.id} | values | b.stamp() for i, d, values in planned if outcomes[i] is None])
    return [o or _ok() for o in outcomes]


# -- transfer -------------------------------------------------------------------------------------
def _transfer(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """Move devices to the target device type. A device holding a token on a contract the target
    may use keeps it (its end date too); others give theirs back and, when activable, take one
    on the target's default contract. A device refused a token is not moved."""
    b, p = _Batch(session, ctx), ctx.params
    outcomes, named = _named(b, batch)
    target = _type_infos(session, [p["deviceTypeId"]])[p["deviceTypeId"]]
    usable_cache: dict[int, bool] = {}

    def usable(contract_id: int) -> bool:
        if contract_id not in usable_cache:
            contract, dt = session.get(Contract, contract_id), session.get(DeviceType, target.id)
            assert contract is not None and dt is not None
            usable_cache[contract_id] = contracts_service.usable(session, contract, dt)
        return usable_cache[contract_id]

    moving: list[tuple[int, ExistingDevice, bool]] = []  # (index, device, wants a new token)
    for i, network, identifier, d in named:
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, f"device {identifier} is deleted: restore it first")
        elif network != target.network:
            outcomes[i] = _error(identifier, f"the target device type is {target.network}, the device {network}")
        elif d.device_type_id == target.id:
            outcomes[i] = _error(identifier, f"device {identifier} is already in this device type")
        else:
            row = batch[i][1]
            activable = row.get("activable", p.get("activable", True))
            if not isinstance(activable, bool):
                outcomes[i] = _error(identifier, "activable: must be true or false")
                continue
            keeps = d.contract_id is not None and usable(d.contract_id)
            wants = not keeps and (activable or d.contract_id is not None) and target.contract_id is not None
            moving.append((i, d, wants))
    keeping = [d for i, d, wants in moving if d.contract_id is not None and not wants and usable(d.contract_id)]
    giving_back = [(i, d) for i, d, wants in moving if d.contract_id is not None and d not in keeping]
    adjust_counters(session, [Holder(d.id, d.contract_id, d.token_alloc) for _i, d in giving_back], -1)
    wanting = [(i, d) for i, d, wants in moving if wants]
    granted: list[int] = []
    if wanting and target.contract_id is not None:
        res = reserve_tokens(session, target.contract_id, target.id, target.group_path, len(wanting), b.now)
        refused = wanting[res.granted :]
        for i, d in refused:
            outcomes[i] = _error(d.identifier, res.refusal or "no token left")
        back = [Holder(d.id, d.contract_id, d.token_alloc) for _i, d in refused if d.contract_id is not None]
        adjust_counters(session, back, +1)  # refused devices stay where they were, token and all
        granted = [d.id for _i, d in wanting[: res.granted]]
        grant_existing(session, res, granted, b.now)
    moved = [d for i, d, _w in moving if outcomes[i] is None]
    update_devices(
        session, [{"b_id": d.id, "device_type_id": target.id, "group_id": target.group_id} | b.stamp() for d in moved]
    )
    dropped = [d.id for i, d in giving_back if outcomes[i] is None and d.id not in set(granted)]
    if dropped:
        session.execute(
            update(Device)
            .where(Device.id.in_(dropped))
            .values(contract_id=None, token_alloc=None, token_state=TOKEN_OFF)
        )
    # A kept token stays on its contract, but the allocation it drew on may not apply any more
    # (the old device type's own, or a group's outside the target's ancestry): it leaves that
    # quota and counts on the contract alone.
    ancestors = {f"g:{g}" for g in target.group_path.strip("/").split("/")}
    stale = [d for d in keeping if d.token_alloc is not None and d.token_alloc not in ancestors]
    if stale:
        adjust_counters(session, [Holder(d.id, d.contract_id, d.token_alloc) for d in stale], -1, contracts=False)
        session.execute(update(Device).where(Device.id.in_([d.id for d in stale])).values(token_alloc=None))
    return [o or _ok() for o in outcomes]


# -- replace --------------------------------------------------------------------------------------
def _replace(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """The device row takes the new id: its name, settings, token and history (keyed by the
    row) stay; the PAC and NAK belonged to the old hardware and are cleared; the sequence
    number starts over. The old id becomes free."""
    b = _Batch(session, ctx)
    outcomes, named = _named(b, batch)
    targets: dict[int, str] = {}
    for i, network, identifier, d in named:
        raw = batch[i][1].get("targetId")
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, f"device {identifier} is deleted: restore it first")
        elif network != SIGFOX:
            outcomes[i] = _error(identifier, "only SIGFOX devices are replaced")
        else:
            try:
                new = str(SigfoxId.parse(raw, "targetDeviceId"))
            except InvalidInput as exc:
                outcomes[i] = _error(identifier, _reason(exc))
                continue
            if new == identifier:
                outcomes[i] = _error(identifier, "targetDeviceId: is the device's own id")
            elif new in targets.values():
                outcomes[i] = _error(identifier, f"targetDeviceId: {new} appears twice in this batch")
            else:
                targets[i] = new
    taken = existing(session, SIGFOX, list(targets.values()))
    devices_at = {i: d for i, _network, _identifier, d in named}
    rows = []
    for i, new in targets.items():
        d = devices_at[i]
        if new in taken:
            outcomes[i] = _error(d.identifier, f"targetDeviceId: device {new} already exists")
            continue
        rows.append(
            {"b_id": d.id, "identifier": new, "sort_key": sort_key(new), "pac": None, "nak": None}
            | {"sequence_number": None}
            | b.stamp()
        )
    update_devices(session, rows)
    return [o or _ok() for o in outcomes]


# -- unsubscribe and delete -----------------------------------------------------------------------
def _unsubscribe(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """The token ends at `unsubscriptionTime` (now when absent) and is not renewed; a time
    already past gives it back now (`bulk.unsubscribe`, as `PUT /devices/{id}/unsubscribe`)."""
    b = _Batch(session, ctx)
    outcomes, named = _named(b, batch)
    now_ms = int(b.now.timestamp() * 1000)
    items: list[tuple[Holder, datetime]] = []
    for i, _network, identifier, d in named:
        when = batch[i][1].get("unsubscriptionTime", now_ms)
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, UNKNOWN)
        elif d.contract_id is None:
            outcomes[i] = _error(identifier, f"device {identifier} holds no token")
        elif isinstance(when, bool) or not isinstance(when, int) or not 0 <= when <= MAX_EPOCH_MS:
            outcomes[i] = _error(identifier, "unsubscriptionTime: must be epoch milliseconds")
        else:
            items.append((Holder(d.id, d.contract_id, d.token_alloc), datetime.fromtimestamp(when / 1000, UTC)))
    unsubscribe(session, items, b.now)
    update_devices(session, [{"b_id": h.id} | b.stamp() for h, _when in items])
    return [o or _ok() for o in outcomes]


def _live(b: _Batch, batch: list[tuple[int, dict[str, Any]]]) -> tuple[list[RowOutcome | None], list[ExistingDevice]]:
    """`_named`, with a deleted device's row an "Unknown device" error: the devices a job that
    acts on every live device (delete, suspend, resume) acts on."""
    outcomes, named = _named(b, batch)
    live = []
    for i, _network, identifier, d in named:
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, UNKNOWN)
        else:
            live.append(d)
    return outcomes, live


def _delete(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """Soft delete (restorable until purged); the token is given back."""
    b = _Batch(session, ctx)
    outcomes, gone = _live(b, batch)
    release_tokens(session, [Holder(d.id, d.contract_id, d.token_alloc) for d in gone])
    update_devices(session, [{"b_id": d.id, "lifecycle": DELETED, "deleted_at": b.now} | b.stamp() for d in gone])
    return [o or _ok() for o in outcomes]


# -- restart, suspend, resume (Sigfox `deviceActionJob`) -------------------------------------------
def _restart(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """A device whose token ended (expired, unsubscribed, given back) takes a new one on its
    device type's default contract, N per device type at once, as a new registration would; a
    device still holding its token is running already (success, unchanged)."""
    b = _Batch(session, ctx)
    outcomes, named = _named(b, batch)
    needing: dict[int, list[tuple[int, ExistingDevice]]] = defaultdict(list)
    for i, network, identifier, d in named:
        if d.lifecycle == DELETED:
            outcomes[i] = _error(identifier, UNKNOWN)
        elif d.contract_id is not None:
            continue
        elif network != SIGFOX:
            outcomes[i] = _error(identifier, "a LORAWAN device takes its token on activation, not on restart")
        elif not d.activable:
            outcomes[i] = _error(identifier, f"device {identifier} is not activable")
        else:
            needing[d.device_type_id].append((i, d))
    infos = _type_infos(session, needing)
    granted: list[int] = []
    for dt_id, items in needing.items():
        info = infos[dt_id]
        if info.contract_id is None:
            for i, d in items:
                outcomes[i] = _error(d.identifier, "its device type has no contract")
            continue
        res = reserve_tokens(session, info.contract_id, dt_id, info.group_path, len(items), b.now)
        for i, d in items[res.granted :]:
            outcomes[i] = _error(d.identifier, res.refusal or "no token left")
        ids = [d.id for _i, d in items[: res.granted]]
        grant_existing(session, res, ids, b.now)
        granted += ids
    update_devices(session, [{"b_id": device_id} | b.stamp() for device_id in granted])
    return [o or _ok() for o in outcomes]


def _suspension(suspended: bool) -> Any:
    """Suspend (the store counts the device's frames as undelivered and keeps none) or resume."""

    def handler(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
        b = _Batch(session, ctx)
        outcomes, changing = _live(b, batch)
        update_devices(session, [{"b_id": d.id, "suspended": suspended} | b.stamp() for d in changing])
        return [o or _ok() for o in outcomes]

    return handler


# The native bulk job kinds (registered by heron.runtime.job_kinds).
JOB_KINDS = [
    JobKind(name, handler, (SUCCESS, ERRORS), ERRORS, batch_size=5000)
    for name, handler in (
        (CREATE, _create),
        (EDIT, _edit),
        (TRANSFER, _transfer),
        (REPLACE, _replace),
        (UNSUBSCRIBE, _unsubscribe),
        (DELETE, _delete),
        (RESTART, _restart),
        (SUSPEND, _suspension(True)),
        (RESUME, _suspension(False)),
    )
]


# -- submission -----------------------------------------------------------------------------------
# The fields a row of each kind may carry (Sigfox v2 names; series files add `line` and, for a bad
# line, `error`). Anything else is refused with 400 naming it: a row is stored with its job, so an
# unexpected field (a NAK, an AppKey) must never reach the database in clear.
ROW_FIELDS = {
    CREATE: frozenset({"id", "pac", "name", "lat", "lng", "automaticRenewal", "activable"}),
    EDIT: frozenset({"id", "name", "lat", "lng", "activable", "automaticRenewal", "prototype", "productCertificate"}),
    TRANSFER: frozenset({"id", "keepHistory", "activable"}),
    REPLACE: frozenset({"deviceId", "targetDeviceId", "id", "targetId"}),
    UNSUBSCRIBE: frozenset({"id", "unsubscriptionTime"}),
    DELETE: frozenset({"id"}),
    RESTART: frozenset({"id"}),
    SUSPEND: frozenset({"id"}),
    RESUME: frozenset({"id"}),
}
SERIES_FIELDS = frozenset({"line", "error"})
ROW_FIELDS_IGNORED = frozenset({"payloadEncryption"})  # Sigfox fields Heron accepts and drops


def _check_rows(rows: list[Any], kind: str) -> list[dict[str, Any]]:
    if not rows:
        raise InvalidInput.field("data", "must hold at least one row")
    if len(rows) > MAX_ROWS:
        raise InvalidInput.field("data", f"must hold at most {MAX_ROWS} rows per job")
    allowed = ROW_FIELDS[kind] | SERIES_FIELDS
    out = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            out.append({"error": "a row must be an object", "id": None})
            continue
        unknown = [k for k in row if k not in allowed and k not in ROW_FIELDS_IGNORED]
        if unknown:
            raise InvalidInput.field(f"data[{n}].{unknown[0]}", "unknown field")
        out.append({k: v for k, v in row.items() if k in allowed})
    return out


def _target(session: Session, actor: Actor, device_type_id: int) -> _TypeInfo:
    dt, group = writable_device_type(session, actor, device_type_id)
    return _TypeInfo(dt.id, dt.network, group.id, group.path, dt.contract_id)


def _submit(
    session: Session,
    actor: Actor,
    kind: str,
    rows: engine.EncodedRows,
    lock_types: Iterable[int],
    group_path: str,
    params: dict[str, Any],
    callback: tuple[str | None, str | None] = (None, None),
    scope: list[str] | None = None,
) -> Job:
    params = params | {"scope": actor.scopes("device:write") if scope is None else scope}
    job = engine.submit(
        session,
        kind=kind,
        created_by=actor.ref,
        group_path=group_path,
        rows=rows,
        lock_keys=sorted({f"dt:{t}" for t in lock_types}),
        params=params,
        req_id_prefix="",
        callback_url=callback[0],
        callback_headers=callback[1],
    )
    audit.record(session, actor, "submit", job, "job", group_path, {"kind": kind, "total": rows.count})
    return job


Store = Callable[[Session], Job]


def submit_create(session: Session, actor: Actor, keyring: Keyring, **kwargs: Any) -> Job:
    return prepare_create(session, actor, keyring, **kwargs)(session)


def prepare_create(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    *,
    device_type_id: int,
    rows: list[Any],
    prefix: str | None = None,
    product_certificate: str | None = None,
    prototype: bool = False,
    activable: bool = True,
    automatic_renewal: bool | None = None,
    name: str | None = None,
) -> Store:
    """New devices in a SIGFOX device type (`POST /devices/bulk`, New series). Each row's PAC is
    checked and encrypted, and its id normalized, here; a bad one becomes that row's error."""
    target = _target(session, actor, device_type_id)
    if target.network != SIGFOX:
        raise InvalidInput.field("deviceTypeId", f"is a {target.network} device type; bulk creation is for SIGFOX")
    if prefix is not None and len(prefix) > 40:
        raise InvalidInput.field("prefix", "must be at most 40 characters")
    dt = session.get(DeviceType, device_type_id)
    assert dt is not None
    prepared = []
    seal = keyring.encrypter(ENCRYPTED["pac"])
    for row in _check_rows(rows, CREATE):
        if "error" in row:
            prepared.append(row)
            continue
        out = {k: v for k, v in row.items() if k != "pac"}
        try:
            raw_id = row.get("id")  # a SigfoxId (a series file's) is valid by construction
            out["id"] = str(raw_id if isinstance(raw_id, SigfoxId) else SigfoxId.parse(raw_id, "id"))
            out["pacCipher"] = seal(parse_pac(row.get("pac"), "pac").encode())
        except InvalidInput as exc:
            out = {"id": row.get("id"), "error": _reason(exc)}
        prepared.append(out)
    params = {
        "deviceTypeId": target.id,
        "groupId": target.group_id,
        "contractId": target.contract_id,
        "prefix": prefix,
        "productCertificate": product_certificate,
        "prototype": prototype,
        "activable": activable,
        "automaticRenewal": dt.automatic_renewal if automatic_renewal is None else automatic_renewal,
        "name": name,
    }
    check_settings(SIGFOX, _create_defaults(params))  # a bad job-wide setting is the caller's 400

    encoded = engine.encode_rows(prepared)

    def store(session: Session) -> Job:
        _target(session, actor, device_type_id)  # still the caller's (cheap; the rows were the cost)
        return _submit(session, actor, CREATE, encoded, [target.id], target.group_path, params)

    return store


def _named_devices(
    session: Session, actor: Actor, rows: list[dict[str, Any]], key: str = "id", scope: list[str] | None = None
) -> tuple[set[int], str]:
    """The device types of the devices the rows name (the job's locks) and the deepest group
    holding them all (where the job is filed), among those the caller can write (in `scope`,
    when given)."""
    by_network: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        raw = row.get(key)
        if "error" not in row and isinstance(raw, str):
            try:
                network, identifier = parse_ref(raw, key, "body")
            except InvalidInput:
                continue
            by_network[network].append(identifier)
    found = [d for network, ids in by_network.items() for d in existing(session, network, ids).values()]
    paths = _group_paths(session, {d.group_id for d in found})
    allowed = Scope(tuple(actor.scopes("device:write") if scope is None else scope))
    mine = [d for d in found if allowed.allows(paths[d.group_id])]
    filed = _common_path(paths[d.group_id] for d in mine) if mine else _common_path(allowed.paths)
    return {d.device_type_id for d in mine}, filed


def group_scope(session: Session, actor: Actor, group_id: int) -> list[str]:
    """The `groupId` of a Sigfox bulk action: its rows act only on devices in that group's
    subtree (others fail as unknown). Unknown or invisible: 400 naming it; 403 without
    `device:write` there."""
    group = session.get(Group, group_id)
    if group is None or not actor.actions_on(group.path):
        raise InvalidInput.field("groupId", "no such group", "query")
    actor.require("device:write", group.path, "group")
    return [group.path]


def submit_on_devices(
    session: Session, actor: Actor, kind: str, rows: list[Any], key: str = "id", group_id: int | None = None
) -> Job:
    return prepare_on_devices(session, actor, kind, rows, key, group_id)(session)


def prepare_on_devices(
    session: Session, actor: Actor, kind: str, rows: list[Any], key: str = "id", group_id: int | None = None
) -> Store:
    """Edit, replace, unsubscribe, delete, restart, suspend or resume devices named by id
    (with `group_id`, only those in that group's subtree)."""
    checked = _check_rows(rows, kind)
    if not actor.scopes("device:write"):
        raise Forbidden("this credential lacks the right 'device:write'")
    scope = group_scope(session, actor, group_id) if group_id is not None else None
    types, filed = _named_devices(session, actor, checked, key, scope)
    if key != "id":  # replace rows name the device as `deviceId`
        checked = [{"id": r.get(key), "targetId": r.get("targetDeviceId")} | r for r in checked]
    encoded = engine.encode_rows(checked)
    return lambda session: _submit(session, actor, kind, encoded, types, filed, {}, scope=scope)


def _submit_all(session: Session, actor: Actor, query: Any, filed: str | None = None) -> Store:
    """A restart of every device `query` selects (identifier, device type id, group path) among
    those the caller may write: the rows are their ids (so no other tenant's id ever shows up
    in the job's errors)."""
    scope = actor.scopes("device:write")
    if not scope:
        raise Forbidden("this credential lacks the right 'device:write'")
    found = session.execute(query.where(in_any_subtree(Group.path, scope)).order_by(Device.sort_key)).all()
    rows = [{"id": ident} for ident, _dt, _path in found]
    paths = {path for _ident, _dt, path in found}
    types, where = {dt for _i, dt, _p in found}, filed or _common_path(paths or scope)
    encoded = engine.encode_rows(rows)
    return lambda session: _submit(session, actor, RESTART, encoded, types, where, {})


def _devices_query() -> Any:
    return (
        select(Device.identifier, Device.device_type_id, Group.path)
        .join(Group, Group.id == Device.group_id)
        .where(Device.lifecycle != DELETED)
    )


def prepare_restart_device_type(session: Session, actor: Actor, device_type_id: int) -> Store:
    """`POST /device-types/{id}/bulk/restart`: every device of the type (404 for an unknown type)."""
    dt = device_types_service.get(session, actor, device_type_id)
    actor.require("device:write", dt.group.path, "device type")
    return _submit_all(session, actor, _devices_query().where(Device.device_type_id == device_type_id), dt.group.path)


def prepare_restart_contract(session: Session, actor: Actor, contract_id: int) -> Store:
    """`POST /contract-infos/{id}/bulk/restart`: the devices on the contract: those holding a
    token on it and those without one whose device type's default contract it is."""
    contracts_service.get_info(session, actor, contract_id)
    on_contract = or_(
        Device.contract_id == contract_id,
        and_(Device.contract_id.is_(None), DeviceType.contract_id == contract_id),
    )
    query = _devices_query().join(DeviceType, DeviceType.id == Device.device_type_id).where(on_contract)
    return _submit_all(session, actor, query)


def submit_transfer(session: Session, actor: Actor, **kwargs: Any) -> Job:
    return prepare_transfer(session, actor, **kwargs)(session)


def prepare_transfer(
    session: Session, actor: Actor, *, device_type_id: int, rows: list[Any], keep_history: bool = False
) -> Store:
    target = _target(session, actor, device_type_id)
    checked = _check_rows(rows, TRANSFER)
    types, _filed = _named_devices(session, actor, checked)
    params = {"deviceTypeId": target.id, "keepHistory": keep_history}

    encoded = engine.encode_rows(checked)

    def store(session: Session) -> Job:
        _target(session, actor, device_type_id)
        return _submit(session, actor, TRANSFER, encoded, types | {target.id}, target.group_path, params)

    return store


# -- reading a job --------------------------------------------------------------------------------
def get_job(session: Session, actor: Actor, job_id: str, kinds: Iterable[str] | None = None) -> Job:
    """A job the caller may read (`device:read` where it is filed), by its wire id."""
    if len(job_id) != 16 or not all(c in "0123456789abcdef" for c in job_id):
        raise InvalidInput.field("jobId", "must be 16 lower-case hex digits (a Sigfox jobId)", "path")
    job = session.scalar(select(Job).where(Job.req_id == job_id))
    if job is None or (kinds is not None and job.kind not in kinds) or not queries.may_read(actor, job):
        raise NotFound("job not found")
    return job
