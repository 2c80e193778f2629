"""SSRF guard: a callback may only reach public addresses (or ones the operator allow-listed).

The host is resolved here, every address is checked, and the call then goes to the checked address
itself (original ``Host`` header and TLS SNI), so a DNS answer that changes between check and connect
(DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NamedTuple

import httpx

__all__ = ["CallbackRefused", "Guard", "Resolver", "Target", "system_resolver"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) → every address the name resolves to."""

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_METADATA = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::/32"))
_PORTS = {"http": 80, "https": 443}


class CallbackRefused(Exception):
    """The callback URL is not allowed; the message says why (never retried)."""


class Target(NamedTuple):
    """Where to connect: ``url`` names the checked IP; ``host`` and ``sni`` the name the receiver expects."""

    url: str
    host: str
    sni: str | None


async def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver, off the event loop; all A and AAAA answers."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Guard:
    """Checks callback URLs against the forbidden networks, minus the allow-list."""

    def __init__(self, allow: Iterable[str], resolver: Resolver) -> None:
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._pairs: set[tuple[str, int]] = set()
        for entry in allow:
            self._add(entry)
        self._resolve = resolver

    def _add(self, entry: str) -> None:
        if "/" in entry:
            self._networks.append(ipaddress.ip_network(entry, strict=False))
            return
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"allow entry {entry!r} is neither a CIDR nor host:port")
        self._pairs.add((host.strip("[]").lower(), int(port)))

    async def target(self, url: str) -> Target:
        """Resolve and check ``url``; raises :class:`CallbackRefused` (policy) or OSError (DNS failure)."""
        try:
            parsed = httpx.URL(url)
            host = parsed.raw_host.decode("ascii").rstrip(".").lower()
        except (httpx.InvalidURL, UnicodeDecodeError) as exc:
            raise CallbackRefused(f"invalid callback URL: {exc}") from None
        if parsed.scheme not in _PORTS or not host:
            raise CallbackRefused(f"callback URL must be http(s) with a host, got scheme {parsed.scheme!r}")
        port = parsed.port or _PORTS[parsed.scheme]
        listed = (host, port) in self._pairs
        if not listed and (host in _LOCAL_NAMES or host.endswith(".localhost")):
            raise CallbackRefused(f"callback host {host!r} is a local name")
        addresses = [_ip(host)] if _is_ip(host) else [_ip(a) for a in await self._resolve(host, port)]
        if not addresses:
            raise OSError(f"{host} has no address")
        for address in addresses:
            why = None if listed or self._allowed(address) else _forbidden(address)
            if why:
                where = f"address {host}" if _is_ip(host) else f"host {host!r} resolves to {address}, which"
                raise CallbackRefused(f"callback {where} is {why} and not allow-listed")
        sni = host if parsed.scheme == "https" and not _is_ip(host) else None
        return Target(str(parsed.copy_with(host=str(addresses[0]))), parsed.netloc.decode("ascii"), sni)

    def _allowed(self, address: IP) -> bool:
        return any(address in net for net in self._networks if net.version == address.version)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ip(text: str) -> IP:
    address = ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone id
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address  # ::ffff:127.0.0.1 is 127.0.0.1


def _forbidden(address: IP) -> str | None:
    """Why ``address`` may not be called, or None when it is a public unicast address."""
    if any(address in net for net in _METADATA if net.version == address.version):
        return "link-local / cloud metadata"
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)
