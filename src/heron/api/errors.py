"""One place that turns errors into the api.md bodies: no framework default (`detail`, 422)
ever reaches a client."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from heron.api.context import authenticate
from heron.api.v2.render import native_json
from heron.errors import HeronError, InvalidInput, NotAuthenticated, RateLimited
from heron.runtime.context import AppContext

log = logging.getLogger("heron.api")

SENET_PREFIX = "/rest/integration"
NATIVE_PREFIX = "/api/v2"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PATH_SHOWN = 500  # characters of an unknown path repeated in its 404


def json_body(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _is_senet(request: Request) -> bool:
    return request.url.path.startswith(SENET_PREFIX)


def _error_body(request: Request, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A native error body follows the native answers' rule (no null, api/v2/render.py)."""
    if request.url.path.startswith(NATIVE_PREFIX):
        return native_json(body, status, headers)
    return json_body(status, body, headers)


def error_response(request: Request, exc: HeronError) -> Response:
    if isinstance(exc, NotAuthenticated):
        if _is_senet(request):
            return json_body(403, {"message": exc.message})
        return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="heron"'})
    body: dict[str, Any] = {"message": exc.message}
    headers = None
    status = exc.status_code
    if isinstance(exc, InvalidInput) and exc.errors and not _is_senet(request):
        body["errors"] = [{"type": e.type, "field": e.field, "message": e.message} for e in exc.errors]
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    if _is_senet(request) and status == 409:
        status = 400
    return _error_body(request, status, body, headers)


_PYDANTIC_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown field",
    "json_invalid": "malformed JSON",
}


def _field_name(parts: Any) -> str:
    """`userRoles[0].groupId`: list positions in brackets, as the services name fields."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else str(p)
    return out


def field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        raw = tuple(err.get("loc", ()))
        loc = [str(p) for p in raw]
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else "body"
        field = _field_name(raw[1:]) if len(loc) > 1 else where
        if err.get("type") == "json_invalid":
            field = "body"
        message = _PYDANTIC_MESSAGES.get(str(err.get("type")), str(err.get("msg", "invalid value")))
        out.append({"type": where, "field": field, "message": message})
    return out


def validation_body(errors: list[dict[str, str]]) -> dict[str, Any]:
    """The 400 body of a request that failed validation: the first error in `message`, all in
    `errors` (also the UDP ingest's replies, heron.network.sigfox.ingest_udp)."""
    first = errors[0] if errors else {"field": "body", "message": "invalid input"}
    return {"message": f"{first['field']}: {first['message']}", "errors": errors}


def _allowed_methods(request: Request, fallback: str) -> list[str]:
    """Every method some route serves at this path. Starlette's own `Allow` names only the
    first route that matched the path (GET for `/groups`, forgetting POST)."""
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]
    return allowed or [m.strip() for m in fallback.split(",") if m.strip()]


def _unauthenticated(request: Request) -> HeronError | None:
    """The body is parsed before the credential is checked (malformed JSON fails first); an
    unauthenticated caller must still get the family's 401/403, not a 400 about its input."""
    if getattr(request.state, "actor", None) is not None or not request.url.path.startswith(
        (NATIVE_PREFIX, SENET_PREFIX)
    ):
        return None
    ctx: AppContext = request.app.state.ctx
    try:
        actor = authenticate(request, ctx)
    except HeronError as exc:  # rate-limited
        return exc
    return NotAuthenticated("authentication required") if actor is None else None


def install(app: FastAPI) -> None:
    @app.exception_handler(HeronError)
    async def heron_error(request: Request, exc: HeronError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        refused = _unauthenticated(request)
        if refused is not None:
            return error_response(request, refused)
        errors = field_errors(exc)
        if _is_senet(request):
            return json_body(400, {"message": f"Invalid parameter: {errors[0]['field']} ({errors[0]['message']})"})
        return _error_body(request, 400, validation_body(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allowed = _allowed_methods(request, (exc.headers or {}).get("Allow", ""))
            return _error_body(
                request,
                405,
                {"message": "method not allowed", "allowedMethods": allowed},
                {"Allow": ", ".join(allowed)},
            )
        if exc.status_code == 404:
            # No route has this path (unknown objects are the services' NotFound): name the path,
            # so a client of a Sigfox v2 path Heron does not serve sees which one.
            return _error_body(request, 404, {"message": f"no such resource: {request.url.path[:_PATH_SHOWN]}"})
        if exc.status_code == 400:
            # FastAPI's own 400 for a body it cannot decode (invalid UTF-8, a broken form).
            refused = _unauthenticated(request)
            return error_response(request, refused or InvalidInput.field("body", str(exc.detail)))
        return _error_body(request, exc.status_code, {"message": str(exc.detail)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("http.unhandled_error", extra={"path": request.url.path})
        return _error_body(request, 500, {"message": "internal error"})
