"""Where Heron may send requests: never to loopback, private, link-local, metadata or other
special addresses, unless an operator allow-list (`HERON_CALLBACK_ALLOW_CIDRS`) opens a range;
link-local (cloud metadata lives there) is never opened. The check applies to the address a
name resolves to at connect time, and again at every redirect; a URL whose host is itself an
address (or `localhost`) is checked on save too (`check_literal_host`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from heron.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForbiddenDestination(Exception):
    """The URL resolves to an address Heron will not send to (a permanent failure: asking again
    gives the same answer until the allow-list changes)."""


class Unresolved(Exception):
    """The URL's host name did not resolve (DNS down, a name not yet published: tried again)."""


def parse_allow_cidrs(text: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in items)


def check_url_syntax(url: str, field: str = "url") -> None:
    """Validation on save: an absolute http(s) URL with a host, no credentials in clear form."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput.field(field, "must be an absolute http:// or https:// URL")
    if len(url) > 2000:
        raise InvalidInput.field(field, "must be at most 2000 characters")


def _literal_addresses(host: str) -> list[IPAddress]:
    """The addresses a host stands for without asking DNS: an IP literal (IPv4 in any form the
    OS reads, such as `2130706433` or `127.1`), `localhost` and its subdomains (RFC 6761); none
    for a name (or a template)."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        return [ipaddress.ip_address(name.split("%")[0])]
    except ValueError:
        pass
    if name and all(c in "0123456789abcdefx." for c in name) and name[0].isdigit():
        try:
            return [ipaddress.IPv4Address(socket.inet_aton(name))]
        except OSError:
            return []
    return []


def check_literal_host(url: str, allow: tuple[IPNetwork, ...], field: str = "url") -> None:
    """Validation on save: a URL whose host is a refused address is refused naming the field.
    A name that needs DNS is checked when a request is sent (its address may change)."""
    host = urlsplit(url).hostname or ""
    for address in _literal_addresses(host):
        if not allowed(address, allow):
            raise InvalidInput.field(
                field,
                f"{host} is {_unmapped(address)}, an address Heron does not send to "
                "(loopback, private, link-local or special; an operator may open a range with "
                "HERON_CALLBACK_ALLOW_CIDRS, never link-local)",
            )


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed(address: IPAddress, allow: tuple[IPNetwork, ...]) -> bool:
    address = _unmapped(address)
    if address.is_link_local:
        return False  # never, whatever the allow-list says: metadata services live there
    if any(address in net for net in allow if net.version == address.version):
        return True
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal such as `2130706433` resolves as the OS does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolved(f"cannot resolve {host!r}") from exc
    out: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if addr not in out:
            out.append(addr)
    return out


def pick_address(host: str, port: int, allow: tuple[IPNetwork, ...]) -> IPAddress:
    """The address to connect to. Refused when ANY resolved address is forbidden, so a name
    cannot smuggle a private address in beside a public one."""
    addresses = resolve(host, port)
    bad = [a for a in addresses if not allowed(a, allow)]
    if bad or not addresses:
        raise ForbiddenDestination(
            f"{host} resolves to {_unmapped(bad[0]) if bad else 'nothing'}, which is not allowed"
        )
    return addresses[0]
