"""/api/v2/device-types/{id}/callbacks: a device type's callbacks (Sigfox v2 layout), enable,
downlink selection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.schemas import ApiModel, UpdateModel
from heron.api.v2 import PREFIX, wire
from heron.delivery import callbacks
from heron.delivery.callbacks import CallbackFields
from heron.errors import InvalidInput
from heron.tenancy.owned import KEEP
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/device-types/{device_type_id}/callbacks", tags=["callbacks"])


class _Settable(ApiModel):
    channel: str | None = Field(default=None, max_length=10, description="URL, BATCH_URL or EMAIL")
    callback_type: int | None = Field(default=None, description="0 DATA, 1 SERVICE, 2 ERROR")
    callback_subtype: int | None = Field(
        default=None, description="0 STATUS, 2 UPLINK, 3 BIDIR, 4 ACKNOWLEDGE, 5 REPEATER, 6 DATA_ADVANCED"
    )
    payload_config: str | None = Field(default=None, max_length=4000)
    enabled: bool | None = None
    send_duplicate: bool | None = None
    url: str | None = Field(default=None, max_length=2000)
    http_method: str | None = Field(default=None, max_length=6)
    headers: dict[str, str] | None = None
    send_sni: bool | None = None
    body_template: str | None = Field(default=None, max_length=20_000)
    content_type: str | None = Field(default=None, max_length=100)
    line_pattern: str | None = Field(default=None, max_length=2000)
    recipient: str | None = Field(default=None, max_length=500)
    subject: str | None = Field(default=None, max_length=500)
    message: str | None = Field(default=None, max_length=20_000)
    signing_secret: str | None = Field(default=None, max_length=200, description="write-only")

    def fields(self) -> CallbackFields:
        given = self.model_fields_set
        return CallbackFields(
            **{name: getattr(self, name) if name in given else KEEP for name in type(self).model_fields}
        )


class CallbackCreate(_Settable):
    pass


class CallbackUpdate(_Settable, UpdateModel):
    unsettable = frozenset(
        {
            "callback_subtype",
            "payload_config",
            "headers",
            "body_template",
            "content_type",
            "subject",
            "message",
            "signing_secret",
        }
    )


@router.get("")
async def list_callbacks(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        views = callbacks.list_callbacks(session, actor, ctx.keyring, parse_id(device_type_id))
        return {"data": [wire.callback(v) for v in views]}


@router.post("", status_code=201)
async def create_callback(device_type_id: str, body: CallbackCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, str]:
    with ctx.db.write() as session:
        view = callbacks.create(
            session, actor, ctx.keyring, parse_id(device_type_id), body.fields(), allow=ctx.deliveries.allow
        )
        return {"id": str(view.callback.id)}


@router.put("/{callback_id}", status_code=204)
async def update_callback(
    device_type_id: str, callback_id: str, body: CallbackUpdate, actor: CurrentActor, ctx: Ctx
) -> Response:
    with ctx.db.write() as session:
        callbacks.update_callback(
            session,
            actor,
            ctx.keyring,
            parse_id(device_type_id),
            parse_id(callback_id, "callbackId"),
            body.fields(),
            allow=ctx.deliveries.allow,
        )
    return Response(status_code=204)


@router.delete("/{callback_id}", status_code=204)
async def delete_callback(device_type_id: str, callback_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        callbacks.delete(session, actor, parse_id(device_type_id), parse_id(callback_id, "callbackId"))
    return Response(status_code=204)


@router.put("/{callback_id}/enable", status_code=204)
async def enable_callback(
    device_type_id: str, callback_id: str, actor: CurrentActor, ctx: Ctx, enabled: bool | None = None
) -> Response:
    dt_id, cb_id = parse_id(device_type_id), parse_id(callback_id, "callbackId")  # the path first
    if enabled is None:
        raise InvalidInput.field("enabled", "field required", "query")
    with ctx.db.write() as session:
        callbacks.enable(session, actor, dt_id, cb_id, enabled)
    return Response(status_code=204)


@router.put("/{callback_id}/downlink", status_code=204)
async def select_downlink(device_type_id: str, callback_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        callbacks.select_downlink(session, actor, parse_id(device_type_id), parse_id(callback_id, "callbackId"))
    return Response(status_code=204)
