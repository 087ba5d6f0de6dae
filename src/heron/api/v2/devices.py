"""/api/v2/devices (Sigfox v2 layout; Heron adds LoRaWAN devices (`devEui`, `appKey`, `joinEui`,
`profId`, `tags`), the `lifecycle` filter and `POST /devices/{id}/restore`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from heron.api.context import Ctx, CurrentActor, base_url
from heron.api.paging import page
from heron.api.schemas import MAX_OFFSET, ApiModel, NoNul, UpdateModel, id_list
from heron.api.v2 import PREFIX, wire
from heron.errors import InvalidInput
from heron.registry import devices
from heron.registry.devices import DeviceFields
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/devices", tags=["devices"])


class ProductCertificate(ApiModel):
    key: str | None = Field(default=None, max_length=64)


class _Settings(ApiModel):
    name: str | None = Field(default=None, max_length=100)
    activable: bool | None = None
    automatic_renewal: bool | None = None
    lat: float | None = Field(default=None, description="-90 to 90")
    lng: float | None = Field(default=None, description="-180 to 180")
    product_certificate: ProductCertificate | None = None
    prototype: bool | None = None
    tags: str | None = Field(default=None, max_length=4000, description="LORAWAN devices only")

    def fields(self) -> DeviceFields:
        out = DeviceFields()
        for name in self.model_fields_set & set(DeviceFields.__dataclass_fields__):
            value = getattr(self, name)
            if name == "product_certificate":
                value = value.key if value is not None else None
            setattr(out, name, value)
        return out


class DeviceCreate(_Settings):
    id: str | None = Field(default=None, max_length=20, description="SIGFOX: the device id (hex)")
    pac: str | None = Field(default=None, max_length=40, description="SIGFOX: the PAC (16 hex digits)")
    nak: str | None = Field(default=None, max_length=64, description="SIGFOX: the NAK (32 hex digits)")
    device_type_id: str = Field(max_length=20)
    dev_eui: str | None = Field(default=None, max_length=40, description="LORAWAN: the DevEUI")
    app_key: str | None = Field(default=None, max_length=64, description="LORAWAN: the AppKey (write-only)")
    join_eui: str | None = Field(default=None, max_length=40, description="LORAWAN: the join server EUI")
    prof_id: str | None = Field(default=None, max_length=20, description="LORAWAN: the device profile")


class DeviceUpdate(_Settings, UpdateModel):
    unsettable = frozenset({"lat", "lng", "product_certificate", "tags"})


def _required(value: str | None, field: str) -> str:
    if value is None:
        raise InvalidInput.field(field, "field required")
    return value


@router.get("")
async def list_devices(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    id: Annotated[str | None, Query(max_length=16), NoNul] = None,
    group_ids: Annotated[list[str] | None, Query(alias="groupIds")] = None,
    deep: bool = False,
    device_type_id: Annotated[str | None, Query(alias="deviceTypeId", max_length=20)] = None,
    lifecycle: Annotated[str | None, Query(max_length=12), NoNul] = None,
    sort: Annotated[str, Query(max_length=10), NoNul] = "id",
    min_id: Annotated[str | None, Query(alias="minId", max_length=16), NoNul] = None,
    max_id: Annotated[str | None, Query(alias="maxId", max_length=16), NoNul] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    gids = [parse_id(g, "groupIds", "query") for g in id_list(group_ids)]
    dtid = parse_id(device_type_id, "deviceTypeId", "query") if device_type_id is not None else None
    with ctx.db.read() as session:
        rows, has_more = devices.list_devices(
            session,
            actor,
            id_prefix=id,
            group_ids=gids or None,
            deep=deep,
            device_type_id=dtid,
            lifecycle=lifecycle,
            sort=sort,
            min_id=min_id,
            max_id=max_id,
            limit=limit,
            offset=offset,
        )
        data = [wire.device(v) for v in rows]
    return page(request, ctx, data, has_more=has_more, limit=limit, offset=offset)


@router.post("", status_code=201)
async def create_device(
    body: DeviceCreate, request: Request, response: Response, actor: CurrentActor, ctx: Ctx
) -> dict[str, str]:
    dtid = parse_id(body.device_type_id, "deviceTypeId", "body")
    with ctx.db.write() as session:
        if body.dev_eui is not None:
            view = devices.create_lorawan(
                session,
                actor,
                ctx.keyring,
                dev_eui=body.dev_eui,
                app_key=_required(body.app_key, "appKey"),
                device_type_id=dtid,
                fields=body.fields(),
                join_eui=body.join_eui,
                prof_id=parse_id(body.prof_id, "profId", "body") if body.prof_id is not None else None,
            )
        else:
            view = devices.create_sigfox(
                session,
                actor,
                ctx.keyring,
                identifier=_required(body.id, "id"),
                pac=_required(body.pac, "pac"),
                nak=body.nak,
                device_type_id=dtid,
                fields=body.fields(),
            )
        identifier = view.device.identifier
    response.headers["Location"] = f"{base_url(request, ctx)}{PREFIX}/devices/{identifier}"
    return {"id": identifier}


@router.get("/{device_id}")
async def get_device(device_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        view = devices.get(session, actor, device_id)
        secrets = devices.secrets_of(ctx.keyring, view.device) if actor.can("device:write", view.group.path) else None
        return wire.device(view, secrets)


@router.put("/{device_id}", status_code=204)
async def update_device(device_id: str, body: DeviceUpdate, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        devices.update_device(session, actor, device_id, body.fields())
    return Response(status_code=204)


@router.delete("/{device_id}", status_code=204)
async def delete_device(device_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        devices.delete(session, actor, device_id)
    return Response(status_code=204)


@router.post("/{device_id}/restore", status_code=204)
async def restore_device(device_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        devices.restore(session, actor, device_id)
    return Response(status_code=204)
