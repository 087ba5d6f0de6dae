"""The Sigfox custom payload grammar: real config strings and payload bytes in, fields out."""

from __future__ import annotations

import math
import random
import struct

import pytest

from heron.errors import InvalidInput
from heron.messages.grammar import Grammar, GrammarField, parse_grammar


def decode(config: str, payload_hex: str) -> dict[str, bool | int | float | str]:
    return parse_grammar(config).decode(bytes.fromhex(payload_hex))


def invalid(config: str, field: str = "payloadConfig") -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_grammar(config, field)
    return caught.value


# The documented example and the examples of the Sigfox documentation


def test_documented_example_exposes_temp_hum_and_door() -> None:
    grammar = parse_grammar("temp::int:16:little-endian hum::uint:8 door::bool:7")
    assert grammar.names == ("temp", "hum", "door")
    assert [f.byte_index for f in grammar.fields] == [0, 2, 3]
    assert grammar.decode(bytes.fromhex("1BFF3C80")) == {"temp": -229, "hum": 60, "door": True}


@pytest.mark.parametrize(
    ("config", "payload", "expected"),
    [
        ("int1::uint:8 int2::uint:8", "1234", {"int1": 0x12, "int2": 0x34}),
        ("b1::bool:7 b2::bool:6 i1:1:uint:16", "C01234", {"b1": True, "b2": True, "i1": 0x1234}),
        ("b1::bool:7 b2::bool:6 i1:1:uint:16:little-endian", "801234", {"b1": True, "b2": False, "i1": 0x3412}),
        (
            "b1::bool:7 b2::bool:6 i1:1:uint:16:little-endian i2::uint:8",
            "80123456",
            {"b1": True, "b2": False, "i1": 0x3412, "i2": 0x56},
        ),
        (
            "str::char:6 i1::uint:16 i2::uint:32",
            "41424344454601234567890A",
            {"str": "ABCDEF", "i1": 0x123, "i2": 0x4567890A},
        ),
    ],
)
def test_sigfox_documentation_examples_decode_as_documented(
    config: str, payload: str, expected: dict[str, object]
) -> None:
    assert decode(config, payload) == expected


# Every type


def test_bool_reads_the_named_bit_with_7_most_significant() -> None:
    config = " ".join(f"b{bit}:0:bool:{bit}" for bit in range(8))
    assert decode(config, "A5") == {f"b{bit}": bool(0xA5 >> bit & 1) for bit in range(8)}
    assert decode("hi::bool:7 lo::bool:0", "80") == {"hi": True, "lo": False}


def test_char_reads_bytes_as_latin1_text_keeping_padding() -> None:
    assert decode("label::char:5", "48e96c6c00") == {"label": "Héll\x00"}
    assert decode("all::char:12", "ff" * 12) == {"all": "ÿ" * 12}


def test_uint_reads_whole_bytes_big_endian_by_default() -> None:
    assert decode("a::uint:8 b::uint:24 c::uint:64", "FF" + "010203" + "8000000000000001") == {
        "a": 255,
        "b": 0x010203,
        "c": 0x8000000000000001,
    }


def test_int_is_twos_complement_over_whole_bytes() -> None:
    assert decode("a::int:8 b::int:16 c::int:32", "80" + "FFFE" + "7FFFFFFF") == {"a": -128, "b": -2, "c": 2**31 - 1}
    assert decode("d::int:64 e::int:24", "FF" * 8 + "800000") == {"d": -1, "e": -(2**23)}


def test_little_endian_reverses_byte_order_for_uint_and_int() -> None:
    assert decode("u::uint:32:little-endian i::int:16:little-endian", "78563412" + "FEFF") == {
        "u": 0x12345678,
        "i": -2,
    }


def test_explicit_big_endian_is_the_default_order() -> None:
    assert decode("u::uint:16:big-endian", "1234") == decode("u::uint:16", "1234") == {"u": 0x1234}


@pytest.mark.parametrize(
    ("config", "fmt"),
    [
        ("v::float:32", ">f"),
        ("v::float:32:big-endian", ">f"),
        ("v::float:32:little-endian", "<f"),
        ("v::float:64", ">d"),
        ("v::float:64:little-endian", "<d"),
    ],
)
def test_float_is_ieee754_in_either_order(config: str, fmt: str) -> None:
    assert parse_grammar(config).decode(struct.pack(fmt, -21.5)) == {"v": -21.5}


def test_float_keeps_nan_and_infinity_as_floats() -> None:
    decoded = parse_grammar("n::float:32 i::float:64").decode(bytes.fromhex("7FC00000" + "7FF0000000000000"))
    nan = decoded["n"]
    assert isinstance(nan, float) and math.isnan(nan)
    assert decoded["i"] == math.inf


# Bit counts that are not whole bytes, bit offsets, bits spanning bytes


def test_int_sign_extends_from_its_top_bit_for_odd_sizes() -> None:
    # int:12 reads the first 12 bits of the stream: 0xFFF is -1, 0x800 the minimum, 0x7FF the maximum.
    assert decode("v::int:12", "FFF0") == {"v": -1}
    assert decode("v::int:12", "8000") == {"v": -2048}
    assert decode("v::int:12", "7FF0") == {"v": 2047}
    assert decode("v::int:1", "80") == {"v": -1}
    assert decode("v::int:3::2", "03") == {"v": 3}
    assert decode("v::int:3::2", "06") == {"v": -2}
    assert decode("v::int:3::2", "04") == {"v": -4}


def test_uint_without_offset_reads_from_bit_7_of_its_first_byte() -> None:
    assert decode("v::uint:4", "A5") == {"v": 0xA}
    assert decode("v::uint:12", "ABCD") == {"v": 0xABC}


def test_bit_offset_names_the_bit_where_reading_starts() -> None:
    # 4 bits starting at bit 3 of byte 1 are bits 3..0: the low nibble.
    assert decode("status:1:uint:4::3", "00A5") == {"status": 0x5}
    assert decode("mode:1:uint:4::7", "00A5") == {"mode": 0xA}
    assert decode("mid:0:uint:2::4", "18") == {"mid": 0b11}


def test_bits_span_bytes_from_a_bit_offset() -> None:
    # Bits 3..0 of byte 0 then 7..0 of byte 1 then 7..4 of byte 2: 16 bits.
    assert decode("v:0:uint:16::3", "F1234F") == {"v": 0x1234}
    assert decode("v:0:int:10::1", "0380") == {"v": -128}  # bits 1..0 of 03, 7..0 of 80: 11 1000 0000


def test_little_endian_odd_size_takes_the_low_bits() -> None:
    assert decode("v::uint:12:little-endian", "34F1") == {"v": 0x134}
    assert decode("v::int:12:little-endian", "FF0F") == {"v": -1}
    assert decode("v::int:12:little-endian", "0008") == {"v": -2048}


def test_little_endian_within_one_byte_reads_like_big_endian() -> None:
    assert decode("v::uint:4:little-endian:3", "A5") == decode("v::uint:4::3", "A5") == {"v": 5}


def test_little_endian_accepts_the_default_offset_7_across_bytes() -> None:
    assert decode("v::uint:16:little-endian:7", "3412") == {"v": 0x1234}


def test_64_bit_uint_from_an_offset_spans_nine_bytes() -> None:
    grammar = parse_grammar("v:0:uint:64::3")
    assert grammar.fields[0].byte_count == 9
    assert grammar.decode(bytes.fromhex("0F" + "FF" * 7 + "F0")) == {"v": 2**64 - 1}


# Omitted byte index


def test_first_field_without_index_starts_at_byte_0() -> None:
    assert parse_grammar("v::uint:8").fields[0].byte_index == 0
    assert parse_grammar("b::bool:3").fields[0].byte_index == 0


def test_bools_without_index_share_the_current_byte_and_numbers_move_on() -> None:
    grammar = parse_grammar("a::bool:7 b::bool:6 n::uint:8 c::bool:0")
    assert [f.byte_index for f in grammar.fields] == [0, 0, 1, 2]
    assert grammar.decode(bytes.fromhex("40FF01")) == {"a": False, "b": True, "n": 255, "c": True}


def test_numbers_without_index_follow_each_other() -> None:
    grammar = parse_grammar("a::uint:16 b::char:3 c::float:32 d::uint:4 e::uint:8")
    assert [f.byte_index for f in grammar.fields] == [0, 2, 5, 9, 10]


def test_field_after_a_bit_offset_reuses_the_last_byte_used() -> None:
    grammar = parse_grammar("mode::uint:4::7 status::uint:4::3 flag::bool:0 n::uint:8")
    assert [f.byte_index for f in grammar.fields] == [0, 0, 0, 1]
    span = parse_grammar("wide:0:uint:12::7 low::uint:4::3")
    assert [f.byte_index for f in span.fields] == [0, 1]
    assert span.decode(bytes.fromhex("ABCD")) == {"wide": 0xABC, "low": 0xD}


def test_number_without_offset_after_a_number_does_not_share_its_byte() -> None:
    assert [f.byte_index for f in parse_grammar("a::uint:4 b::uint:4").fields] == [0, 1]


def test_explicit_index_moves_the_cursor_for_later_fields() -> None:
    grammar = parse_grammar("a:4:uint:8 b::uint:8 c:0:bool:1 d::bool:2 e::uint:8")
    assert [f.byte_index for f in grammar.fields] == [4, 5, 0, 0, 1]


def test_fields_may_overlap_when_indexes_say_so() -> None:
    assert decode("word:0:uint:16 high:0:uint:8 sign:0:bool:7", "8001") == {
        "word": 0x8001,
        "high": 0x80,
        "sign": True,
    }


# Payload length


def test_short_payload_leaves_out_only_the_fields_it_cannot_hold() -> None:
    grammar = parse_grammar("a::uint:8 b::uint:16 c::bool:0 d:11:char:1")
    assert grammar.decode(b"") == {}
    assert grammar.decode(b"\x01") == {"a": 1}
    assert grammar.decode(b"\x01\x02") == {"a": 1}
    assert grammar.decode(b"\x01\x02\x03") == {"a": 1, "b": 0x0203}
    assert grammar.decode(b"\x01\x02\x03\x01") == {"a": 1, "b": 0x0203, "c": True}
    assert grammar.decode(b"\x01\x02\x03\x01" + b"A" * 8)["d"] == "A"


def test_bytes_beyond_the_grammar_are_ignored() -> None:
    assert decode("a::uint:8", "01FFFFFF") == {"a": 1}


def test_field_ending_at_byte_11_is_accepted() -> None:
    assert parse_grammar("tail:4:uint:64").fields[0].end == 12
    assert parse_grammar("s:0:char:12").fields[0].end == 12


# Validation: each error names the grammar field and says why


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("temp::integer:16", "temp: unknown type 'integer'"),
        ("temp::Uint:16", "temp: unknown type 'Uint'"),
        ("door::bool:8", "door: bool bit must be 0 to 7, got '8'"),
        ("door::bool:x", "door: bool bit must be 0 to 7, got 'x'"),
        ("door::bool", "door: bool needs a bit number"),
        ("door::bool:", "door: bool needs a bit number"),
        ("door::bool:1:2", "door: too many parameters"),
        ("label::char:0", "label: char length must be 1 to 12 bytes, got '0'"),
        ("label::char:13", "label: char length must be 1 to 12 bytes, got '13'"),
        ("label::char:4:7", "label: too many parameters"),
        ("level::float:16", "level: float size must be 32 or 64 bits, got '16'"),
        ("level::float:32:middle-endian", "level: endianness must be little-endian or big-endian"),
        ("level::float:32:big-endian:7", "level: too many parameters"),
        ("n::uint:0", "n: uint size must be 1 to 64 bits, got '0'"),
        ("n::int:65", "n: int size must be 1 to 64 bits, got '65'"),
        ("n::int:²", "n: int size must be 1 to 64 bits"),
        ("n::uint", "n: uint needs a size"),
        ("n::uint:32:2", "n: endianness must be little-endian or big-endian, got '2'"),
        ("n::uint:4::8", "n: bit offset must be 0 to 7, got '8'"),
        ("n::uint:4::-1", "n: bit offset must be 0 to 7, got '-1'"),
        ("n::uint:4::3:1", "n: too many parameters"),
        ("n::uint:16:little-endian:3", "n: a bit offset cannot be combined with little-endian"),
        ("n:12:uint:8", "n: byte index must be 0 to 11, got '12'"),
        ("n:-1:uint:8", "n: byte index must be 0 to 11, got '-1'"),
        ("n:a:uint:8", "n: byte index must be 0 to 11"),
        ("n:11:uint:16", "n: runs past the 12-byte payload"),
        ("n:8:float:64", "n: runs past the 12-byte payload"),
        ("n:11:uint:8::0", "n: runs past the 12-byte payload"),
        ("s::char:12 b::bool:0", "b: runs past the 12-byte payload"),
        ("a::uint:64 b::uint:32 c::uint:8", "c: runs past the 12-byte payload"),
        ("temp::uint:8 temp::int:8", "temp: the name is used twice"),
        ("1temp::uint:8", "1temp: a name must start with a letter or underscore"),
        ("te-mp::uint:8", "te-mp: a name must start with a letter or underscore"),
        ("té::uint:8", "té: a name must start with a letter or underscore"),
        (":0:uint:8", ":0:uint:8: a name must start with a letter or underscore"),
        ("temp", "temp: expected name:byte_index:type:params"),
        ("temp:0", "temp:0: expected name:byte_index:type:params"),
    ],
)
def test_invalid_config_names_the_field_and_the_reason(config: str, expected: str) -> None:
    error = invalid(config)
    assert error.message.startswith(f"payloadConfig: {expected}")
    assert error.errors[0].field == "payloadConfig"
    assert error.errors[0].message.startswith(expected)


@pytest.mark.parametrize("config", ["", "   ", "\n\t"])
def test_empty_config_is_rejected(config: str) -> None:
    assert "is empty" in invalid(config).message


def test_errors_are_reported_on_the_callers_field() -> None:
    error = invalid("x::bogus:1", field="deviceType.payloadConfig")
    assert error.errors[0].field == "deviceType.payloadConfig"
    assert error.message.startswith("deviceType.payloadConfig: x: unknown type")


def test_more_fields_than_payload_bits_are_rejected() -> None:
    config = " ".join(f"b{i}:{i // 8 % 12}:bool:{i % 8}" for i in range(97))
    assert "at most 96" in invalid(config).message
    assert len(parse_grammar(" ".join(config.split()[:96])).fields) == 96


def test_any_whitespace_separates_fields() -> None:
    assert parse_grammar(" a::uint:8\n\tb::uint:8  ").names == ("a", "b")


def test_underscore_names_are_valid() -> None:
    assert parse_grammar("_x::uint:8 y_2::uint:8").names == ("_x", "y_2")


# Caching and the decoder's robustness


def test_parsing_is_pure_so_results_compare_and_hash_equal() -> None:
    text = "mode::uint:4::7 status::uint:4::3 t::int:12"
    first, second = parse_grammar(text), parse_grammar(text)
    assert first == second
    assert hash(first) == hash(second)
    assert {first: 1}[second] == 1


def test_grammar_built_from_fields_decodes_like_the_parsed_one() -> None:
    fields = (GrammarField("t", "int", 0, 16, "little"), GrammarField("d", "bool", 2, 1, bit_offset=7))
    assert Grammar(fields) == parse_grammar("t::int:16:little-endian d::bool:7")
    assert Grammar(fields).decode(b"\xfe\xff\x80") == {"t": -2, "d": True}


def test_decode_accepts_bytearray_and_memoryview() -> None:
    grammar = parse_grammar("n::uint:16 s::char:2 f::float:32")
    payload = bytes.fromhex("0102" + "4142" + "3F800000")
    expected = {"n": 0x0102, "s": "AB", "f": 1.0}
    assert grammar.decode(bytearray(payload)) == expected  # type: ignore[arg-type]
    assert grammar.decode(memoryview(payload)) == expected  # type: ignore[arg-type]


PROPERTY_GRAMMARS = [
    "temp::int:16:little-endian hum::uint:8 door::bool:7",
    "a::uint:4::7 b::uint:4::3 c::int:12 d::uint:12:little-endian e::bool:0 f::char:3 g::float:32",
    "d::float:64:little-endian e::int:24 f::bool:7",
    "s:0:char:12 w:0:uint:64::0 x:3:int:64::5 y:11:bool:0",
    "v:0:uint:1::0 w:5:int:7::6 x:2:float:32:little-endian z::uint:48:little-endian",
]


@pytest.mark.parametrize("config", PROPERTY_GRAMMARS)
def test_decode_never_raises_and_types_hold_on_random_payloads(config: str) -> None:
    grammar = parse_grammar(config)
    kinds = {f.name: f.kind for f in grammar.fields}
    rng = random.Random(config)
    for _ in range(2000):
        payload = rng.randbytes(rng.randint(0, 12))
        decoded = grammar.decode(payload)
        assert set(decoded) == {f.name for f in grammar.fields if f.end <= len(payload)}
        for name, value in decoded.items():
            field = next(f for f in grammar.fields if f.name == name)
            if kinds[name] == "bool":
                assert isinstance(value, bool)
            elif kinds[name] == "char":
                assert isinstance(value, str) and len(value) == field.bits // 8
            elif kinds[name] == "float":
                assert isinstance(value, float)
            elif kinds[name] == "uint":
                assert isinstance(value, int) and 0 <= value < 2**field.bits
            else:
                assert isinstance(value, int) and -(2 ** (field.bits - 1)) <= value < 2 ** (field.bits - 1)


def test_random_bit_fields_match_a_bit_by_bit_reading() -> None:
    # A slow, obvious reference: read the payload as a string of bits, MSB of byte 0 first.
    rng = random.Random(7)
    for _ in range(500):
        bits = rng.randint(1, 64)
        offset = rng.randint(0, 7)
        skipped = 7 - offset
        byte_count = (skipped + bits + 7) // 8
        index = rng.randint(0, 12 - byte_count)
        kind = rng.choice(["uint", "int"])
        payload = rng.randbytes(12)
        stream = "".join(f"{b:08b}" for b in payload)
        start = index * 8 + skipped
        expected = int(stream[start : start + bits], 2)
        if kind == "int" and expected >= 2 ** (bits - 1):
            expected -= 2**bits
        assert parse_grammar(f"v:{index}:{kind}:{bits}::{offset}").decode(payload) == {"v": expected}
