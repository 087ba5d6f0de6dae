"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from starlette.responses import Response

from heron.api.context import Ctx
from heron.api.errors import json_body
from heron.db import migrate
from heron.observability import REGISTRY
from heron.runtime.processes import read_status

router = APIRouter(tags=["operations"])


@router.get("/api/health")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/api/ready")
async def ready(ctx: Ctx) -> Response:
    try:
        with ctx.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return json_body(503, {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"})
    current, head = migrate.current_revision(ctx.db), migrate.head_revision(ctx.db)
    body: dict[str, str] = {"status": "ready", "database": "ok", "migrations": "current"}
    if current != head:
        body |= {"status": "unavailable", "migrations": f"at {current}, head {head}"}
    path = ctx.settings.children_status_file
    if path is not None:  # served by `heron serve`: its children too (heron.runtime.processes.Supervisor)
        children = read_status(path)
        if children is None:
            body |= {"status": "unavailable", "supervisor": "down"}
        for name, child in (children or {}).items():
            body[_camel(name)] = "up" if child.up else "down"
            if not child.up:
                body["status"] = "unavailable"
    return json_body(200 if body["status"] == "ready" else 503, body)


def _camel(name: str) -> str:
    first, *rest = name.split("-")
    return first + "".join(part.title() for part in rest)


class ChildrenCollector(Collector):
    """`heron serve`'s children as the supervisor last wrote them: every API process reads the
    same file, so each one's /metrics tells the same."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        children = read_status(self.path) or {}
        up = GaugeMetricFamily("heron_child_up", "Whether the child process serves (1) or not.", labels=["child"])
        restarts = CounterMetricFamily(
            "heron_child_restarts", "Restarts of a child process that died.", labels=["child"]
        )
        for name, child in children.items():
            up.add_metric([name], 1.0 if child.up else 0.0)
            restarts.add_metric([name], float(child.restarts))
        yield up
        yield restarts


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    body = generate_latest(REGISTRY)
    path = ctx.settings.children_status_file
    if path is not None:
        children = CollectorRegistry(auto_describe=False)
        children.register(ChildrenCollector(path))
        body += generate_latest(children)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
