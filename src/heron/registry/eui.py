"""EUI-64 identifiers (LoRaWAN AppEUI/JoinEUI, DevEUI), normalized once at the edge."""

from __future__ import annotations

from heron.errors import InvalidInput
from heron.registry.identifiers import is_hex


class Eui64(str):
    """16 upper-case hex digits; build with `Eui64.parse`."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: str, field: str, where: str = "body") -> Eui64:
        if not is_hex(value, 16):
            shown = str(value)[:40]
            raise InvalidInput.field(field, f"must be 16 hex digits (an EUI-64), got {shown!r}", where)
        return cls(value.upper())
