"""The SQLite WAL is copied back into the database file by the background checkpointer, not by
the committing writer: a big commit leaves the database file as it was (its pages wait in the
WAL) until the checkpointer's next round writes them there."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from heron.db.engine import SQLITE_AUTOCHECKPOINT_PAGES, Database


def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "heron.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE t (v TEXT)"))
        with db.write() as session:
            assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == SQLITE_AUTOCHECKPOINT_PAGES
            # ~5 MB: over SQLite's default 1,000-page threshold, under Heron's.
            session.execute(text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 1000} for _ in range(5000)])
        assert path.stat().st_size < 1_000_000, "the commit checkpointed inline"

        checkpointer = db.wal_checkpointer()
        assert checkpointer is not None
        checkpointer.every = 0.05
        checkpointer.start()
        try:
            deadline = time.monotonic() + 10
            while path.stat().st_size < 5_000_000 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            checkpointer.stop()
        assert path.stat().st_size >= 5_000_000
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 5000
    finally:
        db.dispose()


def test_no_checkpointer_for_postgresql() -> None:
    db = Database("postgresql+psycopg://heron@127.0.0.1:1/heron")  # never connected
    try:
        assert db.wal_checkpointer() is None
    finally:
        db.dispose()
