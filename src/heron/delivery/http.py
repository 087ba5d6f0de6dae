"""One guarded HTTP request: the destination is resolved and checked (see ssrf.py), the
connection goes to the checked address (Host header and TLS SNI keep the name), and every
redirect is checked the same way before it is followed. Asynchronous: the delivery worker keeps
many requests in flight on one event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from heron.delivery.ssrf import ForbiddenDestination, IPNetwork, pick_address

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class HttpResult:
    status: int | None  # None when no answer came (refused destination, connection error, timeout)
    error: str | None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    allow: tuple[IPNetwork, ...] = (),
    timeout: float = 10.0,
    send_sni: bool = True,
) -> HttpResult:
    loop = asyncio.get_running_loop()
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = await loop.run_in_executor(None, pick_address, host, port, allow)
        except ForbiddenDestination as exc:
            return HttpResult(None, f"destination refused: {exc}")
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{literal}:{port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        request_headers = {**(headers or {}), "Host": parts.netloc.rpartition("@")[2]}
        try:
            response = await client.request(
                method,
                pinned,
                headers=request_headers,
                content=content,
                timeout=timeout,
                follow_redirects=False,
                extensions={"sni_hostname": host} if parts.scheme == "https" and send_sni else {},
            )
        except httpx.TimeoutException:
            return HttpResult(None, f"timeout after {timeout:g} s")
        except httpx.HTTPError as exc:
            return HttpResult(None, f"connection error: {type(exc).__name__}")
        if response.is_redirect and "location" in response.headers:
            url = urljoin(url, response.headers["location"])
            if response.status_code == 303:
                method, content = "GET", None
            continue
        return HttpResult(response.status_code, None, response.content[:65536])
    return HttpResult(None, f"more than {MAX_REDIRECTS} redirects")
