"""Set-based building blocks for bulk device work (the job kinds of the native bulk API, the
series operations and the Senet onboarding API): a batch of rows costs a handful of statements,
not a few per row.

- `existing` finds the devices a batch names with one SELECT per chunk of identifiers.
- `insert_devices` inserts a batch with one executemany (RETURNING the new ids).
- `reserve_tokens` takes up to N tokens on a contract at once. It locks the contract row (and
  the allocation drawn on) for the rest of the transaction, `SELECT ... FOR UPDATE` on
  PostgreSQL, the single-writer transaction (`BEGIN IMMEDIATE`) on SQLite, counts what is free,
  and adds the granted count to `tokens_in_use`; the caller writes the devices in the same
  transaction. So the counters stay exact under concurrent jobs that share a contract.
- `release_tokens` gives tokens back, one UPDATE per (contract, allocation) pair.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from heron.db.bulk_insert import insert_rows
from heron.errors import InvalidInput
from heron.registry.models import Contract, ContractAllocation, Device
from heron.tenancy.owned import check_name

SIGFOX, LORAWAN = "SIGFOX", "LORAWAN"


class Lifecycle(StrEnum):
    """A device's stored `lifecycle` (api.md: REGISTERED until its token, ACTIVE, then
    DEACTIVATED or DELETED)."""

    REGISTERED = "REGISTERED"
    ACTIVE = "ACTIVE"
    DEACTIVATED = "DEACTIVATED"
    DELETED = "DELETED"


class TokenState(StrEnum):
    """A device's stored `token_state`."""

    NONE = "NONE"
    OK = "OK"
    OFF_CONTRACT = "OFF_CONTRACT"


# The states by their short names, as the registry's code reads them.
REGISTERED, ACTIVE, DEACTIVATED, DELETED = Lifecycle
TOKEN_NONE, TOKEN_OK, TOKEN_OFF = TokenState
_CHUNK = 5000  # identifiers per IN list: well under every driver's parameter limit
_CERT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


# -- settings -------------------------------------------------------------------------------------
# The device settings a create, an edit or a bulk row may carry, by attribute name; the API
# names them in camelCase (SETTING_FIELDS) and every path validates them with `check_settings`.
SETTING_FIELDS = {
    "name": "name",
    "activable": "activable",
    "automatic_renewal": "automaticRenewal",
    "lat": "lat",
    "lng": "lng",
    "product_certificate": "productCertificate.key",
    "prototype": "prototype",
    "tags": "tags",
}


def check_settings(network: str, given: dict[str, Any]) -> dict[str, Any]:
    """Validated column values for the given settings (attribute name -> value; None unsets an
    optional one). Raises InvalidInput naming the API field."""
    out: dict[str, Any] = {}
    for attr, value in given.items():
        field = SETTING_FIELDS[attr]
        if attr == "name":
            if value is None:
                raise InvalidInput.field(field, "is required")
            out[attr] = check_name(value)
        elif attr in ("activable", "automatic_renewal", "prototype"):
            if not isinstance(value, bool):
                raise InvalidInput.field(field, "must be true or false")
            out[attr] = value
        elif attr in ("lat", "lng"):
            bound = 90.0 if attr == "lat" else 180.0
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) or not -bound <= value <= bound:
                    raise InvalidInput.field(field, f"must be a number from {-bound:g} to {bound:g}")
                value = float(value)
            out[attr] = value
        elif attr == "product_certificate":
            if value is not None and (
                not isinstance(value, str) or not 1 <= len(value) <= 64 or not _CERT_CHARS.issuperset(value)
            ):
                raise InvalidInput.field(field, "must be 1 to 64 letters, digits or . _ : -")
            out[attr] = value
        elif attr == "tags":
            if value is not None:
                if network != LORAWAN:
                    raise InvalidInput.field(field, "only LORAWAN devices have tags")
                if not isinstance(value, str) or len(value) > 4000:
                    raise InvalidInput.field(field, "must be at most 4000 characters")
            out[attr] = value
    return out


def sort_key(identifier: str) -> str:
    return identifier.rjust(16, "0")


def new_row(
    *,
    network: str,
    identifier: str,
    device_type_id: int,
    group_id: int,
    automatic_renewal: bool,
    created_by: str,
    now: datetime,
) -> dict[str, Any]:
    """Every column of a new `devices` row (executemany wants the same keys in every row),
    REGISTERED without a token; the caller overlays settings, keys and token columns."""
    return {
        "network": network,
        "identifier": identifier,
        "sort_key": sort_key(identifier),
        "name": "",
        "device_type_id": device_type_id,
        "group_id": group_id,
        "contract_id": None,
        "token_alloc": None,
        "token_state": TOKEN_NONE,
        "token_end_at": None,
        "token_renewed_at": None,
        "messages_purged_at": None,
        "lat": None,
        "lng": None,
        "tags": None,
        "dev_type": None,
        "product_certificate": None,
        "modem_certificate": None,
        "prototype": False,
        "activable": True,
        "automatic_renewal": automatic_renewal,
        "unsubscription_at": None,
        "suspended": False,
        "lifecycle": REGISTERED,
        "activated_at": None,
        "deleted_at": None,
        "last_seen_at": None,
        "com_state": 5,
        "sequence_number": None,
        "pac": None,
        "nak": None,
        "app_key": None,
        "join_eui": None,
        "prof_id": None,
        "created_at": now,
        "created_by": created_by,
        "updated_at": None,
        "updated_by": None,
    }


# -- lookups and writes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExistingDevice:
    id: int
    identifier: str
    name: str
    device_type_id: int
    group_id: int
    lifecycle: str
    contract_id: int | None
    token_alloc: str | None
    activable: bool


def existing(
    session: Session, network: str, identifiers: Iterable[str], *, for_update: bool = False
) -> dict[str, ExistingDevice]:
    """The devices of `network` among `identifiers` (normalized), by identifier. With
    `for_update`, their rows stay locked to the end of the transaction (PostgreSQL; SQLite's
    writer is alone anyway), so what the caller read about their tokens stays true."""
    wanted = list(dict.fromkeys(identifiers))
    out: dict[str, ExistingDevice] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = select(
            Device.id,
            Device.identifier,
            Device.name,
            Device.device_type_id,
            Device.group_id,
            Device.lifecycle,
            Device.contract_id,
            Device.token_alloc,
            Device.activable,
        ).where(Device.network == network, Device.identifier.in_(wanted[start : start + _CHUNK]))
        if for_update:
            query = query.order_by(Device.id).with_for_update()
        rows = session.execute(query)
        for row in rows:
            out[row.identifier] = ExistingDevice(*row)
    return out


def insert_devices(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert `new_row`-shaped rows with one driver-level executemany (`heron.db.bulk_insert`),
    in the session's transaction: what makes a 10,000-row batch cost about what the database
    itself needs."""
    return insert_rows(session, cast(Table, Device.__table__), rows)


def update_devices(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Per-device changes, `b_id` naming the device: one executemany UPDATE per distinct set of
    columns."""
    table = cast(Table, Device.__table__)
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_columns[tuple(sorted(k for k in row if k != "b_id"))].append(row)
    for columns, group in by_columns.items():
        stmt = update(table).where(table.c.id == bindparam("b_id")).values({c: bindparam(c) for c in columns})
        session.execute(stmt, group)


# -- tokens ---------------------------------------------------------------------------------------
def add_months(when: datetime, months: int) -> datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return when.replace(year=year, month=month, day=min(when.day, days))


@dataclass(frozen=True)
class Reservation:
    """Tokens taken on a contract: `granted` of the `wanted`; `refusal` says why the others
    got none (naming the contract)."""

    contract_id: int
    wanted: int
    granted: int
    token_alloc: str | None
    token_end_at: datetime | None
    refusal: str | None

    def columns(self, now: datetime) -> dict[str, Any]:
        """The device columns of a device holding one of these tokens (a new row's values): a
        new token was never renewed and carries no unsubscription."""
        return {
            "contract_id": self.contract_id,
            "token_alloc": self.token_alloc,
            "token_state": TOKEN_OK,
            "token_end_at": self.token_end_at,
            "token_renewed_at": None,
            "unsubscription_at": None,
            "lifecycle": ACTIVE,
            "activated_at": now,
        }


def _allocation(session: Session, contract_id: int, device_type_id: int, group_path: str) -> Any:
    """The allocation devices of this device type draw on (locked): the device type's own,
    else the one of the nearest group (the device type's group or an ancestor), else none."""
    ancestors = [int(x) for x in group_path.strip("/").split("/")]
    rows = session.execute(
        select(
            ContractAllocation.id,
            ContractAllocation.device_type_id,
            ContractAllocation.group_id,
            ContractAllocation.max_tokens,
            ContractAllocation.tokens_in_use,
        )
        .where(
            ContractAllocation.contract_id == contract_id,
            or_(ContractAllocation.device_type_id == device_type_id, ContractAllocation.group_id.in_(ancestors)),
        )
        .with_for_update()
    ).all()
    own = [a for a in rows if a.device_type_id == device_type_id]
    if own:
        return own[0]
    by_depth = sorted((a for a in rows if a.group_id is not None), key=lambda a: ancestors.index(a.group_id))
    return by_depth[-1] if by_depth else None


def reserve_tokens(
    session: Session, contract_id: int, device_type_id: int, group_path: str, wanted: int, now: datetime
) -> Reservation:
    """Take up to `wanted` tokens on the contract for devices of this device type (in the group
    at `group_path`). The counters are updated here; the caller gives the granted tokens to
    devices in the same transaction (`Reservation.columns`, `grant_existing`)."""
    contract = session.execute(
        select(Contract.name, Contract.max_tokens, Contract.tokens_in_use, Contract.token_duration)
        .where(Contract.id == contract_id)
        .with_for_update()
    ).one()
    free = wanted if contract.max_tokens == 0 else max(0, contract.max_tokens - contract.tokens_in_use)
    refusal = f"contract {contract.name!r} (id {contract_id}) has no token left"
    alloc = _allocation(session, contract_id, device_type_id, group_path) if wanted else None
    if alloc is not None and alloc.max_tokens - alloc.tokens_in_use < free:
        free = max(0, alloc.max_tokens - alloc.tokens_in_use)
        refusal = (
            f"contract {contract.name!r} (id {contract_id}) has no token left in the quota of "
            f"{alloc.max_tokens} allocated to this device type's group or device type"
        )
    granted = min(wanted, free)
    token_alloc = None
    if alloc is not None:
        token_alloc = f"dt:{device_type_id}" if alloc.device_type_id is not None else f"g:{alloc.group_id}"
    if granted:
        session.execute(
            update(Contract)
            .where(Contract.id == contract_id)
            .values(tokens_in_use=Contract.tokens_in_use + granted)
            .execution_options(synchronize_session=False)
        )
        if alloc is not None:
            session.execute(
                update(ContractAllocation)
                .where(ContractAllocation.id == alloc.id)
                .values(tokens_in_use=ContractAllocation.tokens_in_use + granted)
                .execution_options(synchronize_session=False)
            )
    end = add_months(now, contract.token_duration) if contract.token_duration else None
    return Reservation(contract_id, wanted, granted, token_alloc, end, refusal if granted < wanted else None)


def grant_existing(session: Session, reservation: Reservation, device_ids: Sequence[int], now: datetime) -> None:
    """Give reserved tokens to existing devices (at most `reservation.granted` of them): one
    UPDATE per chunk, keeping a first activation time already set."""
    assert len(device_ids) <= reservation.granted
    values: dict[str, Any] = reservation.columns(now) | {"activated_at": func.coalesce(Device.activated_at, now)}
    for start in range(0, len(device_ids), _CHUNK):
        session.execute(
            update(Device)
            .where(Device.id.in_(list(device_ids[start : start + _CHUNK])))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Holder:
    """A device holding a token, as far as giving it back is concerned."""

    id: int
    contract_id: int | None
    token_alloc: str | None


def adjust_counters(session: Session, holders: Iterable[Holder], sign: int, *, contracts: bool = True) -> None:
    """Add (`sign` +1) or remove (-1) the holders' tokens from the counters of their contracts
    (unless `contracts` is false: the tokens stay held, only their allocation changes) and of the
    allocations they draw on: one UPDATE per contract and per allocation."""
    holding = [h for h in holders if h.contract_id is not None]
    for contract_id, count in Counter(h.contract_id for h in holding).items() if contracts else ():
        session.execute(
            update(Contract)
            .where(Contract.id == contract_id)
            .values(tokens_in_use=Contract.tokens_in_use + sign * count)
            .execution_options(synchronize_session=False)
        )
    drawn = Counter((h.contract_id, h.token_alloc) for h in holding if h.token_alloc)
    for (contract_id, alloc), count in drawn.items():
        kind, _, raw = (alloc or "").partition(":")
        target = ContractAllocation.device_type_id if kind == "dt" else ContractAllocation.group_id
        session.execute(
            update(ContractAllocation)
            .where(ContractAllocation.contract_id == contract_id, target == int(raw))
            .values(tokens_in_use=ContractAllocation.tokens_in_use + sign * count)
            .execution_options(synchronize_session=False)
        )


def release_tokens(session: Session, holders: Iterable[Holder]) -> int:
    """Give back the tokens these devices hold (counters, then the devices, a chunk per
    UPDATE). Returns how many tokens were released."""
    holding = [h for h in holders if h.contract_id is not None]
    if not holding:
        return 0
    adjust_counters(session, holding, -1)
    ids = [h.id for h in holding]
    for start in range(0, len(ids), _CHUNK):
        session.execute(
            update(Device)
            .where(Device.id.in_(ids[start : start + _CHUNK]))
            .values(contract_id=None, token_alloc=None, token_state=TOKEN_OFF)
            .execution_options(synchronize_session=False)
        )
    return len(holding)


def unsubscribe(session: Session, items: Sequence[tuple[Holder, datetime]], now: datetime) -> None:
    """End these devices' tokens at their unsubscription times (`PUT /devices/{id}/unsubscribe`
    and the bulk job alike): `unsubscription_at` is set and the token's end becomes that time;
    the upkeep then gives it back without renewing it (registry.maintenance). A time not after
    `now` gives it back at once. Callers pass devices holding a token."""
    release_tokens(session, [h for h, when in items if when <= now])
    update_devices(session, [{"b_id": h.id, "unsubscription_at": when, "token_end_at": when} for h, when in items])
