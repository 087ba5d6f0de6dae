"""Lists read by time, newest first (messages, events, locations): `since` (inclusive) and
`before` (exclusive) in epoch ms, `limit`, `offset`, and a `paging.next` a client can follow.

`paging.next` carries `before` (as Sigfox clients read it): the last row's time when the page
ends on a millisecond boundary (heron.db.keyset's page rule), so a client that pages by
`before` = the last row's `time` and one that follows `paging.next` ask for the same thing;
when the page ends inside a millisecond (more than `limit` rows share it), `before` is the
next millisecond and `offset` the rows of that millisecond already shown: only parameters the
Sigfox document declares, so a client that turns `next` back into its operation's parameters
(as generated clients do) can follow it.

A time-window list route takes `q: TimeList` and answers with `listed`, which reads the
`TimePage` its service makes from the window asked for:

    @router.get("/devices/{device_id}/things")
    async def things(request: Request, device_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList):
        return listed(request, ctx, q, lambda s, w: service.things(s, actor, device_id, w), wire)

and the service pages with `heron.db.keyset.newest_first_page(session, select(...).where(scope),
Thing.time, Thing.id, window, position=lambda row: (row[0].time, row[0].id))`.

The outbox's lists (callbacks not delivered) page by `offset` alone, 0 by default: they take
`q: OffsetTimeList` and pass `**q.span()` to their service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from heron.api.context import base_url
from heron.api.schemas import MAX_OFFSET
from heron.db.keyset import TimePage, TimeWindow
from heron.runtime.context import AppContext
from heron.tenancy.owned import MAX_EPOCH_MS

EpochMs = Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
RequiredEpochMs = Annotated[int, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="the number of items to skip")]
Skip = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class Span(TypedDict):
    """A time window paged by offset, as the keyword arguments of the services that list one."""

    since: datetime | None
    before: datetime | None
    limit: int
    offset: int


@dataclass(frozen=True)
class TimeListQuery:
    since: int | None
    before: int | None
    limit: int
    offset: int | None

    def span(self) -> Span:
        """The window as keyword arguments of an offset-paged service (offset 0 when not asked)."""
        return {"since": at(self.since), "before": at(self.before), "limit": self.limit, "offset": self.offset or 0}


def _query(
    since: EpochMs = None,  # inclusive
    before: EpochMs = None,  # exclusive
    limit: Limit = 100,
    offset: Offset = None,
) -> TimeListQuery:
    return TimeListQuery(since, before, limit, offset)


TimeList = Annotated[TimeListQuery, Depends(_query)]


def _span_query(since: EpochMs = None, before: EpochMs = None, limit: Limit = 100, offset: Skip = 0) -> TimeListQuery:
    return TimeListQuery(since, before, limit, offset)


OffsetTimeList = Annotated[TimeListQuery, Depends(_span_query)]


def window(q: TimeListQuery) -> TimeWindow:
    """The window a request asks for."""
    return TimeWindow(at(q.since), at(q.before), offset=q.offset, limit=q.limit)


def listed(
    request: Request,
    ctx: AppContext,
    q: TimeListQuery,
    fetch: Callable[[Session, TimeWindow], TimePage],
    shape: Callable[[Any], Any],
) -> dict[str, Any]:
    """Read the page `fetch` finds in the window `q` asks for and answer it, each row `shape`d."""
    with ctx.db.read() as session:
        page = fetch(session, window(q))
        return answer(request, ctx, [shape(r) for r in page.rows], page)


def answer(request: Request, ctx: AppContext, data: list[Any], page: TimePage) -> dict[str, Any]:
    """The list envelope of a time-window page: `{"data": [...], "paging": {"next"?}}`."""
    return {"data": data, "paging": _next(request, ctx, page)}


def _next(request: Request, ctx: AppContext, page: TimePage) -> dict[str, str]:
    if page.next_after is None:
        return {}
    ms = int(page.next_after[0].timestamp() * 1000)
    # The position replaces the request's own `before` and `offset` (already skipped).
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "offset")]
    if page.split:
        query += [("before", str(ms + 1)), ("offset", str(page.resume_offset))]
    else:
        query.append(("before", str(ms)))
    return {"next": f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"}
