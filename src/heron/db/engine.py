"""Engine and session helpers. The data layer is synchronous SQLAlchemy 2 on both SQLite and
PostgreSQL (see docs/ARCHITECTURE.md for the measured cost that decided it)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from heron.runtime.background import BackgroundThread

log = logging.getLogger(__name__)


SQLITE_CACHE_KIB = 32 * 1024
SQLITE_AUTOCHECKPOINT_PAGES = 10_000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred and late).
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # A bulk job writes megabytes per batch: a bigger page cache keeps its index pages from
    # spilling mid-transaction, and the WAL is checkpointed by `WalCheckpointer` off the commit
    # path (the default inline checkpoint every 1,000 pages made a 5,000-row commit pay it).
    # The higher autocheckpoint stays as the backstop when no checkpointer runs.
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE) so that a read that later writes
    # never fails with SQLITE_BUSY on lock upgrade; readers stay deferred and never block.
    # Straight to the driver: this runs for every transaction, and SQLAlchemy's execution path
    # would cost more than the BEGIN itself.
    mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("heron_write") else "BEGIN"
    conn.connection.driver_connection.execute(mode)


class WalCheckpointer(BackgroundThread):
    """Copies a SQLite database's WAL back into the main file from a background thread (a
    PASSIVE checkpoint: it never waits for, nor blocks, readers or the writer). Without it the
    commit that crosses the autocheckpoint threshold does this work inline."""

    thread_name = "heron-wal-checkpoint"

    def __init__(self, path: str, every: float = 1.0) -> None:
        super().__init__()
        self.path, self.every = path, every

    def _loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.every):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.warning("db.wal_checkpoint_failed", exc_info=True)
        finally:
            conn.close()


class WriteTurn:
    """SQLite has one writer at a time: the writers of every process on one database file
    queue here, handed the turn as soon as it is free, rather than in SQLite's busy handler,
    which sleeps 1 to 100 ms between retries (measured: ingest p99 1.25 s -> 0.4 s). Within a
    process a re-entrant lock (so a nested write fails as it always did, on the busy timeout,
    instead of hanging); between processes (the API, the uplink writer, `heron worker`) an
    advisory lock on `<database>.write-turn`, on which the kernel wakes a waiter at once.

    The ingest's writer may hold a first claim, `<database>.write-first` (`first()`), while it
    is the bottleneck; other processes' writers wait while it is held, before they queue for
    the turn (so they never hold this process's lock while they wait). Holding and waiting use
    two descriptors of the file: a lock taken through one descriptor is converted, not waited
    for, by another request through the same one."""

    def __init__(self, lock_path: str | None) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # re-entry count of the thread holding _lock
        self._owner: int | None = None  # that thread
        self._path = lock_path
        self._fds: tuple[int, int, int] | None = None  # (turn, first: to claim, first: to wait)
        self._first_held = False  # by a thread of this process (`first()`)

    @contextmanager
    def taken(self, *, priority: bool = False) -> Iterator[None]:
        """The turn; `priority`: the caller holds `first()` (or does not wait for its holder)."""
        if self._path is None:
            with self._lock:
                yield
            return
        nested = self._owner == threading.get_ident()
        wait_first = not (priority or nested)
        while True:
            if wait_first and not self._first_held:  # another process's claim: wait it out
                self._wait_first(block=True)
            self._lock.acquire()
            # Checked again with this process's lock held: the writers of this process that
            # waited together must not all go while the claim is back (one turn per release).
            if not wait_first or self._first_held or self._wait_first(block=False):
                break
            self._lock.release()
        try:
            self._depth += 1
            self._owner = threading.get_ident()
            if self._depth > 1:
                yield
                return
            turn = self._files()[0]
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
            self._lock.release()

    def _wait_first(self, *, block: bool) -> bool:
        """Until no other process holds the first claim (`block`), or whether none does."""
        wait = self._files()[2]
        try:
            fcntl.flock(wait, fcntl.LOCK_SH if block else fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(wait, fcntl.LOCK_UN)
        return True

    @contextmanager
    def first(self) -> Iterator[None]:
        """The first claim on the turn, held across transactions: other processes' writers
        wait until it is let go. One thread of a process may hold it (the ingest's writer)."""
        if self._path is None:
            yield
            return
        fd = self._files()[1]
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._first_held = True
        try:
            yield
        finally:
            self._first_held = False
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _files(self) -> tuple[int, int, int]:
        with self._lock:
            if self._fds is None:
                flags = os.O_RDWR | os.O_CREAT
                turn = os.open(f"{self._path}.write-turn", flags, 0o600)
                claim = os.open(f"{self._path}.write-first", flags, 0o600)
                self._fds = (turn, claim, os.open(f"{self._path}.write-first", flags, 0o600))
            return self._fds

    def close(self) -> None:
        with self._lock:
            if self._fds is not None:
                for fd in self._fds:
                    os.close(fd)
                self._fds = None


class Database:
    """One engine per process, a read and a write session factory on it."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 48
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 30
            kwargs["pool_pre_ping"] = False
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        self._write_engine = self.engine.execution_options(heron_write=True)
        self._write_turn: WriteTurn | None = None
        if self.dialect == "sqlite":
            on_disk = parsed.database and parsed.database != ":memory:"
            self._write_turn = WriteTurn(parsed.database if on_disk else None)
        self._readers = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_conns: list[Any] = []
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    def wal_checkpointer(self) -> WalCheckpointer | None:
        """A background checkpointer for a SQLite database file (None for PostgreSQL and
        in-memory databases)."""
        database = make_url(self.url).database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return WalCheckpointer(database)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def write(self, *, priority: bool = False) -> Iterator[Session]:
        """A unit of work: committed when the block ends without error, else rolled back.
        `priority`: the caller holds `write_first()` (see `WriteTurn`)."""
        turn = self._write_turn.taken(priority=priority) if self._write_turn is not None else nullcontext()
        with turn, self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write_first(self) -> Iterator[None]:
        """On a SQLite file, a first claim on the write turn across transactions (`WriteTurn`)."""
        with self._write_turn.first() if self._write_turn is not None else nullcontext():
            yield

    def reader_connection(self) -> Any:
        """This thread's autocommit driver connection, kept outside the pool, for the fast path
        (heron.db.fastpath): each of its statements is one SELECT, its own snapshot, so nothing
        needs resetting between uses and no checkout is paid."""
        existing = getattr(self._readers, "conn", None)
        if existing is not None:
            return existing
        fairy = self.engine.raw_connection()
        conn: Any = fairy.dbapi_connection
        fairy.detach()  # this thread owns it from now on
        if self.is_sqlite:
            conn.isolation_level = None
        else:
            conn.autocommit = True
        self._readers.conn = conn
        with self._readers_lock:
            self._reader_conns.append(conn)
        return conn

    def dispose(self) -> None:
        with self._readers_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._readers = threading.local()
        self.engine.dispose()
        if self._write_turn is not None:
            self._write_turn.close()
