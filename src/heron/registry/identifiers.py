"""Device identifiers and root keys, normalized once at the edge (style.md: small value types
valid everywhere after that). Each parser raises InvalidInput naming the field."""

from __future__ import annotations

import re

from heron.errors import InvalidInput

_HEX = re.compile(r"[0-9A-Fa-f]+")


def is_hex(value: object, digits: int | range) -> bool:
    """Whether `value` is a string of hex digits, exactly `digits` of them (or a count in
    that range): the one check behind every identifier, key and payload format."""
    if not isinstance(value, str):
        return False
    n = len(value)
    if n != digits if isinstance(digits, int) else n not in digits:
        return False
    return n == 0 or _HEX.fullmatch(value) is not None


def _hex(value: object, field: str, digits: int, what: str, where: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if len(text) != digits or not _HEX.fullmatch(text):
        raise InvalidInput.field(field, f"must be {digits} hex digits ({what}), got {str(value)[:40]!r}", where)
    return text.upper()


class SigfoxId(str):
    """A Sigfox device id: 1 to 8 hex digits (32 bits), upper-case, without leading zeros, so
    `00077FFF` and `77fff` are the same device."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: object, field: str = "id", where: str = "body") -> SigfoxId:
        text = value.strip() if isinstance(value, str) else ""
        if text[:2].lower() == "0x":
            text = text[2:]
        if not 1 <= len(text) <= 8 or not _HEX.fullmatch(text):
            shown = str(value)[:40]
            raise InvalidInput.field(field, f"must be 1 to 8 hex digits (a Sigfox device id), got {shown!r}", where)
        return cls(text.upper().lstrip("0") or "0")

    @property
    def value(self) -> int:
        return int(self, 16)


def parse_pac(value: object, field: str = "pac", where: str = "body") -> str:
    """A Sigfox PAC (porting authorization code): 16 hex digits."""
    return _hex(value, field, 16, "a PAC", where)


def parse_nak(value: object, field: str = "nak", where: str = "body") -> str:
    """A Sigfox NAK (network authentication key, AES-128): 32 hex digits."""
    return _hex(value, field, 32, "an AES-128 key", where)


def parse_app_key(value: object, field: str = "appKey", where: str = "body") -> str:
    """A LoRaWAN AppKey (AES-128 root key): 32 hex digits."""
    return _hex(value, field, 32, "an AES-128 key", where)


def mask_key(value: str) -> str:
    """How a root key may appear in a message: `****ABC0` (Senet's masking)."""
    return "****" + value[-4:]
