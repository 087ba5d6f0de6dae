"""JSON of many rows, decoded and encoded in steps.

`json.loads` or `json.dumps` of a 100,000-row document is one C call that holds the interpreter
lock for its whole length (60-100 ms for 10 MB): run in a worker thread, it still stops the
event loop of its process (station ingest, health probes) for that long. Done row by row, the
interpreter hands the lock to the loop between rows, within its switch interval. Same results as
the `json` module (the rows themselves are decoded by it); only the long hold goes.
"""

from __future__ import annotations

import json
import re
from typing import Any

STEP = 1_000  # rows a `dumps_rows` call encodes at once (about 0.5 ms)

_decoder = json.JSONDecoder()
_blank = re.compile(r"[ \t\n\r]*")


def loads(document: bytes | str) -> Any:
    """`json.loads`, with an array at the top, or in a member of the top object, decoded item by
    item. Raises what `json.loads` raises (JSONDecodeError, UnicodeDecodeError: ValueErrors)."""
    text = document if isinstance(document, str) else document.decode(json.detect_encoding(document), "surrogatepass")
    i = _skip(text, 0)
    if not text.startswith("{", i):
        value, i = _value(text, i)
        return _whole(text, i, value)
    members: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return _whole(text, i + 1, members)
    while True:
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, i = _decoder.raw_decode(text, i)
        i = _skip(text, i)
        if not text.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
        members[key], i = _value(text, _skip(text, i + 1))
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("}", i):
            return _whole(text, i + 1, members)
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)


def dumps_rows(rows: list[Any]) -> str:
    """`json.dumps(rows, separators=(",", ":"))`, `STEP` rows at a time."""
    parts = (json.dumps(rows[n : n + STEP], separators=(",", ":"))[1:-1] for n in range(0, len(rows), STEP))
    return "[" + ",".join(parts) + "]"


def _skip(text: str, i: int) -> int:
    match = _blank.match(text, i)
    return match.end() if match else i


def _value(text: str, i: int) -> tuple[Any, int]:
    if not text.startswith("[", i):
        value, end = _decoder.raw_decode(text, i)
        return value, end
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        return items, i + 1
    while True:
        item, i = _decoder.raw_decode(text, i)
        items.append(item)
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith("]", i):
            return items, i + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)


def _whole(text: str, i: int, value: Any) -> Any:
    if _skip(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return value
