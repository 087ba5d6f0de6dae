"""Lists read by time, newest first (messages, events, locations): `since` (inclusive) and
`before` (exclusive) in epoch ms, `limit`, `offset`, and a `paging.next` a client can follow.

`paging.next` carries `before` (as Sigfox clients read it): the last row's time when the page
ends on a millisecond boundary (heron.db.keyset's page rule), so a client that pages by
`before` = the last row's `time` and one that follows `paging.next` ask for the same thing;
when the page ends inside a millisecond (more than `limit` rows share it), `before` is the
next millisecond and a signed `pageId` holds the exact (time, id) position within it.

A time-window list route takes `q: TimeList` and answers `answer(request, ctx, data, page,
scope)` for the `TimePage` its service made from `window(q, ctx, scope)`:

    @router.get("/devices/{device_id}/things")
    async def things(request: Request, device_id: str, actor: CurrentActor, ctx: Ctx, q: TimeList):
        scope = f"things:device:{device_id}"
        with ctx.db.read() as session:
            page = service.things(session, actor, device_id, window(q, ctx, scope))
            return answer(request, ctx, [wire(r) for r in page.rows], page, scope)

and the service pages with `heron.db.keyset.newest_first_page(session, select(...).where(scope),
Thing.time, Thing.id, window, position=lambda row: (row[0].time, row[0].id))`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request

from heron.api import cursor
from heron.api.context import AppContext, base_url
from heron.api.schemas import MAX_OFFSET
from heron.db.keyset import Position, TimePage, TimeWindow
from heron.errors import InvalidInput
from heron.registry._common import MAX_EPOCH_MS

EpochMs = Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
RequiredEpochMs = Annotated[int, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
Limit = Annotated[int, Query(ge=1, le=100)]
PageId = Annotated[str | None, Query(alias="pageId", max_length=cursor.MAX_TOKEN)]
Offset = Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="the number of items to skip")]


def at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class TimeListQuery:
    since: int | None
    before: int | None
    limit: int
    offset: int | None
    page_id: str | None


def _query(
    since: EpochMs = None,  # inclusive
    before: EpochMs = None,  # exclusive
    limit: Limit = 100,
    offset: Offset = None,
    page_id: PageId = None,
) -> TimeListQuery:
    return TimeListQuery(since, before, limit, offset, page_id)


TimeList = Annotated[TimeListQuery, Depends(_query)]


def window(q: TimeListQuery, ctx: AppContext, scope: str) -> TimeWindow:
    """The window a request asks for; 400 naming `pageId` for a token not of this list."""
    return TimeWindow(at(q.since), at(q.before), position(q.page_id, ctx, scope), q.offset, q.limit)


def answer(request: Request, ctx: AppContext, data: list[Any], page: TimePage, scope: str) -> dict[str, Any]:
    """The list envelope of a time-window page: `{"data": [...], "paging": {"next"?}}`."""
    return {"data": data, "paging": _next(request, ctx, page.next_after, page.split, scope)}


def position(page_id: str | None, ctx: AppContext, scope: str) -> Position | None:
    """The position a `pageId` of this list (`scope`) stands for; 400 for any other token."""
    if page_id is None:
        return None
    raw = cursor.unsign(page_id, ctx.session_secret, scope)
    try:
        return datetime.fromisoformat(raw[0]), int(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise InvalidInput.field("pageId", "is not a page token of this list", "query") from None


def _next(request: Request, ctx: AppContext, next_after: Position | None, split: bool, scope: str) -> dict[str, str]:
    if next_after is None:
        return {}
    when, last_id = next_after
    ms = int(when.timestamp() * 1000)
    # The position replaces the request's own `before`, `pageId` and `offset` (already skipped).
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "pageId", "offset")]
    if split:
        token = cursor.sign([when.isoformat(), last_id], ctx.session_secret, scope)
        query += [("before", str(ms + 1)), ("pageId", token)]
    else:
        query.append(("before", str(ms)))
    return {"next": f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"}
