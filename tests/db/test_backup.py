"""`heron db backup FILE` while the database is being written: the copy is consistent and
restorable (SQLite: the online backup API; PostgreSQL: pg_dump custom format, pg_restore'd into a
new database of the throwaway cluster)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from heron.db import migrate
from heron.db.engine import Database
from heron.runtime.context import AppContext
from heron.tenancy import groups
from heron.tenancy.access import SYSTEM
from heron.tenancy.auth import Authenticator
from tests.conftest import TEST_KEK, Tenants
from tests.support.postgres import Cluster

CLI_TIMEOUT = 120
HERON = Path(sys.executable).with_name("heron")
NOTE = "x" * 500  # rows big enough that the copy spans many pages


def _heron(
    *args: str, database_url: str, cwd: Path, path_prefix: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env.update(HERON_DATABASE_URL=database_url, HERON_DATA_DIR=str(cwd / "var"), HERON_KEK=TEST_KEK)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    command = [str(HERON)] if HERON.exists() else [sys.executable, "-m", "heron.cli"]
    return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT)


@dataclass
class Writer:
    """Inserts probe rows 1, 2, 3... one transaction each, until stopped."""

    db: Database
    committed: int = 0
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self.db.write() as session:
                    session.execute(
                        text("INSERT INTO backup_probe (id, note) VALUES (:i, :n)"),
                        {"i": self.committed + 1, "n": NOTE},
                    )
                self.committed += 1
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="backup-probe-writer", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the writer did not stop"

    def stop(self) -> int:
        """Stop, re-raise the writer's error if any, and return how many rows it committed."""
        self.halt()
        if self.error is not None:
            raise self.error
        return self.committed


@pytest.fixture
def writer(db: Database, tenants: Tenants) -> Iterator[Writer]:
    with db.write() as session:
        session.execute(text("CREATE TABLE backup_probe (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"))
    w = Writer(db)
    # A head start: some rows committed before the backup begins.
    with db.write() as session:
        session.execute(
            text("INSERT INTO backup_probe (id, note) VALUES (:i, :n)"), [{"i": i, "n": NOTE} for i in range(1, 1001)]
        )
    w.committed = 1000
    w.start()
    try:
        yield w
    finally:
        w.halt()


def _snapshot_checks(rows: list[tuple[int, str]], before: int, after: int) -> None:
    """A consistent snapshot of a sequence of one-row commits is exactly ids 1..n."""
    ids = [r[0] for r in rows]
    n = len(ids)
    assert ids == list(range(1, n + 1)), "the copy holds a torn set of rows"
    assert before <= n <= after
    assert all(r[1] == NOTE for r in rows)


@contextmanager
def _restored(database_url: str, target: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """The backup brought back as a database of its own: the SQLite copy opened as it is (after an
    integrity check), the PostgreSQL dump pg_restore'd into a new database of the cluster."""
    if database_url.startswith("sqlite"):
        copy = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            copy.close()
        db = Database(f"sqlite:///{target}")
        try:
            yield db
        finally:
            db.dispose()
        return
    assert target.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    name = f"restored_{make_url(database_url).database}"
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    db = Database(cluster.url(name))
    try:
        restore = subprocess.run(
            [
                str(cluster.bin_dir / "pg_restore"),
                "--no-owner",
                "--exit-on-error",
                "--host=127.0.0.1",
                f"--port={cluster.port}",
                "--username=heron",
                f"--dbname={name}",
                str(target),
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert restore.returncode == 0, restore.stderr
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_online_backup_while_writing_restores_to_a_consistent_working_database(
    database_url: str,
    ctx: AppContext,
    tenants: Tenants,
    writer: Writer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # PostgreSQL: the cluster's own client tools first on PATH, so pg_dump matches the server.
    bin_dir = request.getfixturevalue("pg_cluster").bin_dir if database_url.startswith("postgresql") else None
    before = writer.committed
    target = tmp_path / "backups" / "heron.backup"
    result = _heron("db", "backup", str(target), database_url=database_url, cwd=tmp_path, path_prefix=bin_dir)
    during = writer.committed
    after = writer.stop()
    assert result.returncode == 0, result.stderr
    assert during > before, "the writer made no progress while the backup ran: it was blocked"

    with _restored(database_url, target, request) as restored:
        with restored.engine.connect() as conn:
            rows = [(r[0], r[1]) for r in conn.execute(text("SELECT id, note FROM backup_probe ORDER BY id"))]
            _snapshot_checks(rows, before, after)
            with ctx.db.engine.connect() as source:
                query = text("SELECT id, parent_id, path, name FROM groups ORDER BY id")
                assert [tuple(r) for r in conn.execute(query)] == [tuple(r) for r in source.execute(query)]
            assert conn.execute(text("SELECT count(*) FROM api_users")).scalar_one() == 4
        assert migrate.current_revision(restored) == migrate.head_revision(restored)

        # A working Heron database: credentials authenticate, and new rows get fresh ids
        # (PostgreSQL: the sequences were restored too).
        actor = Authenticator(restored).authenticate_secret(tenants.a_admin.secret, tenants.a_admin.id)
        assert actor is not None and str(actor.id) == tenants.a_admin.id
        with restored.write() as session:
            new = groups.create(session, SYSTEM, parent_id=tenants.root, name="After restore", type_=0)
            assert new.id > max(tenants.root, tenants.operator, tenants.customer_a, tenants.site_a, tenants.customer_b)


def test_backup_of_a_missing_database_fails_clearly(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        missing = f"sqlite:///{tmp_path / 'nowhere' / 'heron.db'}"
        expected = "no SQLite database"
    else:
        missing = str(make_url(database_url).set(database="no_such_database").render_as_string(hide_password=False))
        expected = "no_such_database"
    target = tmp_path / "copy"
    result = _heron("db", "backup", str(target), database_url=missing, cwd=tmp_path)
    assert result.returncode != 0
    assert "error:" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "nowhere").exists(), "the backup created the database it was asked to copy"
