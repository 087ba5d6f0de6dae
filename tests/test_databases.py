"""The dual-database setup itself: each run really uses the database its id names."""

from __future__ import annotations

from sqlalchemy import text

from heron.db.engine import Database


def test_database_dialect_matches_test_id(db: Database, database_url: str) -> None:
    expected = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert db.engine.dialect.name == expected
    with db.engine.connect() as conn:
        if expected == "postgresql":
            assert "PostgreSQL" in conn.execute(text("SELECT version()")).scalar_one()
        else:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
