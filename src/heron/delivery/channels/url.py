"""The URL channel (one request per message) and the job callbacks (a POST of the job's final
status to the URL given with the job).

Requests go through the guarded HTTP request (SSRF rules), 10 s timeout. Each carries
`webhook-id` (the delivery's key, stable across retries) and `webhook-timestamp`, and
`webhook-signature` when the callback has a signing secret (Standard Webhooks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from heron.delivery import callbacks as callbacks_service
from heron.delivery.channels import Item, Result, compiled
from heron.delivery.http import send
from heron.delivery.models import Callback
from heron.delivery.ssrf import IPNetwork
from heron.keys import Keyring
from heron.registry.models import DeviceType

# The keyring purpose of a job's callback headers (sealed when the job is submitted; the outbox
# row keeps the same ciphertext and opens it only to send).
JOB_HEADERS_PURPOSE = "job.callback_headers"

# A text/plain body is UTF-8 and says so (as BATCH_URL's). JSON and form bodies stay as named:
# UTF-8 is their definition (RFC 8259, the URL standard's form encoding), which has no charset.
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_SENT_CONTENT_TYPES = {"text/plain": TEXT_CONTENT_TYPE}


@dataclass
class Outgoing:
    """A rendered request."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def base_headers(keyring: Keyring, cb: Callback, dt: DeviceType, values: dict[str, object]) -> dict[str, str]:
    """The callback's own headers rendered, and its URL credentials as HTTP Basic."""
    headers = {k: t.render(values) for k, t in compiled(keyring, cb, dt).headers.items()}
    credentials = callbacks_service.stored_credentials(keyring, cb)
    if credentials is not None and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return headers


def render(keyring: Keyring, cb: Callback, dt: DeviceType, values: dict[str, object]) -> Outgoing:
    """A URL callback's request for one message."""
    templates = compiled(keyring, cb, dt)
    assert templates.url is not None
    headers = base_headers(keyring, cb, dt, values)
    body = None
    if cb.http_method in ("POST", "PUT"):
        body = templates.body.render(values).encode() if templates.body is not None else b""
        content_type = cb.content_type or callbacks_service.DEFAULT_CONTENT_TYPE
        headers["Content-Type"] = _SENT_CONTENT_TYPES.get(content_type, content_type)
    return Outgoing(cb.http_method or "POST", templates.url.render(values), headers, body)


def sign(secret: str, key: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret
    (`whsec_` + base64 key bytes; any other text is used as UTF-8 bytes)."""
    raw = secret.removeprefix("whsec_")
    try:
        secret_bytes = base64.b64decode(raw, validate=True) if secret.startswith("whsec_") else secret.encode()
    except ValueError:
        secret_bytes = secret.encode()
    signed = f"{key}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_bytes, signed, hashlib.sha256).digest()).decode()


@dataclass
class Http:
    """What every HTTP channel shares: the worker's client, the keyring, the SSRF allow-list."""

    client: aiohttp.ClientSession
    keyring: Keyring
    allow: tuple[IPNetwork, ...] = ()
    timeout: float = 10.0

    async def request(self, out: Outgoing, key: str, *, secret: str | None = None, send_sni: bool = True) -> Result:
        timestamp = int(time.time())
        headers = dict(out.headers) | {"webhook-id": key, "webhook-timestamp": str(timestamp)}
        if secret:
            headers["webhook-signature"] = sign(secret, key, timestamp, out.body or b"")
        result = await send(
            self.client,
            out.method,
            out.url,
            headers=headers,
            content=out.body,
            allow=self.allow,
            timeout=self.timeout,
            send_sni=send_sni,
        )
        request: dict[str, object] = {"method": out.method, "url": out.url}
        return Result(result.ok, result.status, result.error, request, result.body, result.refused)


class UrlChannel:
    """One request per message, concurrently."""

    def __init__(self, http: Http) -> None:
        self.http = http

    async def send(self, batch: Sequence[Item]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(item) for item in batch)))

    async def _one(self, item: Item) -> Result:
        cb, dt = item.callback, item.device_type
        if item.values is None or cb is None or dt is None:
            return Result(False, error=item.error or "nothing to send")
        try:
            out = render(self.http.keyring, cb, dt, item.values)
            secret = callbacks_service.stored_signing_secret(self.http.keyring, cb)
        except Exception as exc:  # a callback that cannot render is a recorded failure
            return Result(False, error=f"cannot render the request: {exc}")
        return await self.http.request(out, item.delivery.key, secret=secret, send_sni=cb.send_sni)


def job_request(keyring: Keyring, values: dict[str, object]) -> Outgoing:
    """A job callback's request from its outbox row: `url`, `headers` (the sealed ciphertext of
    the job's headers, or null) and `body` (the status JSON)."""
    sealed = values.get("headers")
    headers: dict[str, str] = json.loads(keyring.decrypt(str(sealed), JOB_HEADERS_PURPOSE)) if sealed else {}
    headers["content-type"] = "application/json"
    return Outgoing("POST", str(values["url"]), headers, str(values.get("body") or "").encode())


class JobChannel:
    """Job callbacks: the job's final status POSTed to the URL given with the job."""

    def __init__(self, http: Http) -> None:
        self.http = http

    async def send(self, batch: Sequence[Item]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(item) for item in batch)))

    async def _one(self, item: Item) -> Result:
        if item.values is None:
            return Result(False, error=item.error or "nothing to send")
        try:
            out = job_request(self.http.keyring, item.values)
        except Exception as exc:
            return Result(False, error=f"cannot render the request: {exc}")
        return await self.http.request(out, item.delivery.key)
