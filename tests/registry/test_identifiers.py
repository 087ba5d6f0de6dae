"""The one hex check every identifier, key and payload format goes through."""

from __future__ import annotations

import pytest

from heron.registry.identifiers import is_hex


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        ("00aaBB11", 8, True),
        ("00aaBB1", 8, False),
        ("00aaBB1g", 8, False),
        ("", 0, True),
        ("", range(0, 25, 2), True),
        ("abc", range(0, 25, 2), False),  # odd: not whole bytes
        ("ab" * 12, range(0, 25, 2), True),
        ("ab" * 13, range(0, 25, 2), False),
        ("1", range(1, 9), True),
        ("", range(1, 9), False),
        ("0x1", range(1, 9), False),  # a path id is exactly its digits
        ("٣٣", 2, False),  # Unicode digits are not hex digits
        (None, 16, False),
        (1234, 4, False),
    ],
)
def test_is_hex(value: object, digits: int | range, expected: bool) -> None:
    assert is_hex(value, digits) is expected
