"""Opaque, tamper-evident list positions (the Sigfox v2 `pageId`): base64url JSON and an HMAC
over it under the session secret, bound to the list it came from. A token that does not verify
is a 400 naming the field, never a position the server did not hand out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from heron.errors import InvalidInput

MAX_TOKEN = 2000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, scope: str, body: str) -> bytes:
    return hmac.new(secret, f"heron.cursor\0{scope}\0{body}".encode(), hashlib.sha256).digest()[:16]


def sign(payload: Any, secret: bytes, scope: str) -> str:
    """`scope` names the list (route and sort order): a token is refused anywhere else."""
    body = _b64(orjson.dumps(payload))
    return f"{body}.{_b64(_mac(secret, scope, body))}"


def unsign(token: str, secret: bytes, scope: str, field: str = "pageId") -> Any:
    bad = InvalidInput.field(field, "is not a page token of this list (start again without it)", "query")
    body, dot, mac = token.partition(".")
    if not dot or len(token) > MAX_TOKEN or not token.isascii():
        raise bad
    try:
        given = _unb64(mac)
        if not hmac.compare_digest(given, _mac(secret, scope, body)):
            raise bad
        return orjson.loads(_unb64(body))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
