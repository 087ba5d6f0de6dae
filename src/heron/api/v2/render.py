"""The native API's JSON (`/api/v2`): one rule for every answer, error bodies included. A field
without a value is absent, never `null`: Sigfox's document declares no field nullable, and a
client generated from it refuses a null where it expects a string, a number or an object.

Every native router is included with `NativeJSON` as its response class (`api/app.py`); a route
that builds its own response (a page serialized directly, numpy arrays) calls `native_json`.
Requests are not concerned: a PUT's `null` still unsets."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response


def _dict(d: dict[Any, Any]) -> dict[Any, Any]:
    # A new dict, the caller's (a view shared by a page) left as it is. A plain loop: a third
    # faster than a comprehension testing each value's type twice.
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        t = type(v)
        if t is dict:
            v = _dict(v)
        elif t is list or t is tuple:
            v = _list(v)
        out[k] = v
    return out


def _list(items: list[Any] | tuple[Any, ...]) -> list[Any]:
    # The objects inside a list lose their null fields; a null item keeps its place.
    return [_dict(x) if type(x) is dict else _list(x) if type(x) is list or type(x) is tuple else x for x in items]


def without_nulls(content: Any) -> Any:
    """`content` with every None-valued key of every object dropped, however deep."""
    if type(content) is dict:
        return _dict(content)
    if type(content) is list or type(content) is tuple:
        return _list(content)
    return content


def render(content: Any, option: int | None = None) -> bytes:
    return orjson.dumps(without_nulls(content), option=option)


class NativeJSON(Response):
    """The response class of every native route whose endpoint returns a plain body."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render(content)


def native_json(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    option: int | None = None,
    background: BackgroundTask | None = None,
) -> Response:
    """A native answer built by its route (no FastAPI encoding): the same rule as `NativeJSON`."""
    return Response(
        render(body, option), status_code=status, media_type="application/json", headers=headers, background=background
    )
