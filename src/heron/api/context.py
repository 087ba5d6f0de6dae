"""What the app holds for its whole life, and the request dependencies built on it."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from heron.errors import NotAuthenticated
from heron.runtime.context import AppContext
from heron.tenancy.access import Actor
from heron.tenancy.auth import load_session, unsign_token

SESSION_COOKIE = "heron_session"


async def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


# Handlers and dependencies are `async def` and call the synchronous data layer inline: a short
# indexed query costs less than the hop to a worker thread (see docs/ARCHITECTURE.md). Work that
# takes long (bulk jobs, exports, password hashing) runs in threads or the job engine instead.


def parse_authorization(header: str) -> tuple[str | None, str] | None:
    """(login, secret) from `Basic <b64(login:secret)>`, or (None, key) from a bare API key."""
    header = header.strip()
    if header[:6].lower() == "basic ":
        try:
            login, sep, secret = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (login, secret) if sep else None
    return (None, header) if header and " " not in header else None


def authenticate(request: Request, ctx: AppContext) -> Actor | None:
    header = request.headers.get("authorization")
    if header:
        parsed = parse_authorization(header)
        if parsed is None:
            return None
        actor = ctx.authenticator.authenticate_secret(parsed[1], parsed[0])
        if actor is not None:
            ctx.rate_limiter.check(actor.ref, ctx.settings.rate_limit_per_second, ctx.settings.rate_limit_burst)
        return actor
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method in ("GET", "HEAD"):
        # GUI pages may read the API with their session; writes need an API credential or a form with CSRF.
        sid = unsign_token(ctx.session_secret, cookie)
        if sid:
            with ctx.db.read() as session:
                signed_in = load_session(session, sid)
            return signed_in.actor if signed_in else None
    return None


async def require_actor(request: Request) -> Actor:
    ctx: AppContext = request.app.state.ctx
    actor = authenticate(request, ctx)
    if actor is None:
        raise NotAuthenticated("authentication required")
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor, Depends(require_actor)]
Ctx = Annotated[AppContext, Depends(get_ctx)]


def base_url(request: Request, ctx: AppContext) -> str:
    """The base of absolute URLs Heron writes: HERON_PUBLIC_URL, else the request's own."""
    if ctx.settings.public_url:
        return ctx.settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")
