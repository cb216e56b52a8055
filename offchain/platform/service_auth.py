"""Service identity: how one CaaS service proves to another who it is (docs/SECURITY.md).

A short-lived JWT (HS256) signed with the deployment's service key (`SERVICE_KEY`), which only
the services hold: `iss` "caas-services", `sub` the calling service, `aud` the service called,
`iat`/`exp` at most `INTERNAL__MAX_TOKEN_TTL_S` apart, `typ` "caas-service", a random `jti`.
A partner or operator token can never pass for one: it is signed with another key (the SME auth
service's) and carries no `typ` "caas-service"; production refuses a service key equal to the
partner secret (offchain.platform.security_settings).

`ServiceVerifier` is what every app checks service tokens with (offchain.platform.access wires
it); `ServiceTokens` is what a caller sends. `caas token --service NAME` issues one for people.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from offchain.platform.problems import Problem

ISSUER = "caas-services"
TOKEN_TYPE = "caas-service"  # noqa: S105 - a claim value, not a secret
# claims that are times must be plain integers in a range a datetime can hold (a token with
# exp 10**400 verifies in PyJWT, then overflows whatever turns it into a float or a date)
MAX_TIMESTAMP = 2**40

_UNAUTHENTICATED = "urn:caas:problem:unauthenticated"
_FORBIDDEN = "urn:caas:problem:forbidden"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="caas-internal"'}


@dataclass(frozen=True)
class ServiceIdentity:
    """A verified service caller: `name` called the service `audience`."""

    name: str
    audience: str
    token_id: str

    @property
    def subject(self) -> str:
        """How the audit log and the tx-intents name this caller."""
        return f"service:{self.name}"


def unauthenticated(detail: str) -> Problem:
    return Problem(401, _UNAUTHENTICATED, title="Authentication required", detail=detail, headers=_CHALLENGE)


def issue_service_token(
    key: str, *, caller: str, audience: str | Sequence[str], ttl_s: int = 60, now: int | None = None
) -> str:
    """A token `caller` sends to `audience` (one service, or several for a person's dev token)."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": caller,
        "aud": audience if isinstance(audience, str) else list(audience),
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
        "typ": TOKEN_TYPE,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def checked_times(claims: dict[str, Any]) -> None:
    """Refuse time claims that are not integers a clock can reach (see MAX_TIMESTAMP)."""
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not -MAX_TIMESTAMP < value < MAX_TIMESTAMP
        ):
            raise unauthenticated(f"token claim {name} is out of range")


class ServiceVerifier:
    """Verifies the service tokens sent to one service (`audience`)."""

    def __init__(
        self,
        key: str | None,
        *,
        audience: str,
        known_services: Collection[str],
        max_ttl_s: int = 300,
        leeway_s: int = 10,
    ) -> None:
        self._key = key or None
        self.audience = audience
        self.known = frozenset(known_services)
        self.max_ttl_s = max_ttl_s
        self.leeway_s = leeway_s

    @property
    def configured(self) -> bool:
        return self._key is not None

    def verify(self, token: str) -> ServiceIdentity:
        if self._key is None:
            raise unauthenticated("service identity is not configured on this deployment (SERVICE_KEY)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise unauthenticated(f"malformed token: {error}") from error
        if header.get("alg") != "HS256":
            raise unauthenticated("service tokens are HS256")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=ISSUER,
                leeway=self.leeway_s,
                options={"require": ["iss", "sub", "aud", "iat", "exp", "typ"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise unauthenticated("service token expired") from error
        except jwt.InvalidAudienceError as error:
            raise unauthenticated(f"service token is not for {self.audience}") from error
        except (jwt.PyJWTError, OverflowError, ValueError, TypeError) as error:
            raise unauthenticated(f"invalid service token: {type(error).__name__}") from error
        checked_times(claims)
        if claims.get("typ") != TOKEN_TYPE:
            raise unauthenticated("not a service token")
        if claims["exp"] - claims["iat"] > self.max_ttl_s:
            raise unauthenticated(f"service tokens live at most {self.max_ttl_s} s")
        if claims["iat"] > time.time() + self.leeway_s:
            raise unauthenticated("service token issued in the future")
        caller = claims.get("sub")
        if not isinstance(caller, str) or caller not in self.known:
            raise unauthenticated("service token names no known service")
        return ServiceIdentity(name=caller, audience=self.audience, token_id=str(claims.get("jti") or ""))


def forbidden_caller(identity: ServiceIdentity, allowed: Collection[str]) -> Problem:
    return Problem(
        403,
        _FORBIDDEN,
        title="Caller not allowed",
        detail=f"{identity.name} may not call this route (allowed: {', '.join(sorted(allowed))})",
    )


class ServiceTokens:
    """What a service sends to another: `headers(target)`, a fresh token per target, reused
    until a third of its life is left."""

    def __init__(self, key: str, *, caller: str, ttl_s: int = 60) -> None:
        self._key = key
        self.caller = caller
        self.ttl_s = ttl_s
        self._issued: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Any, *, caller: str) -> ServiceTokens:
        key = settings.internal.service_key
        if key is None:
            raise RuntimeError("SERVICE_KEY is not set: this service cannot call another one")
        return cls(key.get_secret_value(), caller=caller, ttl_s=settings.internal.token_ttl_s)

    def token(self, target: str) -> str:
        now = time.time()
        held = self._issued.get(target)
        if held is not None and held[1] - now > self.ttl_s / 3:
            return held[0]
        issued = int(now)
        token = issue_service_token(
            self._key, caller=self.caller, audience=target, ttl_s=self.ttl_s, now=issued
        )
        self._issued[target] = (token, issued + self.ttl_s)
        return token

    def headers(self, target: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(target)}"}
