"""The ASGI application: routers, error handlers, middleware and the per-process context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from heron import __version__
from heron.api import errors, ops
from heron.api.middleware import EdgeMiddleware
from heron.api.senet import devices as senet_devices
from heron.api.v2 import (
    api_users,
    audit,
    base_stations,
    callbacks,
    consumption,
    contracts,
    coverages,
    deliveries,
    device_bulk,
    device_profiles,
    device_types,
    devices,
    downlinks,
    events,
    groups,
    jobs,
    locations,
    messages,
    profiles,
    users,
)
from heron.api.v2 import bridge as sigfox_bridge
from heron.api.v2.render import NativeJSON
from heron.bootstrap import prepare
from heron.config import Settings, get_settings
from heron.network.sigfox import bridge_http as bridge
from heron.network.sigfox import ingest_http as ingest
from heron.network.sigfox import ingest_udp
from heron.network.sigfox import station_http as station_downlinks
from heron.observability import configure_logging
from heron.runtime.context import AppContext, build_context
from heron.runtime.processes import tune_collector
from heron.web import auth as web_auth


def create_app(settings: Settings | None = None, context: AppContext | None = None) -> FastAPI:
    """Build the app. With a context, its settings rule. Without one (a uvicorn worker), prepare
    one from the settings:
    migrations are idempotent, and `heron serve` has already run them before forking."""
    if context is not None:
        settings = context.settings  # one source of settings for the app and its context
    settings = settings or get_settings()
    ctx = context or build_context(settings, prepare(settings, announce_password=False))

    checkpointer = ctx.db.wal_checkpointer()
    datagrams = ingest_udp.IngestDatagrams(ctx) if settings.ingest_udp_port else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.authenticator.start()
        if checkpointer is not None:
            checkpointer.start()
        if settings.run_jobs:
            ctx.jobs.start()
        ctx.uplinks.start()
        if settings.run_deliveries:
            ctx.deliveries.start()
            ctx.downlinks.start()
        try:
            if datagrams is not None:
                await datagrams.start(settings.ingest_udp_host or settings.http_host, settings.ingest_udp_port)
            yield
        finally:
            if datagrams is not None:  # before the writer: the datagrams in hand are answered
                await datagrams.stop()
            ctx.downlinks.stop()
            ctx.deliveries.stop()
            ctx.uplinks.stop()
            ctx.jobs.stop()
            if checkpointer is not None:
                checkpointer.stop()
            ctx.authenticator.stop()

    app = FastAPI(
        title="Heron API",
        version=__version__,
        description="Native API in the Sigfox API v2 layout. Authenticate with HTTP Basic "
        "(API user id, access token) or an `authorization: <key>` header.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.ingest_udp = datagrams
    errors.install(app)
    app.include_router(ops.router)  # first: routes are matched in order, and probes come often
    app.include_router(ingest.router)
    app.include_router(station_downlinks.router)
    app.include_router(bridge.router)
    # device_bulk before devices: `/devices/bulk` must never be read as a device id.
    native = (
        groups,
        users,
        api_users,
        profiles,
        audit,
        contracts,
        device_profiles,
        device_types,
        device_bulk,
        devices,
        events,
        jobs,
        base_stations,
        coverages,
        messages,
        locations,
        callbacks,
        deliveries,
        downlinks,
    )
    # Every native answer is rendered by NativeJSON: no null on the wire (api/v2/render.py).
    native_routers = [module.router for module in native]
    native_routers += [
        consumption.router,
        device_bulk.scoped_router,  # restart of a device type's or a contract's devices
        contracts.infos_router,
        sigfox_bridge.router,
    ]
    for router in native_routers:
        app.include_router(router, default_response_class=NativeJSON)
    app.include_router(senet_devices.router)
    app.include_router(web_auth.router)
    app.add_middleware(ingest.IngestLane)  # inside the edge middleware, added after it
    app.add_middleware(EdgeMiddleware, access_log=settings.access_log)
    return app


def worker_app() -> FastAPI:
    """Entry point for `uvicorn --factory` workers."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_collector()
    return app
