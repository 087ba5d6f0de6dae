"""Counters kept with one statement per batch: INSERT ... ON CONFLICT DO UPDATE, which both
SQLite and PostgreSQL speak (with their own SQLAlchemy constructs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def add_counts(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    counts: Sequence[str],
    replace: Sequence[str] = (),
) -> None:
    """Insert `rows`; where a row with the same `keys` exists, add to its `counts` columns and
    overwrite its `replace` columns. Rows must not repeat a key (sum them first)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    excluded = stmt.excluded
    sets: dict[str, Any] = {c: table.c[c] + excluded[c] for c in counts}
    sets.update({c: excluded[c] for c in replace})
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=sets), list(rows))
