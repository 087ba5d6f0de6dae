"""/api/v2/devices/bulk: Sigfox v2 bulk operations (create, edit, transfer, replace,
unsubscribe) and Heron's series operations from a file or a pasted list (New, Edit, Transfer,
Replace, Delete series), all jobs of the one job engine. Included before the devices router,
so that `/devices/bulk` is never read as a device id."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from heron.api.context import Ctx, CurrentActor
from heron.api.schemas import ApiModel, NoNul
from heron.api.v2 import PREFIX
from heron.errors import InvalidInput
from heron.jobs import engine
from heron.jobs.models import Job
from heron.registry import bulk_jobs, series_input
from heron.tenancy.access import Actor
from heron.tenancy.validation import parse_id

router = APIRouter(prefix=PREFIX + "/devices/bulk", tags=["devices"])

Rows = Annotated[list[Any], Field(max_length=bulk_jobs.MAX_ROWS)]


class Certificate(ApiModel):
    key: str | None = Field(default=None, max_length=64)


class BulkCreate(ApiModel):
    device_type_id: str = Field(max_length=20)
    prefix: str | None = Field(default=None, max_length=40, description="device names: prefix + name (or increment)")
    product_certificate: Certificate | None = None
    prototype: bool = False
    data: Rows = Field(description="[{id*, pac*, name, lat, lng, automaticRenewal, activable}]")


class BulkEdit(ApiModel):
    data: Rows = Field(
        description="[{id*, name, activable, automaticRenewal, lat, lng, productCertificate, prototype}]"
    )


class BulkTransfer(ApiModel):
    device_type_id: str = Field(max_length=20)
    data: Rows = Field(description="[{id*, keepHistory=false, activable=true}]")


class BulkReplace(ApiModel):
    data: Rows = Field(description="[{deviceId*, targetDeviceId*}]")


class BulkUnsubscribe(ApiModel):
    data: Rows = Field(description="[{id*, unsubscriptionTime (epoch ms)}]")


class DeviceActionJob(ApiModel):
    """Sigfox `deviceActionJob`: the device ids."""

    data: Rows = Field(description='device ids: ["007B480F", ...]')


class BulkDelete(ApiModel):
    data: Rows = Field(description='device ids: ["007B480F", ...] (Heron: the Delete series)')


def _started(ctx: Any, job: Job, with_total: bool = True) -> dict[str, Any]:
    ctx.jobs.wake()
    return {"total": job.total, "jobId": job.req_id} if with_total else {"jobId": job.req_id}


def _id(value: str, field: str) -> int:
    return parse_id(value, field, "body")


@router.post("", summary="Create devices in bulk (a job)")
async def create(body: BulkCreate, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        job = bulk_jobs.submit_create(
            session,
            actor,
            ctx.keyring,
            device_type_id=_id(body.device_type_id, "deviceTypeId"),
            rows=body.data,
            prefix=body.prefix,
            product_certificate=body.product_certificate.key if body.product_certificate else None,
            prototype=body.prototype,
        )
        return _started(ctx, job)


@router.put("", status_code=201, summary="Edit devices in bulk (a job)")
async def edit(body: BulkEdit, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        return _started(ctx, bulk_jobs.submit_on_devices(session, actor, bulk_jobs.EDIT, body.data))


@router.post("/transfer", summary="Transfer devices to another device type (a job)")
async def transfer(body: BulkTransfer, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        job = bulk_jobs.submit_transfer(
            session, actor, device_type_id=_id(body.device_type_id, "deviceTypeId"), rows=body.data
        )
        return _started(ctx, job)


@router.post("/replace", summary="Replace devices by new ones (a job)")
async def replace(body: BulkReplace, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        job = bulk_jobs.submit_on_devices(session, actor, bulk_jobs.REPLACE, body.data, key="deviceId")
        return _started(ctx, job)


@router.post("/unsubscribe", status_code=201, summary="End devices' tokens at a time (a job)")
async def unsubscribe(body: BulkUnsubscribe, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        job = bulk_jobs.submit_on_devices(session, actor, bulk_jobs.UNSUBSCRIBE, body.data)
        return _started(ctx, job, with_total=False)


@router.post("/delete", summary="Delete devices (Heron: the Delete series as an API call)")
async def delete(body: BulkDelete, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        return _started(ctx, bulk_jobs.submit_on_devices(session, actor, bulk_jobs.DELETE, _id_rows(body.data)))


ACTIONS = {"restart": bulk_jobs.RESTART, "suspend": bulk_jobs.SUSPEND, "resume": bulk_jobs.RESUME}
GroupId = Annotated[str | None, Query(alias="groupId", max_length=20, description="only devices of this group")]


def _id_rows(data: list[Any]) -> list[dict[str, Any]]:
    return [{"id": r} if isinstance(r, str) else {"id": None, "error": "must be a device id"} for r in data]


def _action_routes(action: str, kind: str) -> None:
    """`POST /devices/bulk/{action}` (Sigfox `deviceActionJob`, 201 `{jobId}`) and its status."""

    async def submit(body: DeviceActionJob, actor: CurrentActor, ctx: Ctx, group_id: GroupId = None) -> dict[str, Any]:
        gid = parse_id(group_id, "groupId", "query") if group_id is not None else None
        with ctx.db.write() as session:
            job = bulk_jobs.submit_on_devices(session, actor, kind, _id_rows(body.data), group_id=gid)
            return _started(ctx, job, with_total=False)

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
    text = series_input.decode(await _upload(request))
    with ctx.db.write() as session:
        job = _submit_series(
            session,
            actor,
            ctx,
            operation,
            text,
            device_type_id=parse_id(device_type_id, "deviceTypeId", "query") if device_type_id else None,
            prefix=prefix,
            product_certificate=product_certificate,
            automatic_renewal=automatic_renewal,
            activable=activable,
            keep_history=keep_history,
        )
        return _started(ctx, job)


async def _upload(request: Request) -> bytes:
    """The series text: a multipart form's `file` (or `list`) field, or the raw body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_part_size=series_input.MAX_BYTES + 1)
        part = form.get("file") or form.get("list")
        if part is None:
            raise InvalidInput.field("file", "the form must carry a `file` (or a `list`) field")
        data = part.encode() if isinstance(part, str) else await part.read()
        return data
    body = await request.body()
    return body


def _submit_series(
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
) -> Job:
    def needs_type() -> int:
        if device_type_id is None:
            raise InvalidInput.field("deviceTypeId", "is required for this series operation", "query")
        return device_type_id

    if operation == "new":
        return bulk_jobs.submit_create(
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
        return bulk_jobs.submit_transfer(
            session, actor, device_type_id=needs_type(), rows=rows, keep_history=keep_history
        )
    if operation == "edit":
        return bulk_jobs.submit_on_devices(session, actor, bulk_jobs.EDIT, series_input.edits(text))
    if operation == "replace":
        return bulk_jobs.submit_on_devices(session, actor, bulk_jobs.REPLACE, series_input.replacements(text))
    return bulk_jobs.submit_on_devices(session, actor, bulk_jobs.DELETE, series_input.id_list(text))


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
    with ctx.db.write() as session:
        return _started(ctx, bulk_jobs.submit_restart_device_type(session, actor, parse_id(device_type_id)), False)


@scoped_router.get("/device-types/bulk/restart/{job_id}", summary="A device type's restart job (Sigfox actionJob)")
async def device_type_restart_status(job_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.read() as session:
        return action_job(session, actor, job_id, bulk_jobs.RESTART)


@scoped_router.post("/contract-infos/{contract_id}/bulk/restart", status_code=201)
async def restart_contract(contract_id: str, actor: CurrentActor, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.write() as session:
        return _started(ctx, bulk_jobs.submit_restart_contract(session, actor, parse_id(contract_id)), False)


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
