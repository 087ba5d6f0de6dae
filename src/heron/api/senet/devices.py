"""/rest/integration/device: Senet device onboarding (register, activate, activateOne,
deactivate, update, status), exactly as the Senet seed describes it: parameters in the query
string, rows in `{"data": [...], "callback": {url, headers}}`, `{"statusUrl": ...}` answers.
The rules live in heron.registry.onboarding."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from heron.api import offload
from heron.api.context import Ctx, CurrentActor, base_url
from heron.api.schemas import ApiModel
from heron.api.senet import PREFIX
from heron.delivery.ssrf import check_literal_host
from heron.registry import onboarding
from heron.runtime.context import AppContext
from heron.tenancy.access import Actor

# Up to 100,000 rows a call: bodies decoded and tasks submitted off the event loop (api/offload.py).
router = APIRouter(prefix=PREFIX + "/device", tags=["senet onboarding"], route_class=offload.OffloadedBody)

Param = Annotated[str | None, Query()]


class CallbackIn(ApiModel):
    url: str = Field(min_length=1, max_length=2000)
    headers: dict[str, Annotated[str, Field(max_length=2000)]] | None = Field(default=None, max_length=50)


class OnboardingBody(ApiModel):
    rows_checked_later = frozenset({"data"})

    data: Annotated[list[Any], offload.rows_as_given(onboarding.MAX_ROWS)] = Field(max_length=onboarding.MAX_ROWS)
    callback: CallbackIn | None = None


@dataclass(frozen=True)
class AppParams:
    """The query parameters register, activate and activateOne share (the seed's tables)."""

    app_eui: str | None
    join_eui: str | None
    contract_id: str | None
    prof_id: str | None
    tags: str | None

    def as_kwargs(self) -> dict[str, str | None]:
        return asdict(self)


async def _app_params(  # async: FastAPI runs a plain-def dependency in a worker thread
    app_eui: Annotated[str | None, Query(alias="appEui")] = None,
    join_eui: Annotated[str | None, Query(alias="joinEui")] = None,
    contract_id: Annotated[str | None, Query(alias="contractId")] = None,
    prof_id: Annotated[str | None, Query(alias="profId")] = None,
    tags: Param = None,
) -> AppParams:
    return AppParams(app_eui, join_eui, contract_id, prof_id, tags)


AppQuery = Annotated[AppParams, Depends(_app_params)]


async def _submit(
    request: Request,
    ctx: AppContext,
    actor: Actor,
    kind: str,
    body: OnboardingBody,
    **params: str | None,
) -> dict[str, str]:
    callback = None
    if body.callback is not None:
        # A literal refused address is refused now; a name is checked when the status is sent.
        check_literal_host(body.callback.url, ctx.deliveries.allow, "callback.url")
        callback = onboarding.Callback(body.callback.url, body.callback.headers or {})

    def submit() -> str:
        # In one worker thread: the call and rows checked and the keys sealed outside any write
        # transaction (on SQLite its lock is the ingest's too), then the task stored.
        with ctx.db.read() as session:
            call = onboarding.check_call(session, actor, **params)
        store = onboarding.prepare_submit(actor, ctx.keyring, kind=kind, call=call, rows=body.data, callback=callback)
        with ctx.db.write() as session:
            return store(session).req_id

    req_id = await offload.run(submit)
    ctx.jobs.wake()
    return {"statusUrl": f"{base_url(request, ctx)}{PREFIX}/device/status?reqId={req_id}"}


@router.post("/register")
async def register(
    request: Request, body: OnboardingBody, actor: CurrentActor, ctx: Ctx, app: AppQuery, token: Param = None
) -> dict[str, str]:
    """Register devices (DevEUI, AppKey) on the application; needs a registration token."""
    return await _submit(request, ctx, actor, onboarding.REGISTER, body, token=token, **app.as_kwargs())


@router.post("/activate")
async def activate(
    request: Request, body: OnboardingBody, actor: CurrentActor, ctx: Ctx, app: AppQuery, token: Param = None
) -> dict[str, str]:
    """Activate registered or deactivated devices (each takes a token on its contract); an
    `appKey` in a row changes the device's AppKey, with a registration token only."""
    return await _submit(request, ctx, actor, onboarding.ACTIVATE, body, token=token, **app.as_kwargs())


@router.post("/activateOne")
async def activate_one(
    actor: CurrentActor,
    ctx: Ctx,
    app: AppQuery,
    dev_eui: Annotated[str | None, Query(alias="devEui")] = None,
    lat: Param = None,
    lng: Param = None,
    dev_type: Annotated[str | None, Query(alias="devType")] = None,
) -> dict[str, str]:
    """Activate one device at once (no task)."""
    row: dict[str, Any] = {}
    for name, value in (("lat", lat), ("lng", lng)):
        if value is not None:
            try:
                row[name] = float(value)
            except ValueError:
                raise onboarding.invalid(name, "must be a number") from None
    if dev_type is not None:
        row["devType"] = dev_type
    with ctx.db.write() as session:
        call = onboarding.check_call(session, actor, **app.as_kwargs())
        message = onboarding.activate_one(session, actor, ctx.keyring, call=call, dev_eui=dev_eui, row=row)
    return {"message": message}


@router.post("/deactivate")
async def deactivate(
    request: Request,
    body: OnboardingBody,
    actor: CurrentActor,
    ctx: Ctx,
    app_eui: Annotated[str | None, Query(alias="appEui")] = None,
    join_eui: Annotated[str | None, Query(alias="joinEui")] = None,
) -> dict[str, str]:
    """Deactivate activated or registered devices."""
    return await _submit(request, ctx, actor, onboarding.DEACTIVATE, body, app_eui=app_eui, join_eui=join_eui)


@router.post("/update")
async def update(
    request: Request,
    body: OnboardingBody,
    actor: CurrentActor,
    ctx: Ctx,
    app_eui: Annotated[str | None, Query(alias="appEui")] = None,
    prof_id: Annotated[str | None, Query(alias="profId")] = None,
    tags_operation: Annotated[str | None, Query(alias="tagsOperation")] = None,
    tags: Param = None,
) -> dict[str, str]:
    """Update devices' lat, lng, tags (APPEND, REPLACE or DELETE) and devType. `appEui` is
    required here, as the seed's table says."""
    if app_eui is None:
        raise onboarding.invalid("appEui", "required")
    return await _submit(
        request,
        ctx,
        actor,
        onboarding.UPDATE,
        body,
        app_eui=app_eui,
        prof_id=prof_id,
        tags_operation=tags_operation,
        tags=tags,
    )


@router.get("/status")
async def status(
    actor: CurrentActor, ctx: Ctx, req_id: Annotated[str | None, Query(alias="reqId")] = None
) -> dict[str, Any]:
    """The status of a task, for 15 minutes after it ended."""
    with ctx.db.read() as session:
        return onboarding.task_status(session, actor, req_id)
