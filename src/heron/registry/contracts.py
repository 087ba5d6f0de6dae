"""Contracts (Sigfox "orders") and their allocation to subgroups and device types.

Who may use a contract: a device type in group G may name contract C (as its default or among its
allowed contracts) when C is owned by G itself, or C is allocated to G or to an ancestor of G
(allocations only reach groups inside C's owner subtree), or C is allocated directly to that
device type. A contract owned above G and never allocated down to G is not usable by G: owning a
contract higher up does not hand it to every subgroup; that is what allocation is for.

Who sees a contract: `/contracts` (management) needs `contract:write` on the owning group;
`/contract-infos` (the read view) shows contracts owned in the caller's `contract:read` subtrees,
and contracts allocated into them. A caller who sees a contract only through an allocation sees
the allocation's group and token quota, never the owner's group or its other customers' usage."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session, aliased

from heron.db.base import utcnow
from heron.errors import Conflict, InvalidInput, NotFound
from heron.registry.models import Contract, ContractAllocation, DeviceType, DeviceTypeContract
from heron.tenancy import audit
from heron.tenancy import groups as groups_service
from heron.tenancy.access import Actor, in_subtree
from heron.tenancy.groups import register_content_check
from heron.tenancy.models import Group
from heron.tenancy.owned import KEEP, check_name, from_ms, in_groups, owning_group
from heron.tenancy.validation import check_timezone

MAX_FRAMES = 1_000_000  # per day; Sigfox contracts stop at 140 up / 4 down, LoRaWAN ones may not
MAX_TOKEN_DURATION = 1200  # months (100 years); 0 = unlimited

register_content_check("contracts", lambda gid: select(Contract.id).where(Contract.group_id == gid).limit(1))
register_content_check(
    "contract allocations",
    lambda gid: select(ContractAllocation.id).where(ContractAllocation.group_id == gid).limit(1),
)


@dataclass
class ContractView:
    contract: Contract
    group: Group


@dataclass
class AllocationView:
    allocation: ContractAllocation
    group: Group  # the allocated group, or the allocated device type's group
    device_type: DeviceType | None


@dataclass(frozen=True)
class AllocationIn:
    """One allocation of a PUT: a group or a device type, with a token quota."""

    group_id: int | None
    device_type_id: int | None
    max_tokens: int


@dataclass
class ContractInfo:
    """The read view as one caller sees it (see the module docstring)."""

    contract: Contract
    group: Group
    max_tokens: int
    tokens_in_use: int


# -- management -----------------------------------------------------------------------------------
def _load(session: Session, contract_id: int) -> ContractView:
    row = session.execute(
        select(Contract, Group).join(Group, Group.id == Contract.group_id).where(Contract.id == contract_id)
    ).first()
    if row is None:
        raise NotFound("contract not found")
    return ContractView(row[0], row[1])


def get(session: Session, actor: Actor, contract_id: int) -> ContractView:
    view = _load(session, contract_id)
    actor.require("contract:write", view.group.path, "contract")
    return view


def _check_limits(contract: Contract, field_max_tokens: str = "maxTokens") -> None:
    if contract.max_tokens and contract.max_tokens < contract.tokens_in_use:
        raise InvalidInput.field(
            field_max_tokens, f"cannot be below the {contract.tokens_in_use} tokens in use (0 = unlimited)"
        )
    if contract.end_at is not None and contract.end_at <= contract.start_at:
        raise InvalidInput.field("endTime", "must be after startTime")


def create(
    session: Session,
    actor: Actor,
    *,
    group_id: int,
    name: str,
    external_id: str | None = None,
    bidir: bool = False,
    max_tokens: int = 0,
    max_uplink_frames: int = 140,
    max_downlink_frames: int = 4,
    token_duration: int = 12,
    start_ms: int | None = None,
    end_ms: int | None = None,
    timezone: str | None = None,
    geolocation: bool = False,
    message_retention_days: int = 30,
) -> ContractView:
    group = owning_group(session, actor, group_id, "contract:write")
    name = check_name(name)
    now = utcnow()
    contract = Contract(
        group_id=group.id,
        name=name,
        name_ci=name.lower(),
        external_id=external_id,
        bidir=bidir,
        max_tokens=max_tokens,
        max_uplink_frames=max_uplink_frames,
        max_downlink_frames=max_downlink_frames,
        token_duration=token_duration,
        start_at=from_ms(start_ms, "startTime") if start_ms is not None else now,
        end_at=from_ms(end_ms, "endTime") if end_ms is not None else None,
        timezone=check_timezone(timezone) if timezone is not None else group.timezone,
        geolocation=geolocation,
        message_retention_days=message_retention_days,
        tokens_in_use=0,
        created_at=now,
    )
    _check_limits(contract)
    session.add(contract)
    session.flush()
    audit.record(session, actor, "create", contract, "contract", group.path, {"name": name, "maxTokens": max_tokens})
    return ContractView(contract, group)


def update(
    session: Session,
    actor: Actor,
    contract_id: int,
    *,
    name: str | None = None,
    external_id: str | object | None = KEEP,
    bidir: bool | None = None,
    max_tokens: int | None = None,
    max_uplink_frames: int | None = None,
    max_downlink_frames: int | None = None,
    token_duration: int | None = None,
    start_ms: int | None = None,
    end_ms: int | object | None = KEEP,
    timezone: str | None = None,
    geolocation: bool | None = None,
    message_retention_days: int | None = None,
) -> ContractView:
    """Partial update; `external_id` / `end_ms` set to None unset them."""
    view = get(session, actor, contract_id)
    c = view.contract
    changes: dict[str, object] = {}
    if name is not None:
        c.name = check_name(name)
        c.name_ci = c.name.lower()
        changes["name"] = c.name
    if external_id is not KEEP:
        c.external_id = changes["contractId"] = external_id  # type: ignore[assignment]
    if timezone is not None:
        c.timezone = changes["timezone"] = check_timezone(timezone)
    if start_ms is not None:
        c.start_at = from_ms(start_ms, "startTime")
        changes["startTime"] = start_ms
    if end_ms is not KEEP:
        c.end_at = None if end_ms is None else from_ms(end_ms, "endTime")  # type: ignore[arg-type]
        changes["endTime"] = end_ms
    for attr, key, value in (
        ("bidir", "bidir", bidir),
        ("max_tokens", "maxTokens", max_tokens),
        ("max_uplink_frames", "maxUplinkFrames", max_uplink_frames),
        ("max_downlink_frames", "maxDownlinkFrames", max_downlink_frames),
        ("token_duration", "tokenDuration", token_duration),
        ("geolocation", "geolocation", geolocation),
        ("message_retention_days", "messageRetentionDays", message_retention_days),
    ):
        if value is not None:
            setattr(c, attr, value)
            changes[key] = value
    _check_limits(c)
    if max_tokens:
        over = session.scalar(
            select(func.max(ContractAllocation.max_tokens)).where(ContractAllocation.contract_id == c.id)
        )
        if over is not None and over > max_tokens:
            raise InvalidInput.field("maxTokens", f"an allocation has a quota of {over} tokens: lower it first")
    audit.record(session, actor, "update", c, "contract", view.group.path, changes)
    return view


def _users_of(session: Session, contract_id: int) -> list[DeviceType]:
    """Device types naming the contract, as default, allowed or allocated."""
    ids = (
        select(DeviceType.id)
        .where(DeviceType.contract_id == contract_id)
        .union(
            select(DeviceTypeContract.device_type_id).where(DeviceTypeContract.contract_id == contract_id),
            select(ContractAllocation.device_type_id).where(
                ContractAllocation.contract_id == contract_id, ContractAllocation.device_type_id.is_not(None)
            ),
        )
        .subquery()
    )
    return list(session.scalars(select(DeviceType).where(DeviceType.id.in_(select(ids))).order_by(DeviceType.id)))


def _in_use_message(what: str, users: list[DeviceType]) -> str:
    names = ", ".join(f"{dt.name!r} (id {dt.id})" for dt in users[:5])
    more = f" and {len(users) - 5} more" if len(users) > 5 else ""
    return f"{what} is in use by device type {names}{more}"


def delete(session: Session, actor: Actor, contract_id: int) -> None:
    view = get(session, actor, contract_id)
    users = _users_of(session, contract_id)
    if users:
        raise Conflict(_in_use_message(f"contract {contract_id}", users))
    if view.contract.tokens_in_use:
        raise Conflict(f"contract {contract_id} has {view.contract.tokens_in_use} tokens in use")
    audit.record(session, actor, "delete", view.contract, "contract", view.group.path, {"name": view.contract.name})
    session.execute(sql_delete(ContractAllocation).where(ContractAllocation.contract_id == contract_id))
    session.delete(view.contract)


def list_contracts(
    session: Session,
    actor: Actor,
    *,
    name: str | None = None,
    group_ids: list[int] | None = None,
    deep: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ContractView], bool]:
    conds: list[ColumnElement[bool]] = [actor.visible_filter(Group.path, "contract:write")]
    if group_ids:
        conds.append(in_groups(session, actor, group_ids, deep, Contract.group_id))
    rows = _contracts_where(session, conds, name, limit, offset)
    return [ContractView(c, g) for c, g in rows[:limit]], len(rows) > limit


# -- allocations ----------------------------------------------------------------------------------
def allocations_of(session: Session, contract_ids: list[int]) -> dict[int, list[AllocationView]]:
    out: dict[int, list[AllocationView]] = {i: [] for i in contract_ids}
    if not contract_ids:
        return out
    target = aliased(Group)
    rows = session.execute(
        select(ContractAllocation, target, DeviceType)
        .outerjoin(DeviceType, DeviceType.id == ContractAllocation.device_type_id)
        .join(target, target.id == func.coalesce(ContractAllocation.group_id, DeviceType.group_id))
        .where(ContractAllocation.contract_id.in_(contract_ids))
        .order_by(ContractAllocation.id)
    )
    for alloc, group, device_type in rows:
        out[alloc.contract_id].append(AllocationView(alloc, group, device_type))
    return out


def set_allocations(session: Session, actor: Actor, contract_id: int, wanted: list[AllocationIn]) -> None:
    """Replace the contract's allocations. Quotas are ceilings: each is at most the contract's
    `maxTokens` (when limited) and at least the tokens already drawn from it; their sum may exceed
    the contract's (the contract's own count is the hard limit when a token is taken)."""
    view = get(session, actor, contract_id)
    contract, owner = view.contract, view.group
    current = {
        (a.allocation.group_id, a.allocation.device_type_id): a
        for a in allocations_of(session, [contract_id])[contract_id]
    }
    seen: set[tuple[int | None, int | None]] = set()
    rows: list[tuple[AllocationIn, int]] = []
    for i, item in enumerate(wanted):
        field = f"allocations[{i}]"
        if (item.group_id is None) == (item.device_type_id is None):
            raise InvalidInput.field(field, "give exactly one of groupId and deviceTypeId")
        key = (item.group_id, item.device_type_id)
        if key in seen:
            raise InvalidInput.field(field, "allocated twice")
        seen.add(key)
        if item.group_id is not None:
            group = session.get(Group, item.group_id)
            if group is None or not actor.actions_on(group.path):
                raise InvalidInput.field(f"{field}.groupId", "no such group")
            if group.id == owner.id or not group.path.startswith(owner.path):
                raise InvalidInput.field(f"{field}.groupId", "must be a subgroup of the contract's group")
        else:
            row = session.execute(
                select(DeviceType, Group)
                .join(Group, Group.id == DeviceType.group_id)
                .where(DeviceType.id == item.device_type_id)
            ).first()
            if row is None or not actor.actions_on(row[1].path):
                raise InvalidInput.field(f"{field}.deviceTypeId", "no such device type")
            if not row[1].path.startswith(owner.path):
                raise InvalidInput.field(
                    f"{field}.deviceTypeId", "must be a device type in the contract's group or its subgroups"
                )
        if contract.max_tokens and item.max_tokens > contract.max_tokens:
            raise InvalidInput.field(f"{field}.maxTokens", f"cannot exceed the contract's {contract.max_tokens}")
        existing = current.get(key)
        in_use = existing.allocation.tokens_in_use if existing else 0
        if item.max_tokens < in_use:
            raise InvalidInput.field(f"{field}.maxTokens", f"cannot be below the {in_use} tokens in use")
        rows.append((item, in_use))
    for key, old in current.items():
        if key not in seen and old.allocation.tokens_in_use:
            raise Conflict(f"allocation to {old.group.name!r} has {old.allocation.tokens_in_use} tokens in use")
    session.execute(sql_delete(ContractAllocation).where(ContractAllocation.contract_id == contract_id))
    session.add_all(
        ContractAllocation(
            contract_id=contract_id,
            group_id=item.group_id,
            device_type_id=item.device_type_id,
            max_tokens=item.max_tokens,
            tokens_in_use=in_use,
        )
        for item, in_use in rows
    )
    session.flush()
    stranded = [dt for dt in _users_of(session, contract_id) if not usable(session, contract, dt)]
    if stranded:
        raise Conflict(_in_use_message(f"contract {contract_id}", stranded) + ", which would lose it")
    details = [{"groupId": i.group_id, "deviceTypeId": i.device_type_id, "maxTokens": i.max_tokens} for i, _ in rows]
    audit.record(session, actor, "update", contract, "contract", owner.path, {"allocations": details})


def usable(session: Session, contract: Contract, device_type: DeviceType, group: Group | None = None) -> bool:
    """The rule of the module docstring, for an existing or about-to-be-created device type."""
    group = group or session.get(Group, device_type.group_id)
    assert group is not None
    if contract.group_id == group.id:
        return True
    ancestor_ids = [int(x) for x in group.path.strip("/").split("/")]
    via: list[ColumnElement[bool]] = [ContractAllocation.group_id.in_(ancestor_ids)]
    if device_type.id is not None:
        via.append(ContractAllocation.device_type_id == device_type.id)
    found = session.scalar(select(exists().where(ContractAllocation.contract_id == contract.id, or_(*via))))
    return bool(found)


# -- the read view (/contract-infos) --------------------------------------------------------------
def _info_filter(actor: Actor) -> ColumnElement[bool]:
    target = aliased(Group)
    allocated_here = exists(
        select(ContractAllocation.id)
        .outerjoin(DeviceType, DeviceType.id == ContractAllocation.device_type_id)
        .join(target, target.id == func.coalesce(ContractAllocation.group_id, DeviceType.group_id))
        .where(ContractAllocation.contract_id == Contract.id, actor.visible_filter(target.path, "contract:read"))
    )
    return or_(actor.visible_filter(Group.path, "contract:read"), allocated_here)


def _as_seen(actor: Actor, view: ContractView, allocs: list[AllocationView]) -> ContractInfo:
    c = view.contract
    if actor.can("contract:read", view.group.path):
        return ContractInfo(c, view.group, c.max_tokens, c.tokens_in_use)
    seen = [a for a in allocs if actor.can("contract:read", a.group.path) and a.allocation.group_id is not None]
    seen = seen or [a for a in allocs if actor.can("contract:read", a.group.path)]
    if not seen:
        return ContractInfo(c, view.group, c.max_tokens, c.tokens_in_use)
    best = min(seen, key=lambda a: (a.group.depth, a.allocation.id))
    return ContractInfo(c, best.group, best.allocation.max_tokens, best.allocation.tokens_in_use)


def get_info(session: Session, actor: Actor, contract_id: int) -> ContractInfo:
    view = _load(session, contract_id)
    info = _as_seen(actor, view, allocations_of(session, [contract_id])[contract_id])
    actor.require("contract:read", info.group.path, "contract")
    return info


def list_infos(
    session: Session,
    actor: Actor,
    *,
    name: str | None = None,
    group_id: int | None = None,
    deep: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ContractInfo], bool]:
    conds: list[ColumnElement[bool]] = [_info_filter(actor)]
    if group_id is not None:
        parent = groups_service.get(session, actor, group_id)
        target = aliased(Group)
        where = in_subtree(target.path, parent.path) if deep else target.id == parent.id
        allocated = exists(
            select(ContractAllocation.id)
            .join(target, target.id == ContractAllocation.group_id)
            .where(ContractAllocation.contract_id == Contract.id, where)
        )
        owned = in_subtree(Group.path, parent.path) if deep else Group.id == parent.id
        conds.append(or_(and_(owned), allocated))
    rows = _contracts_where(session, conds, name, limit, offset)
    page = rows[:limit]
    allocs = allocations_of(session, [c.id for c, _ in page])
    return [_as_seen(actor, ContractView(c, g), allocs[c.id]) for c, g in page], len(rows) > limit


def min_contracts(session: Session, contract_ids: list[int]) -> dict[int, Contract]:
    if not contract_ids:
        return {}
    return {c.id: c for c in session.scalars(select(Contract).where(Contract.id.in_(contract_ids)))}


def _contracts_where(
    session: Session, conds: list[ColumnElement[bool]], name: str | None, limit: int, offset: int
) -> list[tuple[Contract, Group]]:
    """A page of contracts (one more row than `limit`: whether there are more) with their groups."""
    if name:
        conds = [*conds, Contract.name_ci.contains(name.lower(), autoescape=True)]
    return list(
        session.execute(
            select(Contract, Group)
            .join(Group, Group.id == Contract.group_id)
            .where(*conds)
            .order_by(Contract.id)
            .limit(limit + 1)
            .offset(offset)
        ).tuples()
    )
