"""Lists read newest first by (time, id): the window and keyset conditions they share (messages,
events), and the one time-window page (`newest_first_page`) their pages come from. `after` is
the (time, id) of the last row shown; ties in time are cut by id.

Page rule (clients see times in epoch milliseconds, `since` inclusive, `before` exclusive):
a page ends on a millisecond boundary. When the row after the page shares the page's last
millisecond, that millisecond's rows move to the next page, unless the page holds nothing else
(then it is `split`: the next page starts inside that millisecond, and `resume_offset` counts
that millisecond's rows shown so far, so `before` = the next millisecond with that `offset`
resumes it with the parameters the Sigfox document declares).
So a client paging by `before` = the last row's time skips nothing unless more than `limit`
rows share one millisecond, and never sees a row twice. A request with an `offset` gets the
exact slice [offset, offset + limit) instead (a client adding `limit` to `offset` must not
lose rows to the trim); the position after it may then be split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

Position = tuple[datetime, int]
_MS = timedelta(milliseconds=1)


def newest_first_window(
    time: Any, row_id: Any, since: datetime | None, before: datetime | None, after: Position | None
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(time >= since)
    if before is not None:
        conds.append(time < before)
    if after is not None:
        conds.append(or_(time < after[0], and_(time == after[0], row_id < after[1])))
    return conds


@dataclass(frozen=True)
class TimeWindow:
    """What a time-window list request asks for: `since` inclusive, `before` exclusive, `after`
    the position a page token stands for, `offset` rows skipped (None: not asked, the page may
    be trimmed to a millisecond boundary)."""

    since: datetime | None = None
    before: datetime | None = None
    after: Position | None = None
    offset: int | None = None
    limit: int = 100


@dataclass
class TimePage:
    rows: list[Any]
    next_after: Position | None = None  # the last row's position, when more rows follow
    split: bool = False  # ... and the next page starts inside that row's millisecond
    resume_offset: int = 0  # when split: the rows of that millisecond up to and including the last


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def newest_first_page(
    session: Session,
    stmt: Select[*tuple[Any, ...]],
    time: Any,
    row_id: Any,
    window: TimeWindow,
    position: Callable[[Any], Position],
) -> TimePage:
    """One page of `stmt` (its columns and scope; no order, no limit) in `window`, newest first
    by (`time`, `row_id`), by the module's page rule. `position(row)` is a row's (time, id)."""
    query = (
        stmt.where(*newest_first_window(time, row_id, window.since, window.before, window.after))
        .order_by(time.desc(), row_id.desc())
        .limit(window.limit + 1)
    )
    if window.offset:
        query = query.offset(window.offset)
    rows = list(session.execute(query).all())
    if len(rows) <= window.limit:
        return TimePage(rows)
    rows, edge = rows[: window.limit], _ms(position(rows[window.limit])[0])
    split = _ms(position(rows[-1])[0]) == edge
    if split and window.offset is None:
        kept = [r for r in rows if _ms(position(r)[0]) != edge]  # the rows before the shared ms
        if kept:
            rows, split = kept, False
    last = position(rows[-1])
    if not split:
        return TimePage(rows, last)
    # Rows of the last row's millisecond from its start down to the last row (the window's
    # `since` still applies: the next request keeps it).
    start = last[0] - timedelta(microseconds=last[0].microsecond % 1000)
    shown = [time >= start, time < start + _MS, or_(time > last[0], and_(time == last[0], row_id >= last[1]))]
    if window.since is not None:
        shown.append(time >= window.since)
    resume = session.scalar(select(func.count()).select_from(stmt.where(*shown).subquery()))
    return TimePage(rows, last, True, int(resume or 0))
