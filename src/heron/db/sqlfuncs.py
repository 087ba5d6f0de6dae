"""SQL expressions each database spells its own way, compiled per dialect: callers build one
expression and never ask which database they run on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import String, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class _Spelled(FunctionElement[Any]):
    """A function of its arguments written per dialect: `spellings` maps a dialect's name (or
    `default`) to SQL where `{}` stands for the arguments, comma-separated."""

    inherit_cache = True
    spellings: ClassVar[dict[str, str]]


@compiles(_Spelled)
def _render(element: _Spelled, compiler: Any, **kw: Any) -> str:
    spelling = element.spellings.get(compiler.dialect.name, element.spellings["default"])
    return spelling.format(compiler.process(element.clauses, **kw))


class _Unindexed(_Spelled):
    """`+column` on SQLite, a no-op its planner does not index; the column itself elsewhere
    (PostgreSQL plans from its statistics)."""

    name = "unindexed"
    inherit_cache = True  # SQLAlchemy asks each subclass
    spellings = {"default": "{}", "sqlite": "+{}"}

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


class _CsvLine(_Spelled):
    name = "csv_line"
    inherit_cache = True
    type = String()
    spellings = {"default": "format({})", "sqlite": "printf({})"}


class _IsoUtcMs(_Spelled):
    name = "iso_utc_ms"
    inherit_cache = True
    type = String()
    spellings = {
        "default": "to_char(timezone('UTC', {}), 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
        # A slice of the stored `YYYY-MM-DD HH:MM:SS.ffffff`: parsing it cost a second per million cells.
        "sqlite": "(replace(substr({}, 1, 23), ' ', 'T') || 'Z')",
    }


def unindexed(column: Any) -> Any:
    """`column` as no index may serve it: the planner walks another index instead."""
    return _Unindexed(column)


def csv_line(cells: Sequence[Any]) -> Any:
    """One CSV line from its cells (already quoted where needed) in one call, NULL as an empty
    cell: SQLite `printf` and PostgreSQL `format` (half the cost of chaining `||` and `coalesce`
    per cell)."""
    return _CsvLine(literal(",".join(["%s"] * len(cells))), *cells)


def iso_utc_ms(column: Any) -> Any:
    """A UTC time column as ISO 8601 to the millisecond (`2026-11-23T19:21:38.123Z`)."""
    return _IsoUtcMs(column)
