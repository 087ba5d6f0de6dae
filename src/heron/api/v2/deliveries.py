"""Callbacks not delivered (per device, device type, group, callback: the Sigfox v2 routes) and
Heron's outbox actions: retry now, send a test callback, resend messages to a callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from heron.api.context import Ctx, CurrentActor, base_url
from heron.api.paging import page
from heron.api.time_paging import EpochMs, OffsetTimeList, TimeListQuery, at
from heron.api.v2 import PREFIX
from heron.delivery import queries
from heron.delivery.queries import Undelivered
from heron.errors import InvalidInput
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX, tags=["callbacks"])


def _page(
    request: Request,
    ctx: Ctx,
    found: tuple[list[Undelivered], bool],
    q: TimeListQuery,
    shape: Callable[[Undelivered], dict[str, Any]] = queries.wire,
) -> dict[str, Any]:
    rows, has_more = found
    span = q.span()
    return page(request, ctx, [shape(u) for u in rows], has_more=has_more, limit=span["limit"], offset=span["offset"])


@router.get("/devices/{device_id}/callbacks-not-delivered")
async def device_not_delivered(
    request: Request,
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    q: OffsetTimeList,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        found = queries.for_device(session, actor, device_id, **q.span())
        return _page(request, ctx, found, q)


@router.get("/device-types/{device_type_id}/callbacks-not-delivered")
async def device_type_not_delivered(
    request: Request,
    device_type_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    q: OffsetTimeList,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        found = queries.for_device_type(session, actor, parse_id(device_type_id), **q.span())
        return _page(request, ctx, found, q)


@router.get("/device-types/{device_type_id}/callbacks/{callback_id}/callbacks-not-delivered")
async def callback_not_delivered(
    request: Request,
    device_type_id: str,
    callback_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    q: OffsetTimeList,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        found = queries.for_device_type(
            session,
            actor,
            parse_id(device_type_id),
            callback_id=parse_id(callback_id, "callbackId"),
            **q.span(),
        )
        return _page(request, ctx, found, q)


@router.get("/groups/{group_id}/callbacks-not-delivered")
async def group_not_delivered(
    request: Request,
    group_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    q: OffsetTimeList,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        found = queries.for_group(session, actor, parse_id(group_id), **q.span())
        api = base_url(request, ctx) + PREFIX
        return _page(request, ctx, found, q, lambda u: queries.wire_group(u, api))


@router.post("/device-types/{device_type_id}/callbacks-not-delivered/retry")
async def retry_now(
    device_type_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    callback_id: Annotated[str | None, Query(alias="callbackId")] = None,
) -> dict[str, int]:
    with ctx.db.write() as session:
        total = queries.retry_now(
            session,
            actor,
            parse_id(device_type_id),
            parse_id(callback_id, "callbackId", "query") if callback_id is not None else None,
        )
    ctx.deliveries.wake()
    return {"total": total}


@router.post("/device-types/{device_type_id}/callbacks/{callback_id}/test")
async def send_test(device_type_id: str, callback_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        key = queries.send_test(session, actor, parse_id(device_type_id), parse_id(callback_id, "callbackId"))
    ctx.deliveries.wake()
    return {"deliveryId": key}


@router.post("/device-types/{device_type_id}/callbacks/{callback_id}/resend")
async def resend(
    device_type_id: str,
    callback_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    since: EpochMs = None,
    before: EpochMs = None,
) -> dict[str, int]:
    dt_id, cb_id = parse_id(device_type_id), parse_id(callback_id, "callbackId")  # the path first
    start, end = at(since), at(before)
    if start is None:
        raise InvalidInput.field("since", "field required", "query")
    if end is None:
        raise InvalidInput.field("before", "field required", "query")
    with ctx.db.write() as session:
        total = queries.resend(session, actor, dt_id, cb_id, start, end)
    ctx.deliveries.wake()
    return {"total": total}
