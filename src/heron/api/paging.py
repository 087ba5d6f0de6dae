"""The list envelope: `{"data": [...], "paging": {"next": "<absolute URL>"}}`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from heron.api.context import base_url
from heron.runtime.context import AppContext


def page(
    request: Request,
    ctx: AppContext,
    data: list[Any],
    *,
    has_more: bool,
    limit: int,
    offset: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    paging: dict[str, str] = {}
    if has_more:
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "limit")]
        query += [("limit", str(limit)), ("offset", str(offset + limit))]
        paging["next"] = f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"
    return {"data": data, "paging": paging, **(extra or {})}


def keyset_page(
    request: Request,
    ctx: AppContext,
    data: list[Any],
    *,
    page_id: str | None,
    limit: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A page whose `paging.next` carries `pageId` (the position after its last row) in place of
    `offset`: the next page starts where this one ended, whatever was inserted meanwhile."""
    paging: dict[str, str] = {}
    if page_id is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "limit", "pageId")]
        query += [("limit", str(limit)), ("pageId", page_id)]
        paging["next"] = f"{base_url(request, ctx)}{request.url.path}?{urlencode(query)}"
    return {"data": data, "paging": paging, **(extra or {})}
