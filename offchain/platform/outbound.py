"""Outbound URLs taken from input (partner webhook endpoints): where the platform may connect.

A URL is refused unless every address its host stands for is globally routable: loopback,
private (RFC 1918, ULA fc00::/7), link-local (169.254.0.0/16 with the cloud metadata address,
fe80::/10), CGNAT 100.64.0.0/10, multicast, unspecified, reserved and documentation ranges,
IPv4-mapped / 6to4 / NAT64 / Teredo IPv6 (which carry an IPv4 address inside) are all refused.
An address is read only in its canonical spelling: `0x7f000001`, `2130706433`, `0177.0.0.1`,
`127.1` or `0` are refused as such, whatever they would resolve to, and so are `localhost`,
`*.localhost` and `*.local` (with or without a trailing dot).

A host name is resolved and every answer checked, at registration and again at each delivery:
deliveries connect through `GuardedResolver`, so aiohttp connects to exactly the addresses that
were checked, never to a second answer of the same name (no DNS rebinding).

Development may allow loopback addresses (`OUTBOUND_ALLOW_LOOPBACK=true`, which production
refuses) to deliver to a local receiver, but never on the platform's own ports (8000-8010) or the
ports of its dependencies (PostgreSQL, Redis, the chain node, the simulator).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

PLATFORM_PORTS = frozenset(range(8000, 8011))
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CANONICAL_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".home.arpa")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(OSError):
    """The URL (or one of the addresses its host resolves to) may not be connected to."""


class _Unresolved(UrlRefused):
    """The host name did not resolve (no answer to check)."""


def _port_of(url: str) -> int | None:
    """The port a dependency URL of the settings connects to (its scheme's default when none)."""
    try:
        parts = urlsplit(url)
        return parts.port or {"https": 443, "http": 80, "redis": 6379, "postgresql": 5432}.get(parts.scheme)
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    allow_loopback: bool = False
    require_https: bool = True
    # never connected to on a loopback address, even where loopback is allowed
    forbidden_ports: frozenset[int] = PLATFORM_PORTS
    resolve_timeout_s: float = 5.0
    _resolver: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> OutboundPolicy:
        production = settings.env.value == "production"
        dependency_urls = [
            settings.database.url,
            settings.redis.url,
            settings.chain.rpc_url,
            settings.rails.simulator_url,
            *settings.rails.sme_service_urls().values(),
        ]
        ports = {port for url in dependency_urls if url for port in [_port_of(url)] if port}
        return cls(
            allow_loopback=settings.outbound.allow_loopback and not production,
            require_https=production,
            forbidden_ports=PLATFORM_PORTS | frozenset(ports),
            resolve_timeout_s=settings.outbound.resolve_timeout_s,
        )

    # --- addresses ------------------------------------------------------------------------

    def check_address(self, address: IpAddress, port: int) -> None:
        """Raise UrlRefused unless `address` (on `port`) may be connected to."""
        if isinstance(address, ipaddress.IPv6Address):
            embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
            if embedded is not None or address in _NAT64 or address in _NAT64_LOCAL:
                raise UrlRefused(f"{address} carries an IPv4 address inside an IPv6 one")
            if address.scope_id:
                raise UrlRefused(f"{address} names a network interface")
        if address.is_loopback:
            if not self.allow_loopback:
                raise UrlRefused(f"{address} is a loopback address")
            if port in self.forbidden_ports:
                raise UrlRefused(f"port {port} is one of the platform's own")
            return
        if (
            not address.is_global
            or address.is_multicast
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_unspecified
        ):
            raise UrlRefused(f"{address} is not a globally routable address")

    # --- URLs -----------------------------------------------------------------------------

    def parse(self, url: str) -> tuple[str, int, IpAddress | None]:
        """Static checks: (host, port, the address when the host is one). Raises UrlRefused."""
        if len(url) > 2_000:
            raise UrlRefused("at most 2000 characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise UrlRefused(f"not a URL: {error}") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise UrlRefused("must be an absolute http(s) URL")
        if self.require_https and parts.scheme != "https":
            raise UrlRefused("must use https")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UrlRefused("must not carry credentials; the signature authenticates deliveries")
        if parts.fragment:
            raise UrlRefused("must not have a fragment")
        host = parts.hostname.lower()
        if "%" in host or "\\" in parts.netloc:
            raise UrlRefused("must not name a network interface or use backslashes")
        port = port or (443 if parts.scheme == "https" else 80)
        bare = host.rstrip(".")
        if not bare:
            raise UrlRefused("must name a host")
        if bare == "localhost" or bare.endswith(_LOCAL_NAMES):
            raise UrlRefused(f"{host} is a local name")
        if ":" in bare:  # an IPv6 literal (urlsplit took the brackets off)
            try:
                address: IpAddress = ipaddress.IPv6Address(bare)
            except ValueError:
                raise UrlRefused(f"{host} is not an address") from None
            self.check_address(address, port)
            return bare, port, address
        labels = bare.split(".")
        if all(_NUMERIC_LABEL.match(label) for label in labels):
            # inet_aton would read 0x7f000001, 2130706433, 0177.0.0.1, 127.1 and 0 as addresses:
            # only the canonical dotted quad is an address here, every other spelling is refused
            if host != bare or not _CANONICAL_IPV4.match(bare):
                raise UrlRefused(f"{host} is a numeric address in a non-canonical spelling")
            address = ipaddress.IPv4Address(bare)
            self.check_address(address, port)
            return bare, port, address
        return bare, port, None

    async def resolve(self, host: str, port: int) -> list[IpAddress]:
        """Every address `host` resolves to, each checked (UrlRefused on the first refused)."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=self.resolve_timeout_s
            )
        except (OSError, TimeoutError) as error:
            raise _Unresolved(f"{host} does not resolve: {type(error).__name__}") from None
        addresses = _addresses(str(info[4][0]) for info in infos)
        if not addresses:
            raise _Unresolved(f"{host} resolves to no address")
        for address in addresses:
            self.check_address(address, port)
        return addresses

    async def check_url(self, url: str, *, unresolvable_ok: bool = False) -> str:
        """The URL, once its host and every address it resolves to passed (UrlRefused otherwise).

        `unresolvable_ok` (registration): a name that does not resolve yet is accepted, since
        every delivery resolves it again through GuardedResolver and refuses what it finds then.
        """
        host, port, address = self.parse(url)
        if address is None:
            try:
                await self.resolve(host, port)
            except _Unresolved:
                if not unresolvable_ok:
                    raise
        return url


def _addresses(hosts: Iterable[str]) -> list[IpAddress]:
    found: list[IpAddress] = []
    for host in hosts:
        address = ipaddress.ip_address(host.split("%", 1)[0])
        if "%" in host and isinstance(address, ipaddress.IPv6Address):
            address = ipaddress.IPv6Address(host)  # keep the scope: check_address refuses it
        if address not in found:
            found.append(address)
    return found


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for outbound deliveries: resolves as usual, then refuses the whole
    answer if any address fails the policy. aiohttp connects only to what this returns."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if not answers:
            raise UrlRefused(f"{host} resolves to no address")
        for answer in answers:
            for address in _addresses([str(answer["host"])]):
                self.policy.check_address(address, port)
        return answers

    async def close(self) -> None:
        await self._inner.close()
