"""Shared fixtures. Database tests run twice, on SQLite and on a throwaway PostgreSQL cluster,
with the same test ids but for the `[sqlite]` / `[postgresql]` suffix."""

from __future__ import annotations

import base64
import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from heron.api.app import create_app
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db import migrate
from heron.db.engine import Database
from heron.runtime.context import AppContext, build_context
from heron.tenancy import api_users, groups, users
from heron.tenancy.access import SYSTEM, Actor
from heron.tenancy.models import User
from tests.support.postgres import Cluster, start_cluster

REQUIRE_ALL = os.environ.get("HERON_REQUIRE_ALL") == "1"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery"
TEST_KEK = base64.b64encode(bytes(range(32))).decode()
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | None]:
    try:
        cluster = start_cluster()
    except FileNotFoundError:
        if REQUIRE_ALL:
            raise
        yield None
        return
    template = cluster.url("heron_template")
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE heron_template"))
    db = Database(template)
    migrate.upgrade(db)
    db.dispose()
    admin.dispose()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "heron.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@contextmanager
def fresh_database(
    request: pytest.FixtureRequest, backend: str, directory: Path, sqlite_template: Path
) -> Iterator[str]:
    """A fresh, migrated database ("sqlite" or "postgresql", copied from the session's template),
    dropped afterwards; skips when the PostgreSQL binaries are not installed."""
    if backend == "sqlite":
        target = directory / "heron.db"
        shutil.copy(sqlite_template, target)
        yield f"sqlite:///{target}"
        return
    cluster: Cluster | None = request.getfixturevalue("pg_cluster")
    if cluster is None:
        pytest.skip("PostgreSQL binaries not installed (HERON_REQUIRE_ALL=1 makes this a failure)")
    name = f"t{os.getpid()}_{next(_counter)}"
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE heron_template'))
    try:
        yield cluster.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with fresh_database(request, request.param, tmp_path, sqlite_template) as url:
        yield url


def make_settings(directory: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=directory / "var",
        database_url=database_url,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        kek=TEST_KEK,  # type: ignore[arg-type]
        access_log=False,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = build_context(settings, prepare(settings, announce_password=False))
    yield context
    context.db.dispose()


@pytest.fixture
def db(ctx: AppContext) -> Database:
    return ctx.db


def null_member(value: Any, where: str = "$") -> str | None:
    """Where `value` holds an object member whose value is null (a null list item is a value)."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = f"{where}.{key}" if item is None else null_member(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := null_member(item, f"{where}[{i}]")) is not None:
                return found
    return None


def check_native_answer(response: httpx.Response) -> None:
    """The native API never sends null (api/v2/render.py): every answer of every test is checked."""
    if not response.request.url.path.startswith("/api/v2/"):
        return
    if not response.headers.get("content-type", "").startswith("application/json"):
        return
    response.read()
    found = null_member(response.json())
    assert found is None, f"{response.request.method} {response.request.url.path} answered null at {found}"


@pytest.fixture
def client(settings: Settings, ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(settings, ctx)) as c:
        c.event_hooks["response"].append(check_native_answer)
        yield c


@dataclass
class Credential:
    id: str
    secret: str
    group_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": self.secret}

    @property
    def basic(self) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()}


@dataclass
class Tenants:
    """A small tree: root > operator > {customer_a > site_a, customer_b}, with credentials."""

    root: int
    operator: int
    customer_a: int
    site_a: int
    customer_b: int
    root_admin: Credential
    a_admin: Credential
    a_reader: Credential
    b_admin: Credential


def make_credential(db: Database, group_id: int, *profiles: str) -> Credential:
    with db.write() as session:
        view, secret = api_users.create(
            session, SYSTEM, group_id=group_id, name="-".join(profiles), timezone="UTC", profile_ids=list(profiles)
        )
        return Credential(str(view.api_user.id), secret, group_id)


def make_user(
    session: Session, email: str, *roles: tuple[int, str], actor: Actor = SYSTEM, first_name: str = "Test"
) -> User:
    """A user holding each (group id, profile id) role, created as `actor` would."""
    return users.create(
        session,
        actor,
        email=email,
        first_name=first_name,
        last_name="User",
        roles=[users.RoleGrant(group_id, (profile,)) for group_id, profile in roles],
    )


@pytest.fixture
def tenants(db: Database) -> Tenants:
    return make_tenants(db)


def make_tenants(db: Database) -> Tenants:
    with db.write() as session:
        root = groups.get_root(session)
        assert root is not None
        op = groups.create(session, SYSTEM, parent_id=root.id, name="Operator", type_=0)
        a = groups.create(session, SYSTEM, parent_id=op.id, name="Customer A", type_=8)
        site = groups.create(session, SYSTEM, parent_id=a.id, name="Site A1", type_=2)
        b = groups.create(session, SYSTEM, parent_id=op.id, name="Customer B", type_=8)
        ids = (root.id, op.id, a.id, site.id, b.id)
    return Tenants(
        *ids,
        root_admin=make_credential(db, ids[0], "ADMIN", "NETWORK_OPERATOR"),  # the operator
        a_admin=make_credential(db, ids[2], "ADMIN"),
        a_reader=make_credential(db, ids[2], "OBSERVER"),
        b_admin=make_credential(db, ids[4], "ADMIN"),
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many tests passed on each database, so CI shows the two runs are equal."""
    counts: dict[str, dict[str, int]] = {"sqlite": {}, "postgresql": {}}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            for backend in counts:
                if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
                    counts[backend][outcome] = counts[backend].get(outcome, 0) + 1
    terminalreporter.write_line("")
    for backend, c in counts.items():
        summary = ", ".join(f"{n} {o}" for o, n in sorted(c.items())) or "none"
        terminalreporter.write_line(f"database {backend}: {summary}")
