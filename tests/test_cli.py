"""The real `heron` CLI, run as a subprocess on the test database (SQLite and PostgreSQL), and what it
creates checked through the API and the sign-in page of an app on the same database."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.config import Settings
from heron.db.engine import Database
from heron.runtime.context import AppContext
from heron.tenancy.models import ApiUser, AuditEvent, Group, User
from tests.conftest import TEST_KEK, Tenants

CLI_TIMEOUT = 60
HERON = Path(sys.executable).with_name("heron")
PASSWORD_BANNER = "password (shown once):"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _command() -> list[str]:
    return [str(HERON)] if HERON.exists() else [sys.executable, "-m", "heron.cli"]


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    """`heron ARGS...` on the test database, with the same data directory and KEK as `settings`
    and nothing else from the caller's HERON_* environment."""

    def run(*args: str, stdin: str | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
        env.update(
            HERON_DATABASE_URL=database_url,
            HERON_DATA_DIR=str(tmp_path / "var"),
            HERON_KEK=TEST_KEK,
            HERON_LOG_LEVEL="WARNING",
        )
        env.update(extra_env)
        return subprocess.run(
            [*_command(), *args],
            input=stdin,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    return run


def _count(db: Database, model: type[ApiUser] | type[AuditEvent] | type[User] | type[Group]) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _sign_in(client: TestClient, email: str, password: str) -> int:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, form.text
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    return response.status_code


def test_api_access_create_json_credential_works_as_basic_and_as_bare_authorization(
    cli: Cli, client: TestClient, ctx: AppContext
) -> None:
    result = cli("api-access", "create", "--group", "root", "--profile", "ADMIN", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert {"login", "secret", "authorization"} <= created.keys()
    assert created["login"].isdigit()

    basic = "Basic " + base64.b64encode(f"{created['login']}:{created['secret']}".encode()).decode()
    for header in (basic, created["authorization"]):
        response = client.get("/api/v2/groups", headers={"authorization": header})
        assert response.status_code == 200, response.text
        assert [g["name"] for g in response.json()["data"]] == ["Root"]

    me = client.get(f"/api/v2/api-users/{created['login']}", headers={"authorization": basic})
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "CLI API access"

    wrong = "Basic " + base64.b64encode(f"{created['login']}:not-the-secret".encode()).decode()
    assert client.get("/api/v2/groups", headers={"authorization": wrong}).status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", "root", "--profile", "NO_SUCH_PROFILE"], "unknown profile 'NO_SUCH_PROFILE'"),
        (["--group", "987654321", "--profile", "ADMIN"], "group not found"),
        (["--group", "not-a-group", "--profile", "ADMIN"], "not a valid id"),
    ],
    ids=["bad-profile", "unknown-group", "malformed-group"],
)
def test_api_access_create_with_bad_profile_or_group_fails_clearly_and_creates_nothing(
    cli: Cli, ctx: AppContext, args: list[str], message: str
) -> None:
    before = _count(ctx.db, ApiUser), _count(ctx.db, AuditEvent)
    result = cli("api-access", "create", *args, "--json")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "error:" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (_count(ctx.db, ApiUser), _count(ctx.db, AuditEvent)) == before


def test_users_create_makes_a_user_who_can_sign_in(cli: Cli, client: TestClient, ctx: AppContext) -> None:
    result = cli(
        "users",
        "create",
        "--email",
        "Operator@Example.com",
        "--first-name",
        "Olive",
        "--last-name",
        "Operator",
        "--profile",
        "OBSERVER",
        "--password",
        "a long operator password",
    )
    assert result.returncode == 0, result.stderr
    user_id = int(result.stdout.strip())
    with ctx.db.read() as session:
        user = session.get(User, user_id)
        assert user is not None
        assert user.email == "operator@example.com"

    assert _sign_in(client, "operator@example.com", "wrong password") == 401
    assert _sign_in(client, "operator@example.com", "a long operator password") == 303
    home = client.get("/")
    assert home.status_code == 200
    assert "Olive" in home.text or "operator@example.com" in home.text


def test_users_create_reads_the_password_from_stdin_with_dash(cli: Cli, client: TestClient) -> None:
    result = cli(
        "users",
        "create",
        "--email",
        "piped@example.com",
        "--first-name",
        "Pip",
        "--last-name",
        "Ed",
        "--password",
        "-",
        stdin="piped password 123\n",
    )
    assert result.returncode == 0, result.stderr
    assert _sign_in(client, "piped@example.com", "piped password 123") == 303


def test_users_create_with_taken_email_fails_and_creates_nothing(cli: Cli, ctx: AppContext) -> None:
    before = _count(ctx.db, User)
    result = cli("users", "create", "--email", "admin@example.com", "--first-name", "A", "--last-name", "B")
    assert result.returncode != 0
    assert "already exists" in result.stderr
    assert _count(ctx.db, User) == before


def test_groups_list_json_lists_the_whole_tree_parents_first(cli: Cli, tenants: Tenants) -> None:
    result = cli("groups", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    ids = [int(g["id"]) for g in listed]
    assert sorted(ids) == sorted(
        [tenants.root, tenants.operator, tenants.customer_a, tenants.site_a, tenants.customer_b]
    )
    by_id = {int(g["id"]): g for g in listed}
    assert by_id[tenants.root]["level"] == 0
    assert by_id[tenants.operator]["level"] == 1
    assert by_id[tenants.customer_a]["level"] == by_id[tenants.customer_b]["level"] == 2
    assert by_id[tenants.site_a]["level"] == 3
    assert by_id[tenants.site_a]["name"] == "Site A1"
    for position, group in enumerate(listed):
        # tree order: every group comes after its parent, and each subtree is contiguous
        ancestors = [int(x) for x in group["path"].strip("/").split("/")[:-1]]
        assert all(ids.index(a) < position for a in ancestors)
    subtree = [g for g in listed if g["path"].startswith(by_id[tenants.customer_a]["path"])]
    start = ids.index(tenants.customer_a)
    assert listed[start : start + len(subtree)] == subtree

    below = cli("groups", "list", "--json", "--parent", str(tenants.operator))
    assert below.returncode == 0, below.stderr
    assert sorted(int(g["id"]) for g in json.loads(below.stdout)) == sorted(
        [tenants.customer_a, tenants.site_a, tenants.customer_b]
    )


def test_first_cli_command_on_an_empty_database_shows_the_generated_admin_password(
    cli: Cli, request: pytest.FixtureRequest
) -> None:
    # No `ctx`: the database is migrated but holds no user, and no HERON_ADMIN_PASSWORD is set.
    result = cli("groups", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [g["name"] for g in json.loads(result.stdout)] == ["Root"]  # stdout stays pure JSON
    banner = re.search(r"administrator created: (\S+)\s+password \(shown once\): (\S+)", result.stderr)
    assert banner is not None, "the administrator was created with a password nobody was shown"
    email, password = banner.groups()

    again = cli("groups", "list", "--json")
    assert again.returncode == 0, again.stderr
    assert PASSWORD_BANNER not in again.stderr + again.stdout

    settings: Settings = request.getfixturevalue("settings")
    assert email != settings.admin_email  # the fixture's admin was not the one created
    client: TestClient = request.getfixturevalue("client")
    assert _sign_in(client, email, password) == 303
