"""`heron serve`: the uplink writer and the worker as supervised children, then the API
processes (uvicorn). uvicorn starts its worker processes itself and hands them nothing but the
environment, so what the API processes must know of the children (the writer's socket, that the
worker sends the deliveries, the children's status file) goes there; the children themselves
get the environment as it was before."""

from __future__ import annotations

import os

import uvicorn

from heron.bootstrap import prepare
from heron.config import Settings, get_settings
from heron.observability import configure_logging
from heron.runtime import worker
from heron.runtime.processes import Supervised, Supervisor, remove_status
from heron.uplink import process as uplink_process


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int | None) -> None:
    configure_logging(settings.log_level)
    prepare(settings)
    env = dict(os.environ)  # the children's, before the API processes' settings below
    children: list[Supervised] = []
    if settings.uplink_process and settings.uplink_socket is None:
        children.append(uplink_process.supervised(settings, env))
        os.environ["HERON_UPLINK_SOCKET"] = str(uplink_process.socket_path(settings))  # the API stores through it
    if settings.delivery_process and settings.run_deliveries:
        children.append(worker.supervised(env))
        os.environ["HERON_RUN_DELIVERIES"] = "false"  # the API processes leave them to it
    status = settings.data_dir.resolve() / "run" / "children.json"
    supervisor = Supervisor(
        children,
        status,
        backoff=settings.child_restart_backoff_seconds,
        backoff_max=settings.child_restart_backoff_max_seconds,
    )
    if children:
        supervisor.start()
        os.environ["HERON_CHILDREN_STATUS_FILE"] = str(status)  # /api/ready and /metrics read it
    try:
        if host:  # the UDP ingest listens beside the HTTP API unless told otherwise
            os.environ.setdefault("HERON_INGEST_UDP_HOST", host)
        get_settings.cache_clear()
        uvicorn.run(
            "heron.api.app:worker_app",
            factory=True,
            host=host or settings.http_host,
            port=port or settings.http_port,
            workers=workers or settings.workers,
            log_config=None,
            access_log=False,
            proxy_headers=True,
        )
    finally:
        supervisor.stop()  # the uplink writer last: it stores what is queued
        remove_status(status)
