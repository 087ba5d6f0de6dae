"""/api/v2/devices/bulk: Sigfox v2 bulk operations (create, edit, transfer, replace,
unsubscribe) and Heron's series operations from a file or a pasted list (New, Edit, Transfer,
Replace, Delete series), all jobs of the one job engine. Included before the devices router,
so that `/devices/bulk` is never read as a device id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy.orm import Session

from heron.api import offload
from heron.api.context import Ctx, CurrentActor
from heron.api.schemas import ApiModel, NoNul
from heron.api.v2 import PREFIX
from heron.errors import InvalidInput
from heron.jobs import engine
from heron.registry import bulk_jobs, series_input
from heron.runtime.context import AppContext
from heron.tenancy.access import Actor
from heron.tenancy.validation import parse_id

# Bodies of up to 100,000 rows: read, decoded and submitted off the event loop (api/offload.py).
router = APIRouter(prefix=PREFIX + "/devices/bulk", tags=["devices"], route_class=offload.OffloadedBody)

Rows = Annotated[list[Any], Field(max_length=bulk_jobs.MAX_ROWS), offload.rows_as_given(bulk_jobs.MAX_ROWS)]


class _RowsBody(ApiModel):
    rows_checked_later = frozenset({"data"})


class Certificate(ApiModel):
    key: str | None = Field(default=None, max_length=64)


class BulkCreate(_RowsBody):
    device_type_id: str = Field(max_length=20)
    prefix: str | None = Field(default=None, max_length=40, description="device names: prefix + name (or increment)")
    product_certificate: Certificate | None = None
    prototype: bool = False
    data: Rows = Field(description="[{id*, pac*, name, lat, lng, automaticRenewal, activable}]")


class BulkEdit(_RowsBody):
    data: Rows = Field(
        description="[{id*, name, activable, automaticRenewal, lat, lng, productCertificate, prototype}]"
    )


class BulkTransfer(_RowsBody):
    device_type_id: str = Field(max_length=20)
    data: Rows = Field(description="[{id*, keepHistory=false, activable=true}]")


class BulkReplace(_RowsBody):
    data: Rows = Field(description="[{deviceId*, targetDeviceId*}]")


class BulkUnsubscribe(_RowsBody):
    data: Rows = Field(description="[{id*, unsubscriptionTime (epoch ms)}]")


class DeviceActionJob(_RowsBody):
    """Sigfox `deviceActionJob`: the device ids."""

    data: Rows = Field(description='device ids: ["007B480F", ...]')


class BulkDelete(_RowsBody):
    data: Rows = Field(description='device ids: ["007B480F", ...] (Heron: the Delete series)')


async def _started(
    ctx: AppContext, prepare: Callable[[Session], bulk_jobs.Store], with_total: bool = True
) -> dict[str, Any]:
    """In a worker thread (sessions opened and closed there): `prepare` (its cost grows with the
    rows: checks, PAC sealing, reading the named devices) on a read session, then the job stored
    in a short write transaction (on SQLite the write lock is the ingest's too); then the
    runner is woken."""

    def run() -> dict[str, Any]:
        with ctx.db.read() as session:
            store = prepare(session)
        with ctx.db.write() as session:
            job = store(session)
            return {"total": job.total, "jobId": job.req_id} if with_total else {"jobId": job.req_id}

    answer = await offload.run(run)
    ctx.jobs.wake()
    return answer


def _id(value: str, field: str) -> int:
    return parse_id(value, field, "body")


@router.post("", summary="Create devices in bulk (a job)")
async def create(body: BulkCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    device_type_id = _id(body.device_type_id, "deviceTypeId")
    return await _started(
        ctx,
        lambda session: bulk_jobs.prepare_create(
            session,
            actor,
            ctx.keyring,
            device_type_id=device_type_id,
            rows=body.data,
            prefix=body.prefix,
            product_certificate=body.product_certificate.key if body.product_certificate else None,
            prototype=body.prototype,
        ),
    )


@router.put("", status_code=201, summary="Edit devices in bulk (a job)")
async def edit(body: BulkEdit, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    return await _started(ctx, lambda session: bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.EDIT, body.data))


@router.post("/transfer", summary="Transfer devices to another device type (a job)")
async def transfer(body: BulkTransfer, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    device_type_id = _id(body.device_type_id, "deviceTypeId")
    return await _started(
        ctx, lambda session: bulk_jobs.prepare_transfer(session, actor, device_type_id=device_type_id, rows=body.data)
    )


@router.post("/replace", summary="Replace devices by new ones (a job)")
async def replace(body: BulkReplace, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    return await _started(
        ctx, lambda session: bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.REPLACE, body.data, key="deviceId")
    )


@router.post("/unsubscribe", status_code=201, summary="End devices' tokens at a time (a job)")
async def unsubscribe(body: BulkUnsubscribe, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    return await _started(
        ctx, lambda session: bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.UNSUBSCRIBE, body.data), False
    )


@router.post("/delete", summary="Delete devices (Heron: the Delete series as an API call)")
async def delete(body: BulkDelete, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    return await _started(
        ctx, lambda session: bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.DELETE, _id_rows(body.data))
    )


ACTIONS = {"restart": bulk_jobs.RESTART, "suspend": bulk_jobs.SUSPEND, "resume": bulk_jobs.RESUME}
GroupId = Annotated[str | None, Query(alias="groupId", max_length=20, description="only devices of this group")]


def _id_rows(data: list[Any]) -> list[dict[str, Any]]:
    return [{"id": r} if isinstance(r, str) else {"id": None, "error": "must be a device id"} for r in data]


def _action_routes(action: str, kind: str) -> None:
    """`POST /devices/bulk/{action}` (Sigfox `deviceActionJob`, 201 `{jobId}`) and its status."""

    async def submit(body: DeviceActionJob, actor: CurrentActor, ctx: Ctx, group_id: GroupId = None) -> dict[str, Any]:
        gid = parse_id(group_id, "groupId", "query") if group_id is not None else None
        return await _started(
            ctx,
            lambda session: bulk_jobs.prepare_on_devices(session, actor, kind, _id_rows(body.data), group_id=gid),
            with_total=False,
        )

    async def status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
        with ctx.db.read() as session:
            return action_job(session, actor, job_id, kind)

    router.add_api_route(
        f"/{action}", submit, methods=["POST"], status_code=201, summary=f"{action.title()} devices (a job)"
    )
    router.add_api_route(
        f"/{action}/{{job_id}}", status, methods=["GET"], summary=f"A {action} job's status (actionJob)"
    )


# -- series operations from a file or a pasted list (the GUI's forms, the CLI) ----------------------
Operation = Literal["new", "edit", "transfer", "replace", "delete"]


@router.post(
    "/series/{operation}",
    summary="A series operation from a CSV/TXT file (multipart `file`) or a pasted list (text/plain body)",
)
async def series(
    operation: Operation,
    request: Request,
    actor: CurrentActor,
    ctx: Ctx,
    device_type_id: Annotated[str | None, Query(alias="deviceTypeId", max_length=20)] = None,
    prefix: Annotated[str | None, Query(max_length=40), NoNul] = None,
    product_certificate: Annotated[str | None, Query(alias="productCertificate", max_length=64), NoNul] = None,
    automatic_renewal: Annotated[bool | None, Query(alias="automaticRenewal")] = None,
    activable: bool = True,
    keep_history: Annotated[bool, Query(alias="keepHistory")] = False,
) -> dict[str, Any]:
    dtid = parse_id(device_type_id, "deviceTypeId", "query") if device_type_id else None
    # Refused from its size or a binary chunk while it arrives; decoded, parsed and submitted in
    # a worker thread (a 100,000-line file is seconds of work).
    data = await offload.upload(request, series_input.MAX_BYTES, names=("file", "list"))

    def prepare(session: Session) -> bulk_jobs.Store:
        return _prepare_series(
            session,
            actor,
            ctx,
            operation,
            series_input.decode(data),
            device_type_id=dtid,
            prefix=prefix,
            product_certificate=product_certificate,
            automatic_renewal=automatic_renewal,
            activable=activable,
            keep_history=keep_history,
        )

    return await _started(ctx, prepare)


def _prepare_series(
    session: Any,
    actor: Actor,
    ctx: Any,
    operation: str,
    text: str,
    *,
    device_type_id: int | None,
    prefix: str | None,
    product_certificate: str | None,
    automatic_renewal: bool | None,
    activable: bool,
    keep_history: bool,
) -> bulk_jobs.Store:
    def needs_type() -> int:
        if device_type_id is None:
            raise InvalidInput.field("deviceTypeId", "is required for this series operation", "query")
        return device_type_id

    if operation == "new":
        return bulk_jobs.prepare_create(
            session,
            actor,
            ctx.keyring,
            device_type_id=needs_type(),
            rows=series_input.new_series(text),
            prefix=prefix,
            product_certificate=product_certificate,
            automatic_renewal=automatic_renewal,
            activable=activable,
        )
    if operation == "transfer":
        rows = [r | {"activable": activable} for r in series_input.id_list(text)]
        return bulk_jobs.prepare_transfer(
            session, actor, device_type_id=needs_type(), rows=rows, keep_history=keep_history
        )
    if operation == "edit":
        return bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.EDIT, series_input.edits(text))
    if operation == "replace":
        return bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.REPLACE, series_input.replacements(text))
    return bulk_jobs.prepare_on_devices(session, actor, bulk_jobs.DELETE, series_input.id_list(text))


# -- job status -----------------------------------------------------------------------------------
def _errors(rep: engine.JobReport) -> list[dict[str, Any]]:
    return [{"entity": entity, "message": message, "type": 0} for entity, message in rep.entries]


def action_job(session: Any, actor: Actor, job_id: str, kind: str) -> dict[str, Any]:
    """A job's status in the Sigfox `actionJob` shape."""
    rep = engine.report(session, bulk_jobs.get_job(session, actor, job_id, [kind]))
    errors = rep.stats.get(bulk_jobs.ERRORS, 0)
    return {
        "jobDone": rep.job.state in engine.FINISHED,
        "status": {
            "total": rep.job.total,
            "nbSuccess": rep.stats.get(bulk_jobs.SUCCESS, 0),
            "nbErrors": errors,
            "errors": _errors(rep),
        },
    }


@router.get("/unsubscribe/{job_id}", summary="An unsubscription job's status (Sigfox actionJob)")
async def unsubscribe_status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return action_job(session, actor, job_id, bulk_jobs.UNSUBSCRIBE)


# restart: a device whose token ended takes a new one on its device type's contract; suspend: its
# frames are counted as undelivered, not stored; resume: undoes suspend (registry/bulk_jobs.py).
for _action, _kind in ACTIONS.items():
    _action_routes(_action, _kind)


# The same restart for every device of a device type or of a contract (Sigfox paths).
scoped_router = APIRouter(prefix=PREFIX, tags=["devices"])


@scoped_router.post("/device-types/{device_type_id}/bulk/restart", status_code=201)
async def restart_device_type(device_type_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    dtid = parse_id(device_type_id)
    return await _started(ctx, lambda session: bulk_jobs.prepare_restart_device_type(session, actor, dtid), False)


@scoped_router.get("/device-types/bulk/restart/{job_id}", summary="A device type's restart job (Sigfox actionJob)")
async def device_type_restart_status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return action_job(session, actor, job_id, bulk_jobs.RESTART)


@scoped_router.post("/contract-infos/{contract_id}/bulk/restart", status_code=201)
async def restart_contract(contract_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    cid = parse_id(contract_id)
    return await _started(ctx, lambda session: bulk_jobs.prepare_restart_contract(session, actor, cid), False)


@scoped_router.get("/contract-infos/bulk/restart/{job_id}", summary="A contract's restart job (Sigfox actionJob)")
async def contract_restart_status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return action_job(session, actor, job_id, bulk_jobs.RESTART)


@router.get("/{job_id}", summary="A bulk job's status (Sigfox registrationJobStatus)")
async def status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        rep = engine.report(session, bulk_jobs.get_job(session, actor, job_id, bulk_jobs.KINDS))
    return {
        "jobDone": rep.job.state in engine.FINISHED,
        "total": rep.job.total,
        "status": {"success": rep.stats.get(bulk_jobs.SUCCESS, 0), "errors": _errors(rep)},
    }
