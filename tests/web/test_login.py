"""GUI sign-in and sign-out: CSRF on every form, session cookies, throttled failures."""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.api.app import create_app
from heron.api.ratelimit import RateLimiter
from heron.db.engine import Database
from heron.runtime.context import AppContext
from heron.tenancy.models import User, WebSession
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Tenants

WRONG = "not the password at all"


def _app_with(ctx: AppContext, **updates: Any) -> FastAPI:
    """The same database and keys, with some settings changed (the context carries the settings)."""
    settings = ctx.settings.model_copy(update=updates)
    return create_app(settings, dataclasses.replace(ctx, settings=settings, rate_limiter=RateLimiter()))


def _csrf(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', page.text)
    assert match is not None, page.text
    return match.group(1)


def _post_login(client: TestClient, email: str, password: str, csrf: str | None = None) -> Any:
    token = _csrf(client) if csrf is None else csrf
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}, follow_redirects=False
    )


def _set_cookies(response: Any, name: str) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]


def _attrs(cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


def _session_count(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(WebSession)) or 0)


def _from(client: TestClient, address: str) -> TestClient:
    """Another browser, on another address, talking to the same app."""
    return TestClient(client.app, client=(address, 40000))


# -- the form -------------------------------------------------------------------------------------


def test_login_page_sets_csrf_cookie_and_hidden_field(client: TestClient) -> None:
    r = client.get("/login")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    token = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert token is not None and len(token.group(1)) >= 20
    cookies = _set_cookies(r, "heron_csrf")
    assert len(cookies) == 1
    assert {"httponly", "samesite", "path"} <= _attrs(cookies[0])
    # The cookie is bound to the field (signed), not a copy anyone could forge.
    assert client.cookies["heron_csrf"] != token.group(1)


def test_each_form_gets_a_fresh_token(client: TestClient) -> None:
    assert _csrf(client) != _csrf(client)


# -- signing in -----------------------------------------------------------------------------------


def test_right_password_sets_session_cookie_and_redirects_home(client: TestClient, db: Database) -> None:
    r = _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    cookies = _set_cookies(r, "heron_session")
    assert len(cookies) == 1
    attrs = _attrs(cookies[0])
    assert "httponly" in attrs
    assert "samesite=lax" in cookies[0].lower()
    assert "secure" not in attrs  # plain http, no https public URL
    assert _session_count(db) == 1
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 200
    assert "Welcome, Heron" in home.text
    with db.read() as s:
        assert s.scalar(select(User.last_login_at).where(User.email == ADMIN_EMAIL)) is not None


def test_email_is_case_insensitive(client: TestClient) -> None:
    assert _post_login(client, ADMIN_EMAIL.upper(), ADMIN_PASSWORD).status_code == 303


def test_session_cookie_is_secure_when_public_url_is_https(ctx: AppContext) -> None:
    web = TestClient(_app_with(ctx, public_url="https://heron.example.com"))
    page = web.get("/login")
    assert "secure" in _attrs(_set_cookies(page, "heron_csrf")[0])  # behind a TLS proxy, the form too
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    web.cookies.set("heron_csrf", page.cookies["heron_csrf"])  # the test transport is plain http
    r = _post_login(web, ADMIN_EMAIL, ADMIN_PASSWORD, csrf=token.group(1))
    assert r.status_code == 303
    cookie = _set_cookies(r, "heron_session")[0]
    assert {"secure", "httponly"} <= _attrs(cookie)
    assert "samesite=lax" in cookie.lower()


def test_session_cookie_is_secure_over_https(ctx: AppContext) -> None:
    web = TestClient(_app_with(ctx), base_url="https://testserver")
    r = _post_login(web, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 303
    assert "secure" in _attrs(_set_cookies(r, "heron_session")[0])


def test_wrong_csrf_token_is_refused_without_a_session(client: TestClient, db: Database) -> None:
    _csrf(client)
    r = _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD, csrf="forged-token-value")
    assert r.status_code == 403
    assert _set_cookies(r, "heron_session") == []
    assert _session_count(db) == 0
    # A token from another browser's form does not fit this browser's cookie either.
    other = TestClient(client.app)
    stolen = _csrf(other)
    r = _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD, csrf=stolen)
    assert r.status_code == 403
    assert _session_count(db) == 0


def test_missing_csrf_cookie_is_refused(client: TestClient, db: Database) -> None:
    token = _csrf(client)
    client.cookies.clear()
    r = _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD, csrf=token)
    assert r.status_code == 403
    assert _session_count(db) == 0


def test_wrong_password_and_unknown_email_answer_the_same_401(client: TestClient, db: Database) -> None:
    wrong = _post_login(client, ADMIN_EMAIL, WRONG)
    unknown = _post_login(client, "nobody@example.com", WRONG)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password." in wrong.text and "Wrong email or password." in unknown.text
    assert _set_cookies(wrong, "heron_session") == []
    assert _session_count(db) == 0
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_tampered_session_cookie_is_not_accepted(client: TestClient) -> None:
    assert _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    value = client.cookies["heron_session"]
    client.cookies.set("heron_session", value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/api/v2/groups").status_code == 401


def test_session_reads_the_api_with_the_users_rights(client: TestClient) -> None:
    assert _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    assert client.get("/api/v2/groups").status_code == 200
    # Writes need an API credential: a cookie alone cannot be used by a cross-site form.
    r = client.post(
        "/api/v2/groups", json={"name": "Via cookie", "description": "", "type": 2, "timezone": "UTC", "parentId": "1"}
    )
    assert r.status_code == 401


# -- throttling -----------------------------------------------------------------------------------


def test_account_locks_after_max_failures_even_with_the_right_password(client: TestClient, ctx: AppContext) -> None:
    limit = ctx.settings.login_max_failures
    # One failure from each of several addresses: only the account key reaches the limit.
    for i in range(limit):
        r = _post_login(_from(client, f"192.0.2.{i + 1}"), ADMIN_EMAIL, WRONG)
        assert r.status_code == 401, (i, r.status_code)
    r = _post_login(_from(client, "198.51.100.7"), ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429
    assert _set_cookies(r, "heron_session") == []
    retry = int(r.headers["retry-after"])
    assert 0 < retry <= ctx.settings.login_lockout_seconds + 1


def test_fewer_failures_than_the_limit_do_not_lock(client: TestClient, ctx: AppContext) -> None:
    for _ in range(ctx.settings.login_max_failures - 1):
        assert _post_login(client, ADMIN_EMAIL, WRONG).status_code == 401
    assert _post_login(_from(client, "198.51.100.8"), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def test_lockout_honours_the_configured_limit(ctx: AppContext) -> None:
    app = _app_with(ctx, login_max_failures=2, login_lockout_seconds=60)
    first, second, third = (TestClient(app, client=(f"203.0.113.{i}", 1)) for i in (1, 2, 3))
    assert _post_login(first, ADMIN_EMAIL, WRONG).status_code == 401
    assert _post_login(second, ADMIN_EMAIL, WRONG).status_code == 401
    r = _post_login(third, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429
    assert 0 < int(r.headers["retry-after"]) <= 61


def test_failures_from_one_address_lock_that_address_across_accounts(client: TestClient, ctx: AppContext) -> None:
    attacker = _from(client, "192.0.2.66")
    for i in range(ctx.settings.login_max_failures):
        assert _post_login(attacker, f"victim{i}@example.com", WRONG).status_code == 401
    r = _post_login(attacker, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    # The account itself is not locked: from another address the right password works.
    assert _post_login(_from(client, "198.51.100.9"), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def _guess_in_parallel(app: FastAPI, first_address: int, count: int) -> list[int]:
    browsers = [
        TestClient(app, client=(f"10.9.0.{first_address + i}", 1), raise_server_exceptions=False) for i in range(count)
    ]
    tokens = [_csrf(b) for b in browsers]
    start = threading.Barrier(count)
    statuses: list[int] = []

    def guess(i: int) -> None:
        start.wait()
        statuses.append(_post_login(browsers[i], ADMIN_EMAIL, WRONG, csrf=tokens[i]).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return statuses


def test_parallel_first_failures_all_count_towards_the_lockout(ctx: AppContext) -> None:
    """Guessing in parallel on an account with no failures yet must neither fail nor slip past the counter."""
    parallel = 8
    app = _app_with(ctx, login_max_failures=parallel, login_lockout_seconds=600)
    assert _guess_in_parallel(app, 1, parallel) == [401] * parallel
    r = _post_login(TestClient(app, client=("10.9.1.1", 1)), ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429


def test_parallel_later_failures_all_count_towards_the_lockout(ctx: AppContext) -> None:
    """Concurrent failures on an account that already has some must not overwrite each other's counts."""
    parallel = 8
    app = _app_with(ctx, login_max_failures=parallel + 1, login_lockout_seconds=600)
    assert _post_login(TestClient(app, client=("10.9.2.1", 1)), ADMIN_EMAIL, WRONG).status_code == 401
    assert _guess_in_parallel(app, 11, parallel) == [401] * parallel
    r = _post_login(TestClient(app, client=("10.9.1.1", 1)), ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429


def test_disabled_user_cannot_sign_in(client: TestClient, tenants: Tenants) -> None:
    r = client.post(
        "/api/v2/users",
        json={
            "firstName": "Dis",
            "lastName": "Abled",
            "email": "disabled@example.com",
            "password": "a long enough password",
            "userRoles": [{"groupId": str(tenants.customer_a), "profileIds": ["OBSERVER"]}],
        },
        headers=tenants.a_admin.headers,
    )
    assert r.status_code == 201
    uid = r.json()["id"]
    browser = TestClient(client.app)
    assert _post_login(browser, "disabled@example.com", "a long enough password").status_code == 303
    r = client.put(f"/api/v2/users/{uid}", json={"locked": True}, headers=tenants.a_admin.headers)
    assert r.status_code == 204
    assert browser.get("/", follow_redirects=False).status_code == 303  # the open session ends too
    r = _post_login(TestClient(client.app), "disabled@example.com", "a long enough password")
    assert r.status_code == 401
    assert _set_cookies(r, "heron_session") == []


# -- signing out ----------------------------------------------------------------------------------


def _home_csrf(client: TestClient) -> str:
    home = client.get("/")
    assert home.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert match is not None
    return match.group(1)


def test_logout_needs_the_csrf_token(client: TestClient, db: Database) -> None:
    assert _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    r = client.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/logout", data={}, follow_redirects=False)
    assert r.status_code in (400, 403)
    assert _session_count(db) == 1
    assert client.get("/", follow_redirects=False).status_code == 200


def test_logout_ends_the_session_server_side(client: TestClient, db: Database) -> None:
    assert _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    old_cookie = client.cookies["heron_session"]
    r = client.post("/logout", data={"csrf_token": _home_csrf(client)}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert _session_count(db) == 0
    # Replaying the old cookie (as a thief who copied it would) no longer works.
    replay = TestClient(client.app)
    replay.cookies.set("heron_session", old_cookie)
    assert replay.get("/", follow_redirects=False).headers["location"] == "/login"
    assert replay.get("/api/v2/groups").status_code == 401
    assert replay.post("/logout", data={"csrf_token": "x"}, follow_redirects=False).status_code in (303, 403)


def test_sessions_are_independent(client: TestClient, db: Database) -> None:
    other = TestClient(client.app)
    assert _post_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    assert _post_login(other, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
    assert _session_count(db) == 2
    assert client.post("/logout", data={"csrf_token": _home_csrf(client)}, follow_redirects=False).status_code == 303
    assert other.get("/", follow_redirects=False).status_code == 200
    # One session's form token does not sign another session out.
    assert other.post("/logout", data={"csrf_token": "nope"}, follow_redirects=False).status_code == 403
