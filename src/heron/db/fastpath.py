"""Fixed statements for the few hot paths that run on every request (authentication, reading a
group), executed on the pooled driver connection directly. A SQLAlchemy connection's lifecycle
(checkout, begin, execute, reset) costs ~150 us on this machine; the query itself ~10 us.

Statements use `:name` placeholders; they are rewritten once per dialect. Rows come back as
driver tuples: callers convert the values they read (see `utc`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from heron.db.engine import Database

_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")


class FastQuery:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self._by_dialect: dict[str, str] = {}

    def _render(self, dialect: str) -> str:
        rendered = self._by_dialect.get(dialect)
        if rendered is None:
            rendered = self.sql if dialect == "sqlite" else _PLACEHOLDER.sub(r"%(\1)s", self.sql)
            self._by_dialect[dialect] = rendered
        return rendered

    def all(self, db: Database, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        conn = db.reader_connection()
        cur = conn.cursor()
        try:
            cur.execute(self._render(db.dialect), dict(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def first(self, db: Database, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self.all(db, params)
        return rows[0] if rows else None


def utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite returns text, PostgreSQL datetimes)."""
    if value is None:
        return None
    parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
