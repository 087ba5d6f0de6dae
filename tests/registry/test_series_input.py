"""Series files: what is refused whole, and per-line rows with errors for the rest."""

from __future__ import annotations

import pytest

from heron.errors import InvalidInput
from heron.registry import series_input


def test_new_series_rows_are_normalized_and_bad_lines_carry_their_line_number() -> None:
    text = (
        "id;pac\n00077FFF;0123456789abcdef\n\n# a comment\n"
        "77fff;0123456789ABCDEF\nZZZ;0123456789ABCDEF\n1A2B;12\n1A2C\n"
    )
    rows = series_input.new_series(text)
    assert rows[0] == {"line": 2, "id": "77FFF", "pac": "0123456789ABCDEF"}
    assert rows[1] == {"line": 5, "error": "line 5: duplicate id 77FFF (first on line 2)"}
    assert rows[2]["line"] == 6 and "1 to 8 hex digits" in rows[2]["error"]
    assert rows[3]["line"] == 7 and "16 hex digits" in rows[3]["error"]
    assert rows[4] == {"line": 8, "error": "line 8: expected ID;PAC, got 1 field(s)"}


def test_seed_delete_series_example_parses_to_eight_ids() -> None:
    text = "0017B46C\n0017B46D\n0017B46E\n0017B46F\n0017B470\n0017B471\n0017B472\n0017B473\n"
    rows = series_input.id_list(text)
    assert [r["id"] for r in rows] == ["17B46C", "17B46D", "17B46E", "17B46F", "17B470", "17B471", "17B472", "17B473"]


@pytest.mark.parametrize("sep", [";", ",", "\t"])
def test_replacements_accept_any_separator(sep: str) -> None:
    rows = series_input.replacements(f"1A{sep}1B\n2A{sep}2A\n")
    assert rows[0] == {"line": 1, "id": "1A", "targetId": "1B"}
    assert rows[1] == {"line": 2, "error": "line 2: the new id is the old one"}


def test_edit_series_with_a_header_keeps_file_line_numbers() -> None:
    text = "id;activable;lat\n1A;true;45.5\n1B;maybe;1\n1C;false;95\n1D;;\n"
    rows = series_input.edits(text)
    assert rows[0] == {"line": 2, "id": "1A", "activable": True, "lat": 45.5}
    assert rows[1] == {"line": 3, "error": "line 3: activable must be true or false, got 'maybe'"}
    assert rows[2] == {"line": 4, "error": "line 4: lat must be between -90 and 90"}
    assert rows[3] == {"line": 5, "id": "1D"}


def test_edit_series_without_a_header_reads_id_name_lat_lng() -> None:
    assert series_input.edits("1A;Meter 1;1.5;-2\n") == [
        {"line": 1, "id": "1A", "name": "Meter 1", "lat": 1.5, "lng": -2.0}
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n\n# only comments\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"1A;" + b"x" * (series_input.MAX_BYTES), "larger than 50 MB"),
    ],
)
def test_unusable_files_are_refused_whole_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        series_input.decode(data)
    assert exc.value.errors[0].field == "file" and message in exc.value.errors[0].message


def test_decode_strips_a_byte_order_mark_and_accepts_latin1() -> None:
    assert series_input.decode("\ufeff1A;0123456789ABCDEF\n".encode()) == "1A;0123456789ABCDEF\n"
    assert series_input.decode("1A;Café\n".encode("latin-1")) == "1A;Café\n"


def test_a_series_over_the_row_limit_is_refused_at_its_first_row_too_many() -> None:
    """A header and 100,000 rows are a job; the next row refuses the file, naming its line."""
    rows = "".join(f"{0x100000 + i:X}\n" for i in range(series_input.MAX_ROWS))
    assert len(series_input.id_list("id\n" + rows)) == series_input.MAX_ROWS
    with pytest.raises(InvalidInput) as refused:
        series_input.id_list("id\n" + rows + "FFFFFFF\n" + "not parsed\n" * 1000)
    error = refused.value.errors[0]
    assert error.field == "file" and f"line {series_input.MAX_ROWS + 2} " in error.message


def test_the_separator_is_the_first_lines_and_quoted_fields_keep_theirs() -> None:
    """A device export's header decides the separator; a quoted name keeps its `;` and `"`."""
    text = 'id,name,lat\r\n1A,"Meter; ""north"", 1",1.5\r\n1B,"",\r\n'
    assert series_input.edits(text) == [
        {"line": 2, "id": "1A", "name": 'Meter; "north", 1', "lat": 1.5},
        {"line": 3, "id": "1B"},
    ]
    assert series_input.edits("1A\n1B;Meter, north\n") == [
        {"line": 1, "id": "1A"},
        {"line": 2, "id": "1B", "name": "Meter, north"},
    ]
