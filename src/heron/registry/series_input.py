"""Files and pasted lists for the Sigfox series operations (New, Edit, Transfer, Replace, Delete
series). A whole file is refused only when it is not a usable text file (empty, binary, over
50 MB) or holds more rows than a job takes (refused at the first row too many, the rest unread);
otherwise every line becomes a row, and a bad line becomes a row carrying its error, so the job
reports it (with its line number) while the valid rows proceed.

Formats (CSV: fields separated by `;`, `,` or a tab, the one the file's first line uses, as a
device export writes it; a field may be quoted, `""` inside quotes standing for `"`; blank lines
and `#` comments skipped; an optional header line naming the columns):
- New series: `ID;PAC` per line.
- Delete and Transfer series: one hex device id per line.
- Replace series: `old ID;new ID` per line.
- Edit series: `id` then any of `name, lat, lng, activable, automaticRenewal, prototype,
  productCertificate`; without a header the columns are `id;name;lat;lng`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from heron.errors import InvalidInput
from heron.registry.identifiers import SigfoxId, parse_pac

MAX_BYTES = 50 * 1024 * 1024
MAX_ROWS = 100_000  # a job's rows (registry.bulk_jobs.MAX_ROWS)
EDIT_COLUMNS = ("id", "name", "lat", "lng", "activable", "automaticRenewal", "prototype", "productCertificate")
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}

Row = dict[str, Any]


def decode(data: bytes, field: str = "file") -> str:
    """The upload as text, or a 400 naming the field when it is not a usable text file."""
    if len(data) > MAX_BYTES:
        raise InvalidInput.field(field, f"is larger than {MAX_BYTES // (1024 * 1024)} MB")
    if b"\x00" in data:
        raise InvalidInput.field(field, "is not a text file (it contains binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise InvalidInput.field(field, "is empty")
    return text


_SEPARATORS = (";", ",", "\t")  # by preference, when a first line holds several


def _separator(line: str) -> str | None:
    """The first of `_SEPARATORS` that `line` holds outside quotes (`"a;b",1` is comma-separated)."""
    outside = "".join(line.split('"')[0::2])
    return next((sep for sep in _SEPARATORS if sep in outside), None)


def _lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """The rows, lazily (a file over `MAX_ROWS` rows is refused at the first row too many), each
    line parsed on its own, so an unbalanced quote spoils its line only. The separator is decided
    once, by the first line that holds one; lines before it are one field each."""
    separator: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if separator is None:
            separator = _separator(raw)
        if '"' not in raw:  # no quoting: a plain split reads it alike, in a third of the time
            yield number, [f.strip() for f in raw.split(separator or ";")]
            continue
        try:
            fields = next(csv.reader((raw,), delimiter=separator or ";", skipinitialspace=True))
        except csv.Error:  # a field over the csv module's limit (131,072 characters)
            yield number, []
            continue
        yield number, [f.strip() for f in fields]


def _head(
    lines: Iterator[tuple[int, list[str]]],
) -> tuple[tuple[int, list[str]] | None, Iterator[tuple[int, list[str]]]]:
    first = next(lines, None)
    return first, lines


def _is_header(fields: list[str], names: tuple[str, ...]) -> bool:
    lowered = {n.lower() for n in names}
    return bool(fields) and all(f.lower() in lowered for f in fields if f)


def _error(number: int, message: str) -> Row:
    return {"line": number, "error": f"line {number}: {message}"}


def _parse(text: str, header: tuple[str, ...], build: Callable[[int, list[str]], Row]) -> list[Row]:
    first, lines = _head(_lines(text))
    if first is not None and not _is_header(first[1], header):
        lines = chain([first], lines)
    return _rows(lines, build)


def _rows(lines: Iterable[tuple[int, list[str]]], build: Callable[[int, list[str]], Row]) -> list[Row]:
    rows: list[Row] = []
    first_seen: dict[str, int] = {}
    for number, fields in lines:
        if len(rows) == MAX_ROWS:
            raise InvalidInput.field("file", f"holds more than {MAX_ROWS} rows (line {number} is one too many)")
        if not fields:
            rows.append(_error(number, "is too long to be a row"))
            continue
        try:
            row = build(number, fields)
        except InvalidInput as exc:
            rows.append(_error(number, exc.errors[0].message if exc.errors else exc.message))
            continue
        key = row["id"]
        if key in first_seen:
            rows.append(_error(number, f"duplicate id {key} (first on line {first_seen[key]})"))
            continue
        first_seen[key] = number
        rows.append(row)
    return rows


def _count(fields: list[str], expected: int, what: str) -> None:
    if len(fields) != expected:
        raise InvalidInput(f"expected {what}, got {len(fields)} field(s)")


def new_series(text: str) -> list[Row]:
    def build(number: int, fields: list[str]) -> Row:
        _count(fields, 2, "ID;PAC")
        return {"line": number, "id": SigfoxId.parse(fields[0]), "pac": parse_pac(fields[1])}

    return _parse(text, ("id", "pac"), build)


def id_list(text: str) -> list[Row]:
    def build(number: int, fields: list[str]) -> Row:
        _count(fields, 1, "one device id per line")
        return {"line": number, "id": SigfoxId.parse(fields[0])}

    return _parse(text, ("id",), build)


def replacements(text: str) -> list[Row]:
    def build(number: int, fields: list[str]) -> Row:
        _count(fields, 2, "old ID;new ID")
        old, new = SigfoxId.parse(fields[0], "id"), SigfoxId.parse(fields[1], "targetId")
        if old == new:
            raise InvalidInput("the new id is the old one")
        return {"line": number, "id": old, "targetId": new}

    return _parse(text, ("id", "targetId", "deviceId", "targetDeviceId"), build)


def edits(text: str) -> list[Row]:
    first, lines = _head(_lines(text))
    columns = ["id", "name", "lat", "lng"]
    if first is not None and _is_header(first[1], EDIT_COLUMNS):
        canonical = {c.lower(): c for c in EDIT_COLUMNS}
        columns = [canonical[f.lower()] for f in first[1]]
        if "id" not in columns:
            raise InvalidInput.field("file", "the header must name an `id` column")
    elif first is not None:
        lines = chain([first], lines)

    def build(number: int, fields: list[str]) -> Row:
        if len(fields) > len(columns):
            raise InvalidInput(f"expected at most {len(columns)} fields ({';'.join(columns)}), got {len(fields)}")
        row: Row = {"line": number}
        for column, value in zip(columns, fields, strict=False):
            if column == "id":
                row["id"] = SigfoxId.parse(value)
            elif value != "":
                row[column] = _edit_value(column, value)
        return row

    return _rows(lines, build)


def _edit_value(column: str, value: str) -> Any:
    if column in ("lat", "lng"):
        try:
            number = float(value)
        except ValueError:
            raise InvalidInput(f"{column} must be a number, got {value[:40]!r}") from None
        limit = 90 if column == "lat" else 180
        if not -limit <= number <= limit:
            raise InvalidInput(f"{column} must be between -{limit} and {limit}")
        return number
    if column in ("activable", "automaticRenewal", "prototype"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise InvalidInput(f"{column} must be true or false, got {value[:40]!r}")
    if column == "name" and len(value) > 100:
        raise InvalidInput("name must be at most 100 characters")
    return value
