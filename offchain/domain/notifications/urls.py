"""Which URLs a partner may register as webhook endpoints."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


class EndpointUrlError(ValueError):
    pass


def validate_endpoint_url(url: str, *, allow_insecure: bool) -> str:
    """https only (and no loopback or private address literals) unless `allow_insecure` (dev, test).

    Literal checks only: a hostname that resolves to a private address is the network's job
    (egress rules), since DNS can change between this check and a delivery.
    """
    if len(url) > 2_000:
        raise EndpointUrlError("at most 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as error:
        raise EndpointUrlError(f"not a URL: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointUrlError("must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise EndpointUrlError("must not carry credentials; the signature authenticates deliveries")
    if parts.fragment:
        raise EndpointUrlError("must not have a fragment")
    if allow_insecure:
        return url
    if parts.scheme != "https":
        raise EndpointUrlError("must use https")
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise EndpointUrlError("must be a public host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if not address.is_global:
        raise EndpointUrlError("must be a public address")
    return url
