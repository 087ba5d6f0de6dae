"""heron.json_steps decodes and encodes exactly as the json module does, in steps."""

from __future__ import annotations

import json
import random

import pytest

from heron import json_steps

DOCUMENTS = [
    '{"deviceTypeId": "5", "data": [{"id": "1", "pac": "A1"}, {"id": "2"}], "prefix": null}',
    '  {  "data" : [ ] , "x" : [ 1 , [2, 3], {"a": [4]} ] }  ',
    '{"data": [1, "two", null, true, false, 1.5e3, {"k": "v\\u00e9"}, ["n"]], "s": "\\"[,]\\""}',
    "[]",
    '[{"a": 1}, {"b": [2]}]',
    "{}",
    '"text"',
    "12",
    "null",
    '{"a": 1, "a": 2}',
    '{"data": [1,2], "data": [3]}',
]
BROKEN = [
    "",
    "{",
    "[1, 2",
    '{"data": [1, 2,]}',
    '{"data": [1 2]}',
    '{"a" 1}',
    "{a: 1}",
    '{"a": 1,}',
    '{"a": 1} x',
    "[1] [2]",
    '{"data": [1], }',
    b"\xff\xfe{".decode("latin-1"),
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_document_decodes_as_json_loads_decodes_it(document: str) -> None:
    assert json_steps.loads(document) == json.loads(document)
    assert json_steps.loads(document.encode()) == json.loads(document.encode())


@pytest.mark.parametrize("document", BROKEN)
def test_a_document_json_loads_refuses_is_refused(document: str) -> None:
    with pytest.raises(ValueError):
        json.loads(document)
    with pytest.raises(ValueError):
        json_steps.loads(document)


def test_bytes_that_are_not_utf8_are_refused_as_json_loads_refuses_them() -> None:
    body = b'{"data": ["\xff"]}'
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        json_steps.loads(body)


@pytest.mark.parametrize("count", [0, 1, json_steps.STEP - 1, json_steps.STEP, json_steps.STEP + 1, 2_500])
def test_rows_encode_as_json_dumps_encodes_them(count: int) -> None:
    rng = random.Random(count)
    rows = [
        {"id": f"{n:08X}", "pac": rng.randbytes(8).hex(), "lat": rng.random(), "tags": ["a", n]} for n in range(count)
    ]
    text = json_steps.dumps_rows(rows)
    assert text == json.dumps(rows, separators=(",", ":"))
    assert json_steps.loads(text) == rows
