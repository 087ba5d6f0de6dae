"""DIRECT downlink templates: the 8 bytes a Sigfox device type answers with, written as hex
plus `{variable}` placeholders, each with a fixed width and encoding.

    "{time}{tapId}"        -> 4 bytes of epoch seconds + 4 bytes of station id
    "01{rssi}AABBCCDD00"   -> 1 + 2 (signed RSSI) + 5 bytes
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DOWNLINK_BYTES = 8


class TemplateError(ValueError):
    """A template that cannot be parsed, or a value that does not fit its variable."""


def _unsigned(width: int) -> Callable[[int], bytes]:
    def encode(value: int) -> bytes:
        if not 0 <= value < 1 << (8 * width):
            raise TemplateError(f"{value} does not fit in {width} unsigned bytes")
        return value.to_bytes(width, "big")

    return encode


def _signed(width: int) -> Callable[[int], bytes]:
    def encode(value: int) -> bytes:
        limit = 1 << (8 * width - 1)
        if not -limit <= value < limit:
            raise TemplateError(f"{value} does not fit in {width} signed bytes")
        return value.to_bytes(width, "big", signed=True)

    return encode


@dataclass(frozen=True)
class Variable:
    name: str
    width: int  # bytes
    encode: Callable[[int], bytes]
    meaning: str


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("time", 4, _unsigned(4), "reception time, epoch seconds, unsigned big-endian"),
        Variable("tapId", 4, _unsigned(4), "id of the receiving base station, unsigned big-endian"),
        Variable("rssi", 2, _signed(2), "RSSI of the reception in dBm, rounded, signed big-endian"),
    )
}

_TOKEN = re.compile(r"\{([^{}]*)\}|([0-9A-Fa-f]+)|(.)", re.S)
Part = bytes | Variable


def parse(template: str) -> list[Part]:
    """The template as literal byte runs and variables; TemplateError says what is wrong."""
    parts: list[Part] = []
    for match in _TOKEN.finditer(template):
        name, hexdigits, other = match.groups()
        if name is not None:
            if name not in VARIABLES:
                known = ", ".join("{" + v + "}" for v in VARIABLES)
                raise TemplateError(f"unknown variable {{{name}}} (known: {known})")
            parts.append(VARIABLES[name])
        elif hexdigits is not None:
            if len(hexdigits) % 2:
                raise TemplateError(f"hex digits must come in whole bytes, got {hexdigits!r}")
            parts.append(bytes.fromhex(hexdigits))
        else:
            raise TemplateError(f"unexpected character {other!r} (use hex digits and {{variables}})")
    return parts


def width(template: str) -> int:
    """How many bytes the template renders to."""
    return sum(len(p) if isinstance(p, bytes) else p.width for p in parse(template))


def check(template: str) -> None:
    """Raise TemplateError unless the template renders to exactly DOWNLINK_BYTES bytes."""
    size = width(template)
    if size != DOWNLINK_BYTES:
        raise TemplateError(f"must render to exactly {DOWNLINK_BYTES} bytes, this one renders to {size}")


def render(template: str, values: Mapping[str, int | float]) -> bytes:
    """The bytes to send; `values` holds every variable the template uses (rssi may be a float)."""
    out = bytearray()
    for part in parse(template):
        if isinstance(part, bytes):
            out += part
            continue
        if part.name not in values:
            raise TemplateError(f"no value for {{{part.name}}}")
        out += part.encode(round(values[part.name]))
    return bytes(out)
