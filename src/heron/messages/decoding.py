"""Decoded payloads: what a device type's payload type makes of an uplink's bytes (2 regular:
nothing; 3 custom grammar: its fields; 5 ASCII: the text), stored with the message as JSON."""

from __future__ import annotations

import math
from functools import lru_cache

from heron.messages.grammar import Grammar, Value, parse_grammar

REGULAR, CUSTOM, ASCII = 2, 3, 5


@lru_cache(maxsize=1024)
def grammar_of(config: str) -> Grammar:
    """Grammars are parsed once per distinct text (device types and callbacks share them)."""
    return parse_grammar(config)


def _json_safe(value: Value) -> Value | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def decode(grammar: Grammar, data_hex: str) -> dict[str, Value | None]:
    return {k: _json_safe(v) for k, v in grammar.decode(bytes.fromhex(data_hex)).items()}


def decode_payload(payload_type: int, config: str | None, data_hex: str) -> dict[str, Value | None] | None:
    if payload_type == CUSTOM and config:
        return decode(grammar_of(config), data_hex)
    if payload_type == ASCII:
        return {"text": bytes.fromhex(data_hex).decode("ascii", "replace")}
    return None
