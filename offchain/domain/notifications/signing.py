"""Webhook signatures: `Caas-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

The recipe a partner follows to verify a delivery:
1. split the header on ",", each part on the first "="; take `t` and every `v1`;
2. compute hex HMAC-SHA256 with the endpoint's signing secret (the whole `whsec_...` string, UTF-8)
   as key over the bytes `<t>.` followed by the raw request body, exactly as received;
3. accept when it equals any `v1` (constant-time compare) and `t` is within your tolerance
   (5 minutes is usual) of your clock, which refuses replays of old captured deliveries.
While a rotated-out secret is still in its overlap window, deliveries carry one `v1` per secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

HEADER = "Caas-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker of secrets, not a secret
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    pass


def new_secret() -> str:
    # 32 random bytes: the HMAC key strength SHA-256 can use
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def compute(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets_: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    if not secrets_:
        raise ValueError("at least one signing secret is needed")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={compute(secret, t, body)}" for secret in secrets_)])


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a `Caas-Signature` header; returns its timestamp, raises SignatureError if it fails."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("t is not a unix timestamp") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("header needs t= and at least one v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
    expected = compute(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no v1 signature matches")
    return timestamp
