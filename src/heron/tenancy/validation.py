"""Small validators shared by the tenancy services."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

from heron.errors import InvalidInput


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def check_timezone(value: str, field: str = "timezone") -> str:
    if value not in _zones():
        raise InvalidInput.field(field, f"unknown timezone {value!r} (use an IANA name like 'Europe/Paris')")
    return value


MAX_ID = 2**31 - 1  # ids are 32-bit integers on every database


def parse_id(value: str | int, field: str = "id", where: str = "path") -> int:
    """Heron's object ids are decimal strings on the wire."""
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_ID:
        raise InvalidInput.field(field, f"not a valid id: {text[:40]!r}", where)
    return int(text)
