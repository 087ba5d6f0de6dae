"""Plain ASGI middleware (cheaper than BaseHTTPMiddleware) at the edge of every request: the
request id, one route for both slash forms of a path (and for repeated slashes), metrics and the
access log."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heron.observability import HTTP_LATENCY, HTTP_REQUESTS, request_id_var
from heron.unique import unique_hex

log = logging.getLogger("heron.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SLASHES = re.compile(r"/{2,}")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _SAFE_ID.match(incoming) else unique_hex()
        path: str = scope["path"]
        if "//" in path:
            path = _SLASHES.sub("/", path)  # `/api/v2//devices` is `/api/v2/devices`, as at Sigfox
        if len(path) > 1 and path.endswith("/"):
            # Routes are declared without a trailing slash; the other form answers directly.
            path = path.rstrip("/") or "/"
        if path is not scope["path"]:
            scope = {**scope, "path": path}
        token = request_id_var.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            HTTP_LATENCY.labels(template).observe(elapsed)
            if self.access_log:
                log.info(
                    "http.request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)
