"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response

from heron.api.context import Ctx
from heron.api.errors import json_body
from heron.db import migrate
from heron.observability import REGISTRY

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
    if current != head:
        return json_body(503, {"status": "unavailable", "database": "ok", "migrations": f"at {current}, head {head}"})
    return json_body(200, {"status": "ready", "database": "ok", "migrations": "current"})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
