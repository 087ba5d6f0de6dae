"""Requests whose cost grows with their size, kept off the event loop (docs/ARCHITECTURE.md,
"What runs on the event loop").

Handlers are `async def` and run short indexed work inline; a 100,000-row bulk call or a series
file would hold the loop for seconds (health probes and the station ingest waiting behind it).
Such routes:
- read their body here, refused from its `Content-Length` or while it is counted in, never
  after it has all arrived (`read_body`, `upload`);
- parse and validate it, and call the data layer, in a worker thread (`run`), a sync session
  opened and closed in that one thread. At most `HEAVY_THREADS` such calls run at once per
  process, so a burst of them queues (the loop stays free) instead of filling anyio's default
  pool, which streaming responses and FastAPI's sync dependencies share."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidatorFunctionWrapHandler, WrapValidator
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from heron import json_steps

T = TypeVar("T")

HEAVY_THREADS = 2  # two cores here; more CPU-bound threads only queue on the GIL
MAX_JSON_BYTES = 50 * 1024 * 1024  # a JSON body of 100,000 rows is a few MB
MULTIPART_OVERHEAD = 64 * 1024  # a form's boundaries and part headers around its file

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    # One per event loop (a limiter belongs to the loop it was made on; tests run several).
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(HEAVY_THREADS)
    return limiter


# While heavy work runs, the interpreter switches threads every 0.5 ms instead of 5: the event
# loop, woken by a socket, waits for the GIL at most that long per wake-up (an ingest request
# wakes it several times), at a small cost to the heavy thread's throughput.
HEAVY_SWITCH_INTERVAL = 0.0005
_running = 0
_running_lock = threading.Lock()
_usual_interval = sys.getswitchinterval()


async def run(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread of the heavy-request pool; its exceptions are raised here."""
    global _running
    with _running_lock:  # one loop per server process; tests run several, in threads
        if _running == 0:
            sys.setswitchinterval(HEAVY_SWITCH_INTERVAL)
        _running += 1
    try:
        return await anyio.to_thread.run_sync(fn, *args, limiter=_limiter())
    finally:
        with _running_lock:
            _running -= 1
            if _running == 0:
                sys.setswitchinterval(_usual_interval)


def refused(field: str, message: str) -> RequestValidationError:
    """A 400 naming `field`, through the validation handler (so an unauthenticated caller
    still gets its 401/403 first, as for any body it sends)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": None}])


def _mb(limit: int) -> str:
    return f"is larger than {limit // (1024 * 1024)} MB"


def announced_length(request: Request, limit: int, field: str) -> None:
    """Refuse at once a body whose `Content-Length` is over `limit`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise refused(field, _mb(limit - (limit % (1024 * 1024))))


async def counted(
    request: Request, limit: int, field: str, check: Callable[[bytes], None] | None = None
) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, refused as soon as more than `limit` bytes came in
    (a chunked body has no `Content-Length`) or `check` refuses a chunk."""
    announced_length(request, limit, field)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise refused(field, _mb(limit - (limit % (1024 * 1024))))
        if check is not None:
            check(chunk)
        yield chunk


async def read_body(request: Request, limit: int, field: str, check: Callable[[bytes], None] | None = None) -> bytes:
    return b"".join([chunk async for chunk in counted(request, limit, field, check)])


def text_only(field: str) -> Callable[[bytes], None]:
    """A chunk check: a file holding a NUL byte is binary, known from the chunk that has it."""

    def check(chunk: bytes) -> None:
        if b"\x00" in chunk:
            raise refused(field, "is not a text file (it contains binary data)")

    return check


async def upload(request: Request, limit: int, field: str = "file", names: tuple[str, ...] = ("file",)) -> bytes:
    """An uploaded file: a multipart form's first part named in `names`, else the raw body;
    refused from its size or a binary chunk while it arrives."""
    check = text_only(field)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await read_body(request, limit, field, check)
    stream = counted(request, limit + MULTIPART_OVERHEAD, field, check)
    try:
        form = await MultiPartParser(request.headers, stream, max_part_size=limit + 1).parse()
    except MultiPartException as exc:
        raise refused(field, exc.message) from None
    try:
        part = next((form.get(name) for name in names if form.get(name) is not None), None)
        if part is None:
            raise refused(field, f"the form must carry a `{names[0]}` field")
        return part.encode() if isinstance(part, str) else await part.read()
    finally:
        for _name, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()


def rows_as_given(limit: int) -> WrapValidator:
    """For a `list[Any]` of rows: a list of at most `limit` items is taken as it is. The rows are
    checked one by one later, in a worker thread; pydantic would copy 100,000 of them on the
    event loop (60-130 ms). Anything else gets pydantic's own errors (list_type, too_long)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, list) and len(value) <= limit:
            return value
        return handler(value)

    return WrapValidator(validate)


def _parse_json(body: bytes) -> Any:
    try:
        return json_steps.loads(body)  # row by row: one json.loads holds the loop too
    except json.JSONDecodeError as e:  # FastAPI's own errors for a body it cannot decode
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "input": {}}]
        ) from None
    except (ValueError, RecursionError):  # invalid UTF-8, nesting too deep
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class OffloadedBody(APIRoute):
    """A route whose JSON body may be large (bulk rows): the body is read here, refused over
    `MAX_JSON_BYTES` (as the field `data`) from its head, and decoded in a worker thread;
    FastAPI then finds it decoded and only validates the model (cheap for `list[Any]` rows).
    Routes without a body (status GETs) are untouched."""

    max_bytes = MAX_JSON_BYTES
    field = "data"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def app(request: Request) -> Response:
            body = await read_body(request, self.max_bytes, self.field)
            # Starlette's Request caches the body and its JSON here; FastAPI reads them back.
            request._body = body
            if body and _is_json(request):
                request._json = await run(_parse_json, body)
            return await handler(request)

        return app
