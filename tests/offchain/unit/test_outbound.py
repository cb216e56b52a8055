"""Outbound URLs (offchain.platform.outbound): what a partner's webhook URL may point at.

Every spelling of an internal address is refused, whatever it would resolve to; names are
resolved for real (the machine's resolver) and every answer is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from offchain.platform.outbound import PLATFORM_PORTS, GuardedResolver, OutboundPolicy, UrlRefused

STRICT = OutboundPolicy(require_https=False)  # development's http, no loopback
PRODUCTION = OutboundPolicy()  # https only
LOOPBACK = OutboundPolicy(allow_loopback=True, require_https=False)

REFUSED = [
    # loopback, every spelling
    "http://127.0.0.1:9000/hook",
    "http://127.0.0.2/hook",
    "http://localhost/hook",
    "http://localhost./hook",
    "http://LOCALHOST/hook",
    "http://api.localhost/hook",
    "http://0x7f000001/hook",
    "http://0x7F.0x00.0x00.0x01/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://0177.0000.0000.0001/hook",
    "http://127.1/hook",
    "http://127.0.1/hook",
    "http://127.0.0.1./hook",
    "http://[::1]/hook",
    "http://[0:0:0:0:0:0:0:1]/hook",
    # unspecified
    "http://0/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    # private, CGNAT, link-local and the metadata service
    "http://10.0.0.1/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[fe80::1%25eth0]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456:789a::1]/hook",
    # multicast, reserved, broadcast, documentation, benchmarking
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://192.0.2.10/hook",
    "http://198.18.0.1/hook",
    # IPv4 inside IPv6
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://[::127.0.0.1]/hook",
    # local names
    "http://printer.local/hook",
    "http://db.internal/hook",
    # not a plain URL
    "http://8.8.8.8@127.0.0.1/hook",
    "http://user:secret@8.8.8.8/hook",
    "ftp://8.8.8.8/hook",
    "file:///etc/passwd",
    "/relative",
    "http://8.8.8.8/hook#fragment",
    "http://8.8.8.8:99999/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_spellings(url: str) -> None:
    with pytest.raises(UrlRefused):
        asyncio.run(STRICT.check_url(url))


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "https://1.1.1.1:8443/a?b=1", "http://8.8.8.8/x"])
def test_global_addresses_pass(url: str) -> None:
    assert asyncio.run(STRICT.check_url(url)) == url


def test_production_wants_https() -> None:
    with pytest.raises(UrlRefused, match="https"):
        asyncio.run(PRODUCTION.check_url("http://8.8.8.8/hook"))
    assert asyncio.run(PRODUCTION.check_url("https://8.8.8.8/hook"))


def _loopback_names() -> list[str]:
    """Names this machine resolves to a loopback address (beyond `localhost`, which is refused by
    name before any lookup): its own host name usually is one."""
    names = []
    for name in (socket.gethostname(), "ip6-localhost", "ip6-loopback", "localhost.localdomain"):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos):
            names.append(name)
    return names


def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    # the resolution itself, checked for every answer: "localhost" really resolves here
    with pytest.raises(UrlRefused, match="loopback"):
        asyncio.run(STRICT.resolve("localhost", 80))
    names = [n for n in _loopback_names() if not n.endswith((".localdomain", "localhost"))]
    if not names:
        pytest.skip("no host name of this machine resolves to loopback")
    with pytest.raises(UrlRefused, match="loopback"):
        asyncio.run(STRICT.check_url(f"http://{names[0]}:9000/hook"))
    # allowed loopback still refuses the platform's own ports under that name
    with pytest.raises(UrlRefused, match="platform"):
        asyncio.run(LOOPBACK.check_url(f"http://{names[0]}:8003/v1/payouts"))


def test_unresolvable_names_wait_for_the_delivery_to_decide() -> None:
    unknown = "http://no-such-host.invalid/hook"
    assert asyncio.run(STRICT.check_url(unknown, unresolvable_ok=True)) == unknown
    with pytest.raises(UrlRefused, match="resolve"):
        asyncio.run(STRICT.check_url(unknown))


@pytest.mark.parametrize("port", sorted(PLATFORM_PORTS))
def test_loopback_when_allowed_never_reaches_the_platforms_own_ports(port: int) -> None:
    with pytest.raises(UrlRefused, match="platform"):
        asyncio.run(LOOPBACK.check_url(f"http://127.0.0.1:{port}/v1/tx-intents"))
    assert asyncio.run(LOOPBACK.check_url("http://127.0.0.1:18765/hook"))
    # loopback only: the rest stays refused even where loopback is allowed
    with pytest.raises(UrlRefused):
        asyncio.run(LOOPBACK.check_url("http://169.254.169.254/"))


def test_settings_policy_forbids_the_dependencies_ports() -> None:
    from offchain.platform.settings import Settings

    settings = Settings(
        env="test",
        database={"url": "postgresql://u@127.0.0.1:5432/caas"},
        redis={"url": "redis://127.0.0.1:6379/0"},
        chain={"rpc_url": "http://127.0.0.1:8545"},
        rails={"simulator_url": "http://127.0.0.1:8100"},
        outbound={"allow_loopback": True},
    )
    policy = OutboundPolicy.from_settings(settings)
    assert {5432, 6379, 8545, 8100} | set(PLATFORM_PORTS) <= policy.forbidden_ports
    for port in (5432, 6379, 8545, 8100, 8008):
        with pytest.raises(UrlRefused):
            asyncio.run(policy.check_url(f"http://127.0.0.1:{port}/"))
    assert OutboundPolicy.from_settings(Settings(env="test")).allow_loopback is False


def test_guarded_resolver_refuses_the_whole_answer() -> None:
    async def resolve() -> None:
        resolver = GuardedResolver(STRICT)
        try:
            await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(UrlRefused, match="loopback"):
        asyncio.run(resolve())
