"""The Sigfox custom payload grammar ("payload parsing: custom"): a device type's config string
such as ``temp::int:16:little-endian hum::uint:8 door::bool:7`` names the fields packed into its
0-12 byte uplinks. `parse_grammar` validates the string when it is saved and compiles it once;
`Grammar.decode` then runs for every uplink, so all offsets, shifts and masks are worked out at
parse time and decoding is a loop of `int.from_bytes` and `struct` calls that never raises.

Grammar, as in the Sigfox documentation, with the choices Heron makes where it is silent:

- Fields are separated by whitespace; each is ``name:byte_index:type:params``. A name is ASCII
  letters, digits and underscores and starts with a letter or underscore (Sigfox also allows
  ``-`` and ``#``; Heron does not, so names work as JSON keys and template variables).
- ``bool:B`` reads bit B (0-7) of the byte. Bits are numbered 7 (most significant) to 0.
- ``char:N`` reads N bytes (1-12) as text, decoded as latin-1 so every byte maps to one
  character; nothing is stripped (NUL padding stays).
- ``float:32|64[:little-endian|:big-endian]``: IEEE 754 single or double precision; NaN and
  infinities come out as Python floats.
- ``uint:N`` / ``int:N`` with N 1-64 bits, then optionally the endianness (``little-endian``
  or ``big-endian``, empty for the default big-endian) and a bit offset 0-7. ``int`` is two's
  complement over its N bits, so ``int:12`` holding ``0xFFF`` is -1.
- The bit offset follows the Sigfox prose: it is the bit of the first byte where reading
  *starts*, default 7; reading goes down to bit 0 and on into bit 7 of the next byte. So
  ``status:1:uint:4::3`` is bits 3..0 of byte 1 (its low nibble) and ``mode:1:uint:4::7`` its
  high nibble. (The last example in the Sigfox table, ``i2::uint:32:2``, does not agree with
  its own prose; the prose wins.)
- Big-endian values are read as a bit stream, most significant bit first. A little-endian
  value is the low N bits of its bytes read least significant byte first, the C layout on a
  little-endian microcontroller (``uint:12:little-endian`` on ``34 F1`` is 0x134). A field
  within one byte reads the same in either order, and only there can little-endian take a bit
  offset other than 7.
- char and float take no bit offset (Sigfox allows one on them; Heron rejects it rather than
  guess at a rarely used layout).
- An omitted byte index means: byte 0 for the first field; for a bool, the byte the reader is
  on; for other types, the next byte. A bool leaves the reader on its byte (the next bool
  shares it, the next number moves on); a whole-byte field leaves it on the byte after its
  last one, so ``hum::uint:8 door::bool:7`` puts door in the byte after hum. After a field
  with a bit offset the next field reuses that field's last byte, as in Sigfox:
  ``mode::uint:4::7 status::uint:4::3`` shares one byte.
- Every field must end within 12 bytes; names must be unique; there are at most 96 fields.

A payload too short for a field leaves that field out of the result; the other fields are
still decoded. Bytes beyond the grammar are ignored.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from heron.errors import InvalidInput

Kind = Literal["bool", "char", "float", "uint", "int"]
Endianness = Literal["big", "little"]
Value = bool | int | float | str

MAX_PAYLOAD_BYTES = 12
MAX_FIELDS = MAX_PAYLOAD_BYTES * 8

_KINDS: dict[str, Kind] = {"bool": "bool", "char": "char", "float": "float", "uint": "uint", "int": "int"}
_ENDIANNESS: dict[str, Endianness] = {"": "big", "big-endian": "big", "little-endian": "little"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]{1,3}")  # ASCII digits only, and short: int() of a huge string raises

_Reader = Callable[[bytes], Value]


@dataclass(frozen=True)
class GrammarField:
    """One named field with its byte index resolved. `bits` is the size in bits (1 for a bool,
    8 per byte for char). `bit_offset` is the bit a bool reads, or for uint/int the bit of the
    first byte where reading starts (None: not given, reading starts at bit 7)."""

    name: str
    kind: Kind
    byte_index: int
    bits: int
    endianness: Endianness = "big"
    bit_offset: int | None = None

    @property
    def byte_count(self) -> int:
        """How many bytes the field touches, from `byte_index` on."""
        if self.kind == "bool":
            return 1
        skipped = 7 - (7 if self.bit_offset is None else self.bit_offset)
        return (skipped + self.bits + 7) // 8

    @property
    def end(self) -> int:
        """The payload length the field needs to be decoded."""
        return self.byte_index + self.byte_count


@dataclass(frozen=True)
class Grammar:
    """A parsed, validated grammar. Build it with `parse_grammar`; it is immutable and hashable,
    so callers can cache it by config text."""

    fields: tuple[GrammarField, ...]
    _plan: tuple[tuple[str, int, _Reader], ...] = dataclasses.field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        plan = tuple((f.name, f.end, _reader(f)) for f in self.fields)
        object.__setattr__(self, "_plan", plan)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def decode(self, payload: bytes) -> dict[str, Value]:
        """The fields the payload is long enough for, by name; never raises."""
        size = len(payload)
        return {name: read(payload) for name, end, read in self._plan if size >= end}


def parse_grammar(text: str, field: str = "payloadConfig") -> Grammar:
    """Parse and validate a config string. Raises `InvalidInput` on `field` (the API field the
    text came from) with a message that names the grammar field at fault and why."""
    tokens = text.split()
    if not tokens:
        raise InvalidInput.field(field, "is empty: expected fields such as 'temp::int:16 door::bool:7'")
    if len(tokens) > MAX_FIELDS:
        raise InvalidInput.field(field, f"has {len(tokens)} fields, at most {MAX_FIELDS} are allowed")

    fields: list[GrammarField] = []
    seen: set[str] = set()
    cursor = _Cursor()
    for token in tokens:
        parsed = _parse_field(token, cursor, field)
        if parsed.name in seen:
            raise InvalidInput.field(field, f"{parsed.name}: the name is used twice")
        if parsed.end > MAX_PAYLOAD_BYTES:
            last = parsed.end - 1
            raise InvalidInput.field(
                field,
                f"{parsed.name}: runs past the {MAX_PAYLOAD_BYTES}-byte payload "
                f"(it needs bytes {parsed.byte_index} to {last}, the last is {MAX_PAYLOAD_BYTES - 1})",
            )
        seen.add(parsed.name)
        fields.append(parsed)
        cursor.advance(parsed)
    return Grammar(tuple(fields))


@dataclass
class _Cursor:
    """Where an omitted byte index points: `byte` is the byte the reader is on; `partial` says a
    bool has used part of it (so the next number moves on); `reuse` says a field with a bit
    offset ended in it (so the next field of any type stays)."""

    byte: int = 0
    partial: bool = False
    reuse: bool = False

    def implicit_index(self, kind: Kind) -> int:
        if kind == "bool" or self.reuse or not self.partial:
            return self.byte
        return self.byte + 1

    def advance(self, f: GrammarField) -> None:
        if f.kind == "bool":
            self.byte, self.partial, self.reuse = f.byte_index, True, False
        elif f.bit_offset is not None:
            self.byte, self.partial, self.reuse = f.end - 1, True, True
        else:
            self.byte, self.partial, self.reuse = f.end, False, False


def _parse_field(token: str, cursor: _Cursor, field: str) -> GrammarField:
    parts = token.split(":")
    if len(parts) < 3:
        raise InvalidInput.field(field, f"{token}: expected name:byte_index:type:params")
    name, raw_index, raw_kind, params = parts[0], parts[1], parts[2], parts[3:]

    def fail(reason: str) -> InvalidInput:
        return InvalidInput.field(field, f"{name}: {reason}")

    if not _NAME.fullmatch(name):
        raise InvalidInput.field(
            field,
            f"{name or token}: a name must start with a letter or underscore and hold only "
            "letters, digits and underscores",
        )
    kind = _KINDS.get(raw_kind)
    if kind is None:
        raise fail(f"unknown type '{raw_kind}' (expected bool, char, float, uint or int)")

    if raw_index == "":
        index = cursor.implicit_index(kind)
    else:
        parsed_index = _number(raw_index)
        if parsed_index is None or parsed_index >= MAX_PAYLOAD_BYTES:
            raise fail(f"byte index must be 0 to {MAX_PAYLOAD_BYTES - 1}, got '{raw_index}'")
        index = parsed_index

    if not params or params[0] == "":
        raise fail(_MISSING[kind])
    size = _number(params[0])

    if kind == "bool":
        if len(params) > 1:
            raise fail("too many parameters: bool takes only a bit number")
        if size is None or size > 7:
            raise fail(f"bool bit must be 0 to 7, got '{params[0]}'")
        return GrammarField(name, kind, index, 1, bit_offset=size)

    if kind == "char":
        if len(params) > 1:
            raise fail("too many parameters: char takes only a length in bytes")
        if size is None or not 1 <= size <= MAX_PAYLOAD_BYTES:
            raise fail(f"char length must be 1 to {MAX_PAYLOAD_BYTES} bytes, got '{params[0]}'")
        return GrammarField(name, kind, index, size * 8)

    endianness = _ENDIANNESS.get(params[1] if len(params) > 1 else "")
    if endianness is None:
        raise fail(f"endianness must be little-endian or big-endian, got '{params[1]}'")

    if kind == "float":
        if len(params) > 2:
            raise fail("too many parameters: float takes a size and an endianness (no bit offset)")
        if size not in (32, 64):
            raise fail(f"float size must be 32 or 64 bits, got '{params[0]}'")
        return GrammarField(name, kind, index, size, endianness)

    if len(params) > 3:
        raise fail(f"too many parameters: {kind} takes a size, an endianness and a bit offset")
    if size is None or not 1 <= size <= 64:
        raise fail(f"{kind} size must be 1 to 64 bits, got '{params[0]}'")
    offset: int | None = None
    if len(params) > 2 and params[2] != "":
        offset = _number(params[2])
        if offset is None or offset > 7:
            raise fail(f"bit offset must be 0 to 7, got '{params[2]}'")
    parsed = GrammarField(name, kind, index, size, endianness, offset)
    if endianness == "little" and offset not in (None, 7) and parsed.byte_count > 1:
        raise fail("a bit offset cannot be combined with little-endian on a field that spans bytes")
    return parsed


_MISSING: dict[Kind, str] = {
    "bool": "bool needs a bit number 0 to 7, as in 'door::bool:7'",
    "char": "char needs a length in bytes, as in 'label::char:4'",
    "float": "float needs a size of 32 or 64 bits, as in 'level::float:32'",
    "uint": "uint needs a size of 1 to 64 bits, as in 'count::uint:16'",
    "int": "int needs a size of 1 to 64 bits, as in 'temp::int:16'",
}


def _number(text: str) -> int | None:
    return int(text) if _NUMBER.fullmatch(text) else None


def _reader(f: GrammarField) -> _Reader:
    """A function that reads the field from a payload at least `f.end` bytes long."""
    start, stop = f.byte_index, f.end
    if f.kind == "bool":
        mask = 1 << (7 if f.bit_offset is None else f.bit_offset)
        return lambda p: (p[start] & mask) != 0
    if f.kind == "char":
        return lambda p: str(p[start:stop], "latin-1")
    if f.kind == "float":
        unpack = struct.Struct(("<" if f.endianness == "little" else ">") + ("f" if f.bits == 32 else "d")).unpack_from
        return lambda p: float(unpack(p, start)[0])

    signed = f.kind == "int"
    whole_bytes = f.bit_offset in (None, 7) and f.bits % 8 == 0
    if whole_bytes:
        order: Literal["big", "little"] = f.endianness
        return lambda p: int.from_bytes(p[start:stop], order, signed=signed)

    mask = (1 << f.bits) - 1
    sign = 1 << (f.bits - 1) if signed else 0  # (v ^ sign) - sign is two's complement, or v for uint
    if f.endianness == "little" and f.byte_count > 1:
        return lambda p: ((int.from_bytes(p[start:stop], "little") & mask) ^ sign) - sign
    shift = f.byte_count * 8 - (7 - (7 if f.bit_offset is None else f.bit_offset)) - f.bits
    return lambda p: (((int.from_bytes(p[start:stop], "big") >> shift) & mask) ^ sign) - sign
