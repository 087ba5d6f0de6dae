"""Sign-in and sign-out. Session cookie: HttpOnly, SameSite=Lax, Secure behind TLS; every form
post carries a CSRF token; failed sign-ins are throttled per account and per address."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from heron.api.context import SESSION_COOKIE, Ctx
from heron.tenancy.auth import (
    LoginLocked,
    create_session,
    end_session,
    load_session,
    sign_in,
    sign_token,
    unsign_token,
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "heron_csrf"


def _secure(request: Request, public_url: str | None) -> bool:
    return request.url.scheme == "https" or bool(public_url and public_url.startswith("https://"))


def _login_page(
    request: Request, ctx_secret: bytes, error: str | None, status: int = 200, public_url: str | None = None
) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html", {"csrf_token": token, "error": error}, status_code=status
    )
    response.set_cookie(
        CSRF_COOKIE,
        sign_token(ctx_secret, token),
        httponly=True,
        samesite="strict",
        secure=_secure(request, public_url),
        path="/",
    )
    return response


@router.get("/login")
def login_form(request: Request, ctx: Ctx) -> Response:
    return _login_page(request, ctx.session_secret, None, public_url=ctx.settings.public_url)


@router.post("/login")
def login(
    request: Request,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=250)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=100)],
) -> Response:
    cookie = unsign_token(ctx.session_secret, request.cookies.get(CSRF_COOKIE, ""))
    if cookie is None or not hmac.compare_digest(cookie, csrf_token):
        return _login_page(
            request, ctx.session_secret, "Your form expired; please try again.", 403, ctx.settings.public_url
        )
    address = request.client.host if request.client else "unknown"
    s = ctx.settings
    try:
        with ctx.db.write() as session:
            user = sign_in(session, email, password, address, s.login_max_failures, s.login_lockout_seconds)
            if user is not None:
                sid, _csrf = create_session(session, user, s.session_max_age_seconds)
    except LoginLocked as exc:
        response = _login_page(
            request, ctx.session_secret, "Too many failed sign-ins; try again later.", 429, s.public_url
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if user is None:
        return _login_page(request, ctx.session_secret, "Wrong email or password.", 401, s.public_url)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sign_token(ctx.session_secret, sid),
        httponly=True,
        samesite="lax",
        secure=_secure(request, s.public_url),
        max_age=s.session_max_age_seconds,
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, ctx: Ctx, csrf_token: Annotated[str, Form(max_length=100)]) -> Response:
    sid = unsign_token(ctx.session_secret, request.cookies.get(SESSION_COOKIE, ""))
    if sid:
        with ctx.db.write() as session:
            signed_in = load_session(session, sid)
            if signed_in is None or not hmac.compare_digest(signed_in.csrf_token, csrf_token):
                return HTMLResponse("Invalid or expired form.", status_code=403)
            end_session(session, sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(request: Request, ctx: Ctx) -> Response:
    sid = unsign_token(ctx.session_secret, request.cookies.get(SESSION_COOKIE, ""))
    signed_in = None
    if sid:
        with ctx.db.read() as session:
            signed_in = load_session(session, sid)
    if signed_in is None:
        return RedirectResponse("/login", status_code=303)
    return templates.TemplateResponse(
        request, "home.html", {"user": signed_in.user, "csrf_token": signed_in.csrf_token}
    )
