"""SQLite's write turn across processes (heron.db.engine.WriteTurn): writers of two processes
take turns instead of failing on the busy timeout, and the ingest writer's first claim holds
other processes' writers back, not its own process's threads nor its own priority writes. A
real second process holds the turn or the claim until told to let go."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from heron.db.engine import Database

HOLDER = """
import sys
from sqlalchemy import text
from heron.db.engine import Database
db = Database(sys.argv[1])
if sys.argv[2] == "turn":
    with db.write() as session:
        session.execute(text("INSERT INTO t (who) VALUES ('other')"))
        print("held", flush=True)
        sys.stdin.readline()
else:
    with db.write_first():
        print("held", flush=True)
        sys.stdin.readline()
"""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'turn.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE t (who TEXT)"))
    yield database
    database.dispose()


@contextmanager
def held_elsewhere(db: Database, what: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write turn (in a transaction) or the first claim."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db.url, what], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        proc.wait(timeout=30)


def write_in_thread(db: Database, who: str, *, priority: bool = False) -> threading.Thread:
    def write() -> None:
        with db.write(priority=priority) as session:
            session.execute(text("INSERT INTO t (who) VALUES (:who)"), {"who": who})

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def rows(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(text("SELECT who FROM t ORDER BY rowid")))


def let_go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


def test_a_writer_waits_for_another_processs_transaction_instead_of_failing(db: Database) -> None:
    # Longer than the 10 s busy timeout would allow if the writer waited in SQLite instead.
    with held_elsewhere(db, "turn") as proc:
        writer = write_in_thread(db, "here")
        writer.join(timeout=1.0)
        assert writer.is_alive()  # waiting for the turn
        let_go(proc)
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert rows(db) == ["other", "here"]


def test_another_processs_first_claim_holds_ordinary_writers_back_but_not_priority_ones(db: Database) -> None:
    with held_elsewhere(db, "first") as proc:
        ordinary = write_in_thread(db, "ordinary")
        ordinary.join(timeout=1.0)
        assert ordinary.is_alive()  # held back by the claim
        priority = write_in_thread(db, "priority", priority=True)
        priority.join(timeout=30)
        assert not priority.is_alive()
        assert rows(db) == ["priority"]
        let_go(proc)
        ordinary.join(timeout=30)
    assert rows(db) == ["priority", "ordinary"]


def test_the_claiming_processs_own_threads_write_and_its_claim_still_holds_others_back(db: Database) -> None:
    claimed, release = threading.Event(), threading.Event()

    def claim() -> None:
        with db.write_first():
            claimed.set()
            release.wait(30)

    claimer = threading.Thread(target=claim, daemon=True)
    claimer.start()
    assert claimed.wait(30)
    try:
        own = write_in_thread(db, "own thread")
        own.join(timeout=30)
        assert not own.is_alive()  # not held back by its own process's claim
        # ... which another process's ordinary writer still waits for.
        other = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\nfrom sqlalchemy import text\nfrom heron.db.engine import Database\n"
                "with Database(sys.argv[1]).write() as s:\n"
                "    s.execute(text(\"INSERT INTO t (who) VALUES ('other')\"))",
                db.url,
            ]
        )
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=1.5)
    finally:
        release.set()
        claimer.join(timeout=30)
    assert other.wait(timeout=30) == 0
    assert rows(db) == ["own thread", "other"]
