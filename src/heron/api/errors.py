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

from heron.errors import HeronError, InvalidInput, NotAuthenticated, RateLimited

log = logging.getLogger("heron.api")

SENET_PREFIX = "/rest/integration"


def json_body(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _is_senet(request: Request) -> bool:
    return request.url.path.startswith(SENET_PREFIX)


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
    return json_body(status, body, headers)


_PYDANTIC_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown field",
    "json_invalid": "malformed JSON",
}


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else "body"
        field = ".".join(loc[1:]) if len(loc) > 1 else where
        if err.get("type") == "json_invalid":
            field = "body"
        message = _PYDANTIC_MESSAGES.get(str(err.get("type")), str(err.get("msg", "invalid value")))
        out.append({"type": where, "field": field, "message": message})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(HeronError)
    async def heron_error(request: Request, exc: HeronError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = _field_errors(exc)
        if _is_senet(request):
            return json_body(400, {"message": f"Invalid parameter: {errors[0]['field']} ({errors[0]['message']})"})
        first = errors[0] if errors else {"field": "body", "message": "invalid input"}
        return json_body(400, {"message": f"{first['field']}: {first['message']}", "errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]
            return json_body(
                405,
                {"message": "method not allowed", "allowedMethods": allowed},
                {"Allow": ", ".join(allowed)},
            )
        if exc.status_code == 404:
            return json_body(404, {"message": "not found"})
        return json_body(exc.status_code, {"message": str(exc.detail)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("http.unhandled_error", extra={"path": request.url.path})
        return json_body(500, {"message": "internal error"})
