"""Partner authentication: JWTs issued by the SME platform's auth service (DESIGN §4).

Tokens are HS256 with a shared secret, or RS256 verified against the auth service's JWKS (cached,
refetched on an unknown `kid` so key rotation needs no restart) — both configurable. Claims:
`sub`, `partner_id`, `creditPermissions`, optional `creditLimit` (minor units) and `riskRating`.
Every route declares the credit permission it needs with `require(...)`.

A verified token's principal is cached by the token itself (bounded LRU) until the token expires
or `cache_s` passes, whichever is first: a partner sends the same bearer token on every call,
and re-verifying it cost ~5 % of a read. The cap bounds how long a key removed from the JWKS
keeps working for tokens already seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import jwt
from cachetools import TLRUCache
from fastapi import Depends, Request

from offchain.platform.problems import Problem

# The permission vocabulary. The first four come from the SME platform's strategy; the read,
# audit and administration ones complete what an API needs.
APPLICATION_CREATE = "credit:application:create"
APPLICATION_READ = "credit:application:read"
APPLICATION_APPROVE = "credit:application:approve"
DISBURSEMENT_EXECUTE = "credit:disbursement:execute"
COLLECTION_MANAGE = "credit:collection:manage"
LOAN_READ = "credit:loan:read"
AUDIT_READ = "credit:audit:read"
WEBHOOK_MANAGE = "credit:webhook:manage"
ANALYTICS_READ = "credit:analytics:read"

ALL_PERMISSIONS = (
    APPLICATION_CREATE,
    APPLICATION_READ,
    APPLICATION_APPROVE,
    DISBURSEMENT_EXECUTE,
    COLLECTION_MANAGE,
    LOAN_READ,
    AUDIT_READ,
    WEBHOOK_MANAGE,
    ANALYTICS_READ,
)

_UNAUTHENTICATED = "urn:caas:problem:unauthenticated"
_FORBIDDEN = "urn:caas:problem:forbidden"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="caas"'}


@dataclass(frozen=True)
class Principal:
    subject: str
    partner_id: uuid.UUID
    permissions: frozenset[str]
    credit_limit: int | None = None
    risk_rating: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has(self, permission: str) -> bool:
        return permission in self.permissions


class KeyResolver(Protocol):
    """Finds the RS256 verification key for a token's `kid` (a JWKS client)."""

    async def key_for(self, kid: str | None) -> Any: ...


@dataclass
class JwtVerifier:
    hs256_secret: str | None = None
    jwks: KeyResolver | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: int = 30
    cache_size: int = 10_000
    cache_s: float = 60.0
    _cache: TLRUCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # ttu: a token's entry lives until its `exp` (+ leeway, as jwt.decode allows) or cache_s.
        self._cache = TLRUCache(
            maxsize=self.cache_size,
            ttu=lambda _token, entry, now: min(
                now + self.cache_s, float(entry[0].claims["exp"]) + self.leeway_s
            ),
            timer=time.time,
        )

    async def verify(self, token: str) -> Principal:
        if self.cache_size and self.cache_s > 0:
            # An RS256 answer holds only while the key set it was checked against does: after the
            # JWKS is refetched (rotation, a retired key) the token is checked again.
            generation = getattr(self.jwks, "fetches", 0)
            cached: tuple[Principal, int | None] | None = self._cache.get(token)
            if cached is not None and cached[1] in (None, generation):
                return cached[0]
            principal, algorithm = await self._verify(token)
            self._cache[token] = (principal, generation if algorithm == "RS256" else None)
            return principal
        return (await self._verify(token))[0]

    async def _verify(self, token: str) -> tuple[Principal, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise _unauthenticated(f"malformed token: {error}") from error
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.hs256_secret:
            key: Any = self.hs256_secret
        elif algorithm == "RS256" and self.jwks is not None:
            key = await self.jwks.key_for(header.get("kid"))
        else:
            raise _unauthenticated(f"token algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as error:
            raise _unauthenticated("token expired") from error
        except jwt.PyJWTError as error:
            raise _unauthenticated(f"invalid token: {error}") from error
        return principal_from_claims(claims), algorithm


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        partner_id = uuid.UUID(str(claims["partner_id"]))
    except (KeyError, ValueError) as error:
        raise _unauthenticated("token has no valid partner_id claim") from error
    permissions = claims.get("creditPermissions") or []
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise _unauthenticated("creditPermissions must be a list of strings")
    credit_limit = claims.get("creditLimit")
    if credit_limit is not None and (not isinstance(credit_limit, int) or credit_limit < 0):
        raise _unauthenticated("creditLimit must be a non-negative integer of minor units")
    return Principal(
        subject=str(claims["sub"]),
        partner_id=partner_id,
        permissions=frozenset(permissions),
        credit_limit=credit_limit,
        risk_rating=claims.get("riskRating"),
        claims=claims,
    )


def issue_token(
    secret: str,
    *,
    partner_id: uuid.UUID | str,
    subject: str = "dev-partner-user",
    permissions: tuple[str, ...] = ALL_PERMISSIONS,
    credit_limit: int | None = None,
    risk_rating: str | None = None,
    ttl_s: int = 30 * 86_400,
) -> str:
    """An HS256 token as the SME auth service would issue it (dev, tests, `caas token`)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "partner_id": str(partner_id),
        "creditPermissions": list(permissions),
        "iat": now,
        "exp": now + ttl_s,
    }
    if credit_limit is not None:
        claims["creditLimit"] = credit_limit
    if risk_rating is not None:
        claims["riskRating"] = risk_rating
    return jwt.encode(claims, secret, algorithm="HS256")


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, _UNAUTHENTICATED, title="Authentication required", detail=detail, headers=_CHALLENGE)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated("send Authorization: Bearer <token>")
    return token.strip()


async def authenticate(request: Request) -> Principal:
    # the request's state dict itself (what request.state wraps): that wrapper answers a name it
    # lacks by raising AttributeError, the costliest part of this call on every partner request
    state = request.scope.setdefault("state", {})
    principal: Principal | None = state.get("principal")
    if principal is None:
        verifier: JwtVerifier = request.app.state.jwt_verifier
        principal = state["principal"] = await verifier.verify(_bearer(request))
    return principal


def ensure_permission(principal: Principal, permission: str) -> Principal:
    """The principal, or a 403 problem naming the permission it lacks."""
    if not principal.has(permission):
        raise Problem(
            403,
            _FORBIDDEN,
            title="Permission missing",
            detail=f"this call needs the {permission} permission",
            required_permission=permission,
        )
    return principal


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller's principal, refused with 403 unless it holds `permission`."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        return ensure_permission(principal, permission)

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    # FastAPI reads this to document the requirement in OpenAPI.
    dependency.required_permission = permission  # type: ignore[attr-defined]
    return dependency
