"""The guarded HTTP request: SSRF refusals (before any packet leaves), the operator allow-list,
and redirects checked hop by hop, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from heron.delivery.http import HttpResult, new_session, send
from heron.delivery.ssrf import allowed, parse_allow_cidrs

LOOPBACK = parse_allow_cidrs("127.0.0.0/8")


class _Handler(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str, bytes]] = []

    def do_POST(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(307)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.command, self.path, self.headers.get("Host", ""), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.received = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


class Client:
    """The async `send` driven from a synchronous test."""

    def request(self, method: str, url: str, **kwargs: Any) -> HttpResult:
        async def go() -> HttpResult:
            async with new_session() as c:
                return await send(c, method, url, **kwargs)

        return asyncio.run(go())


@pytest.fixture
def client() -> Client:
    return Client()


def test_allowed_destination_receives_the_request_with_its_host_header(server: str, client: Client) -> None:
    result = client.request("POST", f"http://{server}/hook?x=1", content=b'{"a":1}', allow=LOOPBACK)
    assert result.ok and result.status == 204
    assert _Handler.received == [("POST", "/hook?x=1", server, b'{"a":1}')]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "169.254.169.254",
        "[::1]",
        "10.0.0.1",
        "192.168.1.10",
        "172.16.0.1",
        "100.64.0.1",
        "0.0.0.0",
    ],
)
def test_loopback_private_and_metadata_destinations_are_refused_by_default(
    host: str, server: str, client: Client
) -> None:
    port = server.rsplit(":", 1)[1]
    result = client.request("POST", f"http://{host}:{port}/hook", content=b"{}")
    assert result.status is None and result.error is not None
    assert result.error.startswith("destination refused")
    assert _Handler.received == []


def test_link_local_stays_refused_even_when_listed(client: Client) -> None:
    allow = parse_allow_cidrs("169.254.0.0/16, 127.0.0.0/8")
    result = client.request("POST", "http://169.254.169.254/latest/meta-data", allow=allow)
    assert result.status is None and "169.254.169.254" in (result.error or "")


def test_redirect_to_a_forbidden_address_is_refused_at_the_hop(server: str, client: Client) -> None:
    only_this = parse_allow_cidrs("127.0.0.1/32")
    port = server.rsplit(":", 1)[1]
    for target in (f"http://127.0.0.2:{port}/hook", "http://169.254.169.254/", f"http://[::1]:{port}/hook"):
        result = client.request("POST", f"http://{server}/redirect?to={target}", allow=only_this)
        assert result.status is None and (result.error or "").startswith("destination refused"), target
    assert _Handler.received == []
    # A redirect to an allowed place is followed.
    result = client.request("POST", f"http://{server}/redirect?to=http://{server}/final", content=b"x", allow=only_this)
    assert result.status == 204
    assert [r[1] for r in _Handler.received] == ["/final"]


def test_connection_refused_and_timeouts_are_results_not_exceptions(client: Client) -> None:
    result = client.request("POST", "http://127.0.0.1:1/hook", allow=LOOPBACK, timeout=2)
    assert result.status is None and (result.error or "").startswith("connection error")


def test_ipv4_mapped_ipv6_is_judged_as_ipv4() -> None:
    import ipaddress

    assert not allowed(ipaddress.ip_address("::ffff:10.1.2.3"), ())
    assert allowed(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert allowed(ipaddress.ip_address("93.184.216.34"), ())
