"""Device lists and CSV exports: filters, sort orders, exact totals and keyset positions, fast at
a million devices on SQLite and PostgreSQL (docs/ARCHITECTURE.md, "Device queries").

A page is read in two steps. The first finds the ids of the page in key order; the second loads
those rows whole. Which index the first step walks depends on how many devices match:
- few (at most `SMALL`, found by a count capped there): the per-group filter index (`group_id`,
  filter, `lifecycle`, `sort_key`), one seek per group, the matches sorted in memory;
- many: the index of the sort order, walked from the position, filters checked on the way, so a
  page costs about `limit / share of matching devices` steps, whatever the page number.
The many-matches plan writes its group condition as `group_id + 0 IN (...)`, which no index
serves, so both databases walk the order index instead of gathering and sorting a hundred
thousand rows to return a hundred (SQLite, without ANALYZE statistics, otherwise prefers the
group index whatever the count).

Ties in every order are broken by the surrogate `id` (in every SQLite index for free), so a
position is exact: a page continues after the last row shown, never repeats one and never skips
one, whatever is inserted or deleted meanwhile. Devices never seen come last in both `lastCom`
orders (read as a second segment, `last_seen_at IS NULL`, in id order)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from heron.db.engine import Database
from heron.db.sqlfuncs import csv_line, iso_utc_ms, unindexed
from heron.errors import InvalidInput
from heron.registry.bulk import DELETED, TOKEN_OK
from heron.registry.devices import LIFECYCLES, DeviceView
from heron.registry.models import Contract, Device, DeviceType
from heron.tenancy.access import Actor, in_any_subtree
from heron.tenancy.models import Group
from heron.tenancy.owned import from_ms, in_groups

# Sigfox v2 enums (api.md): comState is stored as is; token.state is 0 while a token is held, else 1.
COM_STATES = {"NO": 0, "OK": 1, "WARN": 2, "KO": 3, "NA": 4, "NOT_SEEN": 5}
TOKEN_STATES = {"OK": 0, "OFF_CONTRACT": 1, "NA_FOR_API": 2, "INVALID_TOKEN": 3}
SORTS = ("id", "-id", "name", "-name", "lastCom", "-lastCom")
SMALL = 10_000  # at most this many matches: read them through the per-group index and sort them

_HEX_PREFIX_CHARS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class DeviceFilter:
    """What a list or export selects; built by `parse_filter` from query values."""

    id_prefix: str | None = None
    min_key: str | None = None
    max_key: str | None = None
    name: str | None = None
    lifecycle: str | None = None  # None: every lifecycle but DELETED
    token_state: int | None = None
    com_state: int | None = None
    device_type_id: int | None = None
    contract_id: int | None = None
    group_ids: tuple[int, ...] = ()
    deep: bool = False
    last_seen_from: datetime | None = None  # inclusive
    last_seen_to: datetime | None = None  # exclusive


def _hex(value: str, field: str) -> str:
    text = value.strip()
    if not 1 <= len(text) <= 16 or not set(text) <= _HEX_PREFIX_CHARS:
        raise InvalidInput.field(field, "must be 1 to 16 hex digits", "query")
    return text.upper().lstrip("0") or "0"


def _enum(value: str, names: dict[str, int], field: str) -> int:
    text = value.strip()
    if text.isascii() and text.isdigit() and int(text) in names.values():
        return int(text)
    if text.upper() in names:
        return names[text.upper()]
    listed = ", ".join(f"{code} {name}" for name, code in names.items())
    raise InvalidInput.field(field, f"must be one of {listed}", "query")


def _ms(value: str, field: str) -> datetime:
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 16):
        raise InvalidInput.field(field, "must be epoch milliseconds", "query")
    try:
        return from_ms(int(text), field)
    except InvalidInput:
        raise InvalidInput.field(field, "must be epoch milliseconds between 0 and year 9999", "query") from None


def parse_filter(
    *,
    id: str | None = None,
    min_id: str | None = None,
    max_id: str | None = None,
    name: str | None = None,
    lifecycle: str | None = None,
    token_state: str | None = None,
    com_state: str | None = None,
    device_type_id: int | None = None,
    contract_id: int | None = None,
    group_ids: Sequence[int] = (),
    deep: bool = False,
    last_seen_from: str | None = None,
    last_seen_to: str | None = None,
) -> DeviceFilter:
    """Query values as given; raises InvalidInput naming the query field."""
    if lifecycle is not None and lifecycle not in LIFECYCLES:
        raise InvalidInput.field("lifecycle", "must be one of " + ", ".join(LIFECYCLES), "query")
    return DeviceFilter(
        id_prefix=_hex(id, "id") if id else None,
        min_key=_hex(min_id, "minId").rjust(16, "0") if min_id is not None else None,
        max_key=_hex(max_id, "maxId").rjust(16, "0") if max_id is not None else None,
        name=name or None,
        lifecycle=lifecycle,
        token_state=_enum(token_state, TOKEN_STATES, "tokenState") if token_state is not None else None,
        com_state=_enum(com_state, COM_STATES, "comState") if com_state is not None else None,
        device_type_id=device_type_id,
        contract_id=contract_id,
        group_ids=tuple(group_ids),
        deep=deep,
        last_seen_from=_ms(last_seen_from, "lastSeenFrom") if last_seen_from is not None else None,
        last_seen_to=_ms(last_seen_to, "lastSeenTo") if last_seen_to is not None else None,
    )


# -- the query plan -------------------------------------------------------------------------------
Col = InstrumentedAttribute[Any]


@dataclass(frozen=True)
class _Segment:
    keys: tuple[Col, ...]  # the order, ending with Device.id
    where: ColumnElement[bool] | None


def _segments(sort: str) -> list[_Segment]:
    """The order as index ranges: `ix_devices_sort_key`, `ix_devices_name_sort_key`, and
    `ix_devices_last_seen_at_sort_key` for both lastCom segments (NULL first in the index)."""
    by = sort.lstrip("-")
    if by == "id":
        return [_Segment((Device.sort_key, Device.id), None)]
    if by == "name":
        return [_Segment((Device.name, Device.sort_key, Device.id), None)]
    return [
        _Segment((Device.last_seen_at, Device.sort_key, Device.id), Device.last_seen_at.is_not(None)),
        _Segment((Device.sort_key, Device.id), Device.last_seen_at.is_(None)),
    ]


@dataclass(frozen=True)
class Position:
    """Where a page ends: the segment and the order-key values of its last row."""

    segment: int
    values: tuple[Any, ...]

    def to_json(self) -> list[Any]:
        return [self.segment, [v.isoformat() if isinstance(v, datetime) else v for v in self.values]]

    @classmethod
    def from_json(cls, raw: Any, sort: str, field: str = "pageId") -> Position:
        """The inverse of `to_json` for this sort order; anything else is a 400 naming `field`."""
        bad = InvalidInput.field(field, "is not a position in this list (start again without it)", "query")
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], int) and isinstance(raw[1], list)):
            raise bad
        segments = _segments(sort)
        if not 0 <= raw[0] < len(segments) or len(raw[1]) != len(segments[raw[0]].keys):
            raise bad
        values: list[Any] = []
        for column, value in zip(segments[raw[0]].keys, raw[1], strict=True):
            if column is Device.id:
                ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
            elif column is Device.last_seen_at:
                try:
                    value = datetime.fromisoformat(value).astimezone(UTC) if isinstance(value, str) else None
                except ValueError:
                    value = None
                ok = value is not None
            else:
                ok = isinstance(value, str) and len(value) <= 100
            if not ok:
                raise bad
            values.append(value)
        return cls(raw[0], tuple(values))


def _after(keys: Sequence[Col], values: Sequence[Any], desc: bool) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order: `k1 >= v1 AND (k1 > v1 OR (...))`, whose first
    term is an index range on both databases (a row-value comparison is not, on SQLite)."""
    column, value = keys[0], values[0]
    strict: ColumnElement[bool] = column < value if desc else column > value
    if len(keys) == 1:
        return strict
    bound: ColumnElement[bool] = column <= value if desc else column >= value
    return and_(bound, or_(strict, _after(keys[1:], values[1:], desc)))


@dataclass
class Plan:
    """The conditions of one list or export, and how to read them."""

    filters: list[Callable[[Callable[[Any], Any]], ColumnElement[bool]]]  # given how to name a column
    groups: Select[Any] | None  # the ids of the groups to read (None: every group)
    sort: str
    small: bool = False
    matches: int | None = None  # exact count, when taken
    ranges: list[ColumnElement[bool]] = field(default_factory=list)  # on the walked order index

    @property
    def desc(self) -> bool:
        return self.sort.startswith("-")

    def where(self, indexed: bool) -> list[ColumnElement[bool]]:
        """The conditions; with `indexed` false no index serves them (but `ranges`), so the
        database walks the order's index instead of gathering and sorting the matches."""
        column: Callable[[Any], Any] = _same if indexed else unindexed
        out = [build(column) for build in self.filters] + list(self.ranges)
        if self.groups is not None:
            out.insert(0, column(Device.group_id).in_(self.groups))
        return out


def _same(column: Any) -> Any:
    return column


def _visible_groups(actor: Actor) -> ColumnElement[bool] | None:
    """None when the caller sees the whole tree (a scope at the root: no condition needed)."""
    scopes = actor.scopes("device:read")
    if any(s.count("/") <= 2 for s in scopes):
        return None
    return in_any_subtree(Group.path, scopes)


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise InvalidInput.field("sort", "must be one of " + ", ".join(SORTS), "query")
    return sort


def plan(session: Session, actor: Actor, f: DeviceFilter, sort: str = "id", *, with_total: bool = False) -> Plan:
    """The conditions for `f` as `actor` sees it (a named group must be visible, else NotFound),
    and which way to read them; `with_total` counts the matches exactly."""
    check_sort(sort)
    conds: list[Callable[[Callable[[Any], Any]], ColumnElement[bool]]] = []
    group_conds: list[ColumnElement[bool]] = []
    visible = _visible_groups(actor)
    if visible is not None:
        group_conds.append(visible)
    if f.group_ids:
        group_conds.append(in_groups(session, actor, list(f.group_ids), f.deep, Group.id))
    if not actor.scopes("device:read"):
        conds.append(lambda c: false())
    if f.lifecycle is not None:
        conds.append(lambda c: c(Device.lifecycle) == f.lifecycle)
    else:
        conds.append(lambda c: c(Device.lifecycle) != DELETED)
    if f.com_state is not None:
        conds.append(lambda c: c(Device.com_state) == f.com_state)
    if f.token_state is not None:
        # Heron holds or lacks a token: NA_FOR_API and INVALID_TOKEN never occur.
        states = {0: [TOKEN_OK], 1: ["NONE", "OFF_CONTRACT"]}.get(f.token_state, [])
        conds.append(lambda c: c(Device.token_state).in_(states) if states else false())
    if f.device_type_id is not None:
        conds.append(lambda c: c(Device.device_type_id) == f.device_type_id)
    if f.contract_id is not None:
        conds.append(lambda c: c(Device.contract_id) == f.contract_id)
    if f.id_prefix is not None:
        prefix = f.id_prefix
        conds.append(lambda c: c(Device.identifier).startswith(prefix, autoescape=True))
    by_id = sort.lstrip("-") == "id"  # then minId/maxId are ranges of the walked index
    if f.min_key is not None:
        low = f.min_key
        conds.append(lambda c: (Device.sort_key if by_id else c(Device.sort_key)) >= low)
    if f.max_key is not None:
        high = f.max_key
        conds.append(lambda c: (Device.sort_key if by_id else c(Device.sort_key)) <= high)
    if f.name is not None:
        needle = f.name.lower()
        conds.append(lambda c: func.lower(Device.name).contains(needle, autoescape=True))
    if f.last_seen_from is not None:
        since = f.last_seen_from
        conds.append(lambda c: c(Device.last_seen_at) >= since)
    if f.last_seen_to is not None:
        until = f.last_seen_to
        conds.append(lambda c: c(Device.last_seen_at) < until)
    p = Plan(conds, select(Group.id).where(*group_conds) if group_conds else None, sort)
    if with_total:
        p.matches = session.scalar(select(func.count()).select_from(Device).where(*p.where(True)))
        p.small = (p.matches or 0) <= SMALL
    else:
        capped = select(literal(1)).select_from(Device).where(*p.where(True)).limit(SMALL + 1)
        p.small = (session.scalar(select(func.count()).select_from(capped.subquery())) or 0) <= SMALL
    if not p.small and p.groups is not None and sort.lstrip("-") == "id":
        _start_at_the_groups(session, p)
    return p


def _start_at_the_groups(session: Session, p: Plan) -> None:
    """Devices of a group tend to hold neighbouring ids (a customer's devices come in series),
    so walking the id index from its start may cross most of the table before the first match.
    The smallest (largest, for `-id`) id in the groups, one index seek per group, bounds it."""
    assert p.groups is not None
    outer = aliased(Group)
    pick = func.max if p.desc else func.min
    per_group = select(pick(Device.sort_key)).where(Device.group_id == outer.id).scalar_subquery()
    bound = session.scalar(select(pick(per_group)).select_from(outer).where(outer.id.in_(p.groups)))
    if bound is None:
        p.ranges.append(false())
    else:
        p.ranges.append(Device.sort_key <= bound if p.desc else Device.sort_key >= bound)


def statement(
    p: Plan, number: int, columns: Sequence[Any], after: Position | None, *, joined: bool = False
) -> Select[Any]:
    """Segment `number` of the plan in order, after `after` when it lies in that segment;
    `joined` adds the device type, group (as `_GroupName`) and contract to the FROM."""
    seg = _segments(p.sort)[number]
    conds = p.where(p.small)
    if seg.where is not None:
        conds.append(seg.where)
    if after is not None and number == after.segment:
        conds.append(_after(seg.keys, after.values, p.desc))
    order = [k.desc() if p.desc else k.asc() for k in seg.keys]
    stmt = select(*columns, *seg.keys).select_from(Device)
    if joined:
        stmt = (
            stmt.join(DeviceType, DeviceType.id == Device.device_type_id)
            .join(_GroupName, _GroupName.id == Device.group_id)
            .outerjoin(Contract, Contract.id == Device.contract_id)
        )
    return stmt.where(*conds).order_by(*order)


def _read(
    session: Session,
    p: Plan,
    columns: Sequence[Any],
    after: Position | None,
    limit: int,
    offset: int = 0,
    *,
    joined: bool = False,
    core: bool = False,
) -> list[tuple[int, Any]]:
    """Up to `limit` rows after `after` (and `offset` more), as (segment, row); each row holds
    `columns` followed by the segment's order keys."""
    out: list[tuple[int, Any]] = []
    segments = _segments(p.sort)
    for number in range(after.segment if after else 0, len(segments)):
        stmt = statement(p, number, columns, after, joined=joined)
        run = session.connection().execute if core else session.execute  # Core rows: no ORM loading
        rows = run(stmt.limit(limit - len(out)).offset(offset)).all()
        if offset and not rows and number + 1 < len(segments):
            skipped = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
            offset = max(0, offset - (skipped or 0))
        else:
            offset = 0
        out += [(number, r) for r in rows]
        if len(out) >= limit:
            break
    return out


def _position(number: int, row: Any, width: int) -> Position:
    """The position of a row read by `_read` with `width` leading columns."""
    return Position(number, tuple(row[width:]))


# -- lists ----------------------------------------------------------------------------------------
@dataclass
class DevicePage:
    views: list[DeviceView]
    next: Position | None  # where the next page starts; None on the last page
    total: int | None = None


def list_devices(
    session: Session,
    actor: Actor,
    f: DeviceFilter,
    *,
    sort: str = "id",
    limit: int = 100,
    offset: int = 0,
    after: Position | None = None,
    with_total: bool = False,
) -> DevicePage:
    """One page of the devices `actor` may read that match `f`, after `after` then `offset`."""
    p = plan(session, actor, f, sort, with_total=with_total)
    found = _read(session, p, [Device.id], after, limit + 1, offset)
    page = found[:limit]
    ids = [row[0] for _, row in page]
    loaded = {
        d.id: DeviceView(d, dt, g, c)
        for d, dt, g, c in session.execute(
            select(Device, DeviceType, Group, Contract)
            .join(DeviceType, DeviceType.id == Device.device_type_id)
            .join(Group, Group.id == Device.group_id)
            .outerjoin(Contract, Contract.id == Device.contract_id)
            .where(Device.id.in_(ids))
        )
    }
    views = [loaded[i] for i in ids if i in loaded]
    nxt = _position(*page[-1], 1) if len(found) > limit and page else None
    return DevicePage(views, nxt, p.matches)


# -- CSV export -----------------------------------------------------------------------------------
# The database renders each CSV line (RFC 4180 quoting included), so a chunk is fetched as one
# string per device and joined: no Python per cell, a million devices in seconds. Column names
# are the API's field names and values the API's (Sigfox codes), but times are ISO 8601 UTC
# (`iso_utc_ms`: spreadsheets read them as times; the JSON API's epoch milliseconds are the same
# instants); root keys are not among them. Free text starting with = + - @ (a formula to Excel and
# LibreOffice) gets a leading apostrophe (OWASP "CSV injection").
_FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]
_GroupName = aliased(Group)  # not `Group`: the group condition's subquery must not correlate with it


def _text(column: Any) -> Any:
    """Free text as one CSV cell: formula-guarded and always quoted (cheaper for the database
    than looking for the characters that need it)."""
    guarded = case((func.substr(column, 1, 1).in_(_FORMULA_STARTS), literal("'").concat(column)), else_=column)
    return literal('"').concat(func.replace(guarded, '"', '""')).concat('"')


def _bool(column: Any) -> Any:
    return case((column.is_(True), "true"), (column.is_(False), "false"), else_="")


def _state() -> Any:
    return case(
        (Device.lifecycle == DELETED, 5),
        (Device.lifecycle == "DEACTIVATED", 3),
        (Device.suspended.is_(True), 6),
        (Device.token_state == TOKEN_OK, 0),
        (Device.activable.is_(True), 2),
        else_=7,
    )


EXPORT_COLUMNS: dict[str, Any] = {
    "id": Device.identifier,
    "name": _text(Device.name),
    "network": Device.network,
    "lifecycle": Device.lifecycle,
    "state": _state(),
    "comState": Device.com_state,
    "tokenState": case((Device.token_state == TOKEN_OK, "0"), else_="1"),
    "tokenEnd": case((Device.token_state == TOKEN_OK, iso_utc_ms(Device.token_end_at))),
    "deviceTypeId": Device.device_type_id,
    "deviceTypeName": _text(DeviceType.name),
    "groupId": Device.group_id,
    "groupName": _text(_GroupName.name),
    "contractId": Device.contract_id,
    "contractName": _text(Contract.name),
    "lastCom": iso_utc_ms(Device.last_seen_at),
    "creationTime": iso_utc_ms(Device.created_at),
    "activationTime": iso_utc_ms(Device.activated_at),
    "sequenceNumber": Device.sequence_number,
    "lat": Device.lat,
    "lng": Device.lng,
    "activable": _bool(Device.activable),
    "automaticRenewal": _bool(Device.automatic_renewal),
    "prototype": _bool(Device.prototype),
    "productCertificate": _text(Device.product_certificate),
    "modemCertificate": _text(Device.modem_certificate),
    "devType": _text(Device.dev_type),
    "tags": _text(Device.tags),
}
DEFAULT_COLUMNS = (
    "id",
    "name",
    "network",
    "lifecycle",
    "state",
    "comState",
    "tokenState",
    "tokenEnd",
    "deviceTypeId",
    "deviceTypeName",
    "groupId",
    "groupName",
    "contractId",
    "contractName",
    "lastCom",
    "creationTime",
)


def parse_columns(raw: str | None, field: str = "columns") -> list[str]:
    """`columns=id,name,...` (default DEFAULT_COLUMNS); an unknown one is a 400 naming `field`."""
    if raw is None or not raw.strip():
        return list(DEFAULT_COLUMNS)
    names = [c.strip() for c in raw.split(",") if c.strip()]
    for name in names:
        if name not in EXPORT_COLUMNS:
            raise InvalidInput.field(
                field, f"unknown column {name[:40]!r}; known: " + ", ".join(EXPORT_COLUMNS), "query"
            )
    if len(set(names)) != len(names):
        raise InvalidInput.field(field, "names a column twice", "query")
    return names


CHUNK = 5000


def export_csv(
    db: Database,
    p: Plan,
    columns: Sequence[str],
    *,
    chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The CSV of the plan's devices (header, then one block of bytes per chunk of `chunk`
    devices; `progress` is told each chunk's size). Each chunk is its own short read from the
    last position, so memory stays constant and no transaction spans the export; a device
    changed meanwhile appears at most once."""
    chunk = chunk or CHUNK
    line = csv_line([EXPORT_COLUMNS[c] for c in columns])
    yield (",".join(columns) + "\r\n").encode()

    def chunks() -> Iterator[tuple[bytes, int]]:
        after: Position | None = None
        while True:
            with db.read() as session:
                found = _read(session, p, [line], after, chunk, joined=True, core=True)
            if not found:
                return
            yield ("\r\n".join([row[0] for _, row in found]) + "\r\n").encode(), len(found)
            if len(found) < chunk:
                return
            after = _position(*found[-1], 1)

    for block, count in _read_ahead(chunks()):
        yield block
        if progress is not None:
            progress(count)


_DONE = object()


def _read_ahead(source: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`source` run ahead in a thread: the database renders the next chunk (SQLite and the
    PostgreSQL driver release the GIL while they work) while this one is being sent. At most
    `depth` items wait, so memory stays bounded; closing this generator stops the thread."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(exc)

    worker = threading.Thread(target=run, name="device-export", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
