"""/api/v2/devices (Sigfox v2 layout; Heron adds LoRaWAN devices (`devEui`, `appKey`, `joinEui`,
`profId`, `tags`), the `lifecycle` filter and `POST /devices/{id}/restore`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from heron.api import cursor, offload
from heron.api.context import Ctx, CurrentActor, base_url
from heron.api.paging import keyset_page
from heron.api.schemas import ApiModel, GroupIdsFilter, Limit, NoNul, Offset, UpdateModel, id_list
from heron.api.v2 import PREFIX, wire
from heron.api.v2.render import native_json
from heron.errors import InvalidInput
from heron.registry import device_queries, devices
from heron.registry.devices import DeviceFields
from heron.runtime.context import AppContext
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


class TokenUnsubscribe(ApiModel):
    """Sigfox `tokenUnsubscribe` (the document requires the time; the service says so, once the
    device id is known to be valid)."""

    unsubscription_time: int | None = Field(default=None, description="epoch ms (required); past: ends it now")


class DeviceUpdate(_Settings, UpdateModel):
    unsettable = frozenset({"lat", "lng", "product_certificate", "tags"})


def _required(value: str | None, field: str) -> str:
    if value is None:
        raise InvalidInput.field(field, "field required")
    return value


class _Filters:
    """The query filters shared by the device list and its CSV export (api.md; Heron adds `name`,
    `lifecycle`, `comState`, `tokenState`, `contractId`, `lastSeenFrom`/`lastSeenTo`)."""

    def __init__(
        self,
        id: Annotated[str | None, Query(max_length=16), NoNul] = None,
        group_ids: GroupIdsFilter = None,
        deep: bool = False,
        device_type_id: Annotated[str | None, Query(alias="deviceTypeId", max_length=20)] = None,
        contract_id: Annotated[str | None, Query(alias="contractId", max_length=20)] = None,
        name: Annotated[str | None, Query(max_length=100, description="substring, any case"), NoNul] = None,
        lifecycle: Annotated[str | None, Query(max_length=12), NoNul] = None,
        com_state: Annotated[
            str | None,
            Query(alias="comState", max_length=12, description="0-5 or NO, OK, WARN, KO, NA, NOT_SEEN"),
            NoNul,
        ] = None,
        token_state: Annotated[
            str | None,
            Query(alias="tokenState", max_length=16, description="0 OK or 1 OFF_CONTRACT (names too)"),
            NoNul,
        ] = None,
        last_seen_from: Annotated[
            str | None, Query(alias="lastSeenFrom", max_length=20, description="epoch ms, inclusive"), NoNul
        ] = None,
        last_seen_to: Annotated[
            str | None, Query(alias="lastSeenTo", max_length=20, description="epoch ms, exclusive"), NoNul
        ] = None,
        min_id: Annotated[str | None, Query(alias="minId", max_length=16), NoNul] = None,
        max_id: Annotated[str | None, Query(alias="maxId", max_length=16), NoNul] = None,
        sort: Annotated[str, Query(max_length=10), NoNul] = "id",
    ) -> None:
        self.sort = device_queries.check_sort(sort)
        self.filter = device_queries.parse_filter(
            id=id,
            min_id=min_id,
            max_id=max_id,
            name=name,
            lifecycle=lifecycle,
            token_state=token_state,
            com_state=com_state,
            device_type_id=parse_id(device_type_id, "deviceTypeId", "query") if device_type_id is not None else None,
            contract_id=parse_id(contract_id, "contractId", "query") if contract_id is not None else None,
            group_ids=[parse_id(g, "groupIds", "query") for g in id_list(group_ids)],
            deep=deep,
            last_seen_from=last_seen_from,
            last_seen_to=last_seen_to,
        )


Filters = Annotated[_Filters, Depends()]


def cursor_scope(route: str, sort: str) -> str:
    return f"{route}:{sort}"


def read_page_id(page_id: str | None, ctx: AppContext, scope: str, sort: str) -> device_queries.Position | None:
    if page_id is None:
        return None
    return device_queries.Position.from_json(cursor.unsign(page_id, ctx.session_secret, scope), sort)


def page_of_devices(
    request: Request,
    ctx: AppContext,
    result: device_queries.DevicePage,
    *,
    scope: str,
    limit: int,
    with_total: bool,
) -> Response:
    """The page as JSON, serialized by orjson directly (FastAPI's encoder costs ~10 ms a page)."""
    token = cursor.sign(result.next.to_json(), ctx.session_secret, scope) if result.next is not None else None
    extra = {"total": result.total} if with_total else None
    data = [wire.device(v) for v in result.views]
    return native_json(keyset_page(request, ctx, data, page_id=token, limit=limit, extra=extra))


@router.get("")
async def list_devices(
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    filters: Filters,
    limit: Limit = 100,
    offset: Offset = 0,
    with_total: Annotated[bool, Query(alias="withTotal")] = False,
    page_id: Annotated[str | None, Query(alias="pageId", max_length=cursor.MAX_TOKEN)] = None,
) -> Response:
    """`paging.next` carries `pageId`, the position after the page's last row; `offset` skips
    rows from there (or from the start). `withTotal=true` adds the exact `total`."""
    scope = cursor_scope("devices", filters.sort)
    after = read_page_id(page_id, ctx, scope, filters.sort)

    def page() -> Response:
        with ctx.db.read() as session:
            result = device_queries.list_devices(
                session,
                actor,
                filters.filter,
                sort=filters.sort,
                limit=limit,
                offset=offset,
                after=after,
                with_total=with_total,
            )
            return page_of_devices(request, ctx, result, scope=scope, limit=limit, with_total=with_total)

    # In a worker thread: an exact total, an offset or a name substring over a million devices
    # is a scan whose cost grows with the table (api/offload.py).
    return await offload.run(page)


@router.get("/export", response_class=StreamingResponse)
async def export_devices(
    actor: CurrentActor,
    ctx: Ctx,
    filters: Filters,
    columns: Annotated[
        str | None,
        Query(max_length=1000, description="comma-separated; default " + ",".join(device_queries.DEFAULT_COLUMNS)),
        NoNul,
    ] = None,
) -> StreamingResponse:
    """The filtered list as CSV (`text/csv`), streamed in chunks read by position: constant
    memory whatever the size. Root keys are never among the columns."""
    names = device_queries.parse_columns(columns)
    with ctx.db.read() as session:
        plan = device_queries.plan(session, actor, filters.filter, filters.sort)
    return StreamingResponse(
        device_queries.export_csv(ctx.db, plan, names),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="devices.csv"'},
    )


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


@router.put("/{device_id}/unsubscribe", status_code=204)
async def unsubscribe_device(device_id: str, body: TokenUnsubscribe, actor: CurrentActor, ctx: Ctx) -> Response:
    with ctx.db.write() as session:
        devices.unsubscribe(session, actor, device_id, body.unsubscription_time)
    return Response(status_code=204)


@router.post("/{device_id}/disengage", status_code=204)
async def disengage_device(device_id: str, actor: CurrentActor, ctx: Ctx) -> Response:
    """The sequence-number check is off for the device's next message."""
    with ctx.db.write() as session:
        devices.disengage(session, actor, device_id)
    return Response(status_code=204)


def _certificate(key: str) -> dict[str, Any]:
    # Heron keeps a certificate's key only; `name` (required by the document) repeats it.
    return {"key": key, "name": key}


@router.get("/{device_id}/certificate/product")
async def product_certificate(device_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _certificate(devices.certificate(session, actor, device_id, "product"))


@router.get("/{device_id}/certificate/modem")
async def modem_certificate(device_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _certificate(devices.certificate(session, actor, device_id, "modem"))


@router.get("/{device_id}/product-certificate")
async def product_certificate_with_pac(
    device_id: str,
    actor: CurrentActor,
    ctx: Ctx,
    pac: Annotated[str | None, Query(max_length=40, description="required"), NoNul] = None,
) -> dict[str, Any]:
    with ctx.db.read() as session:
        return _certificate(devices.certificate_with_pac(session, actor, ctx.keyring, device_id, pac))
