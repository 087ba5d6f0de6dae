"""Lists read by time, newest first (messages, events): `since` / `before` in epoch ms, and a
`paging.next` that carries `before` (as Sigfox clients read it) and a signed `pageId`, the exact
(time, id) position: one group commit stores many rows at one instant, so a time alone cannot
say where a page ended."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request

from heron.api import cursor
from heron.api.context import AppContext, base_url
from heron.db.keyset import Position
from heron.errors import InvalidInput
from heron.registry._common import MAX_EPOCH_MS

EpochMs = Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
RequiredEpochMs = Annotated[int, Query(ge=0, le=MAX_EPOCH_MS, description="epoch milliseconds")]
Limit = Annotated[int, Query(ge=1, le=100)]
PageId = Annotated[str | None, Query(alias="pageId", max_length=cursor.MAX_TOKEN)]


def at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def position(page_id: str | None, ctx: AppContext, scope: str) -> Position | None:
    """The position a `pageId` of this list (`scope`) stands for; 400 for any other token."""
    if page_id is None:
        return None
    raw = cursor.unsign(page_id, ctx.session_secret, scope)
    try:
        return datetime.fromisoformat(raw[0]), int(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise InvalidInput.field("pageId", "is not a page token of this list", "query") from None


def paging(request: Request, ctx: AppContext, next_after: Position | None, scope: str) -> dict[str, str]:
    if next_after is None:
        return {}
    when, last_id = next_after
    token = cursor.sign([when.isoformat(), last_id], ctx.session_secret, scope)
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "pageId")]
    # `before` as Sigfox clients read it; the page token is the exact position within that ms.
    query += [("before", str(int(when.timestamp() * 1000) + 1)), ("pageId", token)]
    return {"next": f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"}
