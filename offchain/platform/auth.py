"""Partner and operator authentication: JWTs issued by the SME platform's auth service (DESIGN §4).

Tokens are HS256 with a shared secret, or RS256 verified against the auth service's JWKS (cached,
refetched on an unknown `kid` so key rotation needs no restart) — both configurable. Two kinds:

- partner tokens: `sub`, `partner_id`, `creditPermissions`, optional `creditLimit` (minor units)
  and `riskRating`. Every partner route declares the credit permission it needs with
  `require(...)`, which also counts the call against the partner's rate limit (RateLimit-*).
- operator tokens (the lender's own staff): `sub`, `caasPermissions` with `caas:operations:read`
  and/or `caas:operations:manage`, and no `partner_id`. They own the platform-wide actions
  (close of business, trial balance, reconciliation, suspense, payout release) through
  `require_operator(...)`; they never act for a partner, and a partner token never acts as one.
  A token carrying both `partner_id` and `caasPermissions` is refused.

A verified token's identity is cached by the token itself (bounded LRU) until the token expires
or `cache_s` passes, whichever is first: a partner sends the same bearer token on every call,
and re-verifying it cost ~5 % of a read. The cap bounds how long a key removed from the JWKS
keeps working for tokens already seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cachetools import TLRUCache
from fastapi import Request

from offchain.platform.access import AccessRule, Kind, authenticate_service, declare
from offchain.platform.auth_failures import counted_failures
from offchain.platform.problems import Problem
from offchain.platform.service_auth import ServiceIdentity, checked_times

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

# Operator permissions (the lender's staff): platform-wide reads, and platform-wide actions.
OPERATIONS_READ = "caas:operations:read"
OPERATIONS_MANAGE = "caas:operations:manage"
OPERATOR_PERMISSIONS = (OPERATIONS_READ, OPERATIONS_MANAGE)

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


@dataclass(frozen=True)
class Operator:
    """One of the lender's operators (no partner): `caasPermissions` say what they may do."""

    subject: str
    permissions: frozenset[str]
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has(self, permission: str) -> bool:
        # manage includes read: whoever may act on the platform may see what they act on
        return permission in self.permissions or (
            permission == OPERATIONS_READ and OPERATIONS_MANAGE in self.permissions
        )

    @property
    def actor(self) -> str:
        """How the audit log names this operator."""
        return f"operator:{self.subject}"


Identity = Principal | Operator
# What a route that partners and operators share receives; use cases scope by its type.
Actor = Principal | Operator


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

    async def verify(self, token: str) -> Identity:
        if self.cache_size and self.cache_s > 0:
            # An RS256 answer holds only while the key set it was checked against does: after the
            # JWKS is refetched (rotation, a retired key) the token is checked again.
            generation = getattr(self.jwks, "fetches", 0)
            cached: tuple[Identity, int | None] | None = self._cache.get(token)
            if cached is not None and cached[1] in (None, generation):
                return cached[0]
            principal, algorithm = await self._verify(token)
            self._cache[token] = (principal, generation if algorithm == "RS256" else None)
            return principal
        return (await self._verify(token))[0]

    async def _verify(self, token: str) -> tuple[Identity, str]:
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
        except (jwt.PyJWTError, OverflowError, ValueError, TypeError) as error:
            raise _unauthenticated(f"invalid token: {type(error).__name__}") from error
        checked_times(claims)
        return identity_from_claims(claims), algorithm


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """A partner's principal, or an operator (see the module docstring for the two shapes)."""
    operator_permissions = claims.get("caasPermissions")
    if "partner_id" in claims and operator_permissions is not None:
        raise _unauthenticated(
            "a token is a partner's (partner_id) or an operator's (caasPermissions), not both"
        )
    if "partner_id" not in claims and operator_permissions is not None:
        if not isinstance(operator_permissions, list) or not all(
            isinstance(p, str) for p in operator_permissions
        ):
            raise _unauthenticated("caasPermissions must be a list of strings")
        return Operator(
            subject=str(claims["sub"]), permissions=frozenset(operator_permissions), claims=claims
        )
    return principal_from_claims(claims)


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


def issue_operator_token(
    secret: str,
    *,
    subject: str = "dev-operator",
    permissions: tuple[str, ...] = OPERATOR_PERMISSIONS,
    ttl_s: int = 8 * 3600,
) -> str:
    """An HS256 operator token as the SME auth service would issue it (dev, tests,
    `caas token --operator`)."""
    now = int(time.time())
    claims = {"sub": subject, "caasPermissions": list(permissions), "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, _UNAUTHENTICATED, title="Authentication required", detail=detail, headers=_CHALLENGE)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated("send Authorization: Bearer <token>")
    return token.strip()


async def authenticate(request: Request) -> Identity:
    """The caller's verified identity (partner or operator), once per request."""
    # the request's state dict itself (what request.state wraps): that wrapper answers a name it
    # lacks by raising AttributeError, the costliest part of this call on every partner request
    state = request.scope.setdefault("state", {})
    identity: Identity | None = state.get("principal")
    if identity is None:
        verifier: JwtVerifier = request.app.state.jwt_verifier
        token = _bearer(request)  # no token at all is not a guess: not counted
        async with counted_failures(request):
            identity = state["principal"] = await verifier.verify(token)
    return identity


def _forbidden(detail: str, **extensions: Any) -> Problem:
    return Problem(403, _FORBIDDEN, title="Permission missing", detail=detail, **extensions)


def ensure_permission(principal: Identity, permission: str) -> Principal:
    """The partner principal, or a 403 problem naming the permission it lacks."""
    if not isinstance(principal, Principal):
        raise _forbidden("operator tokens do not act for a partner: this is a partner route")
    if not principal.has(permission):
        raise _forbidden(f"this call needs the {permission} permission", required_permission=permission)
    return principal


def ensure_operator(identity: Identity, permission: str) -> Operator:
    if not isinstance(identity, Operator):
        raise _forbidden(
            "this is an operator route: a partner token never acts platform-wide",
            required_permission=permission,
        )
    if not identity.has(permission):
        raise _forbidden(f"this call needs the {permission} permission", required_permission=permission)
    return identity


async def count_partner_call(request: Request, principal: Principal, route_class: str | None = None) -> None:
    """Count the call against its partner's quota (RateLimit-* on the answer); 429 past it."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    if route_class is None:
        route_class = "read" if request.method in ("GET", "HEAD") else "write"
    request.scope["state"]["rate_quota"] = await limiter.hit(
        request.app.state.resources.redis, route_class, str(principal.partner_id)
    )


def require(permission: str, *, route_class: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller's partner principal, refused with 403 unless it holds `permission`,
    counted against the partner's rate limit (route class by method unless given).

    One dependency, not a chain (token -> permission -> quota): FastAPI's dependency solving is
    per level, and this runs on every partner request."""

    async def dependency(request: Request) -> Principal:
        principal = ensure_permission(await authenticate(request), permission)
        await count_partner_call(request, principal, route_class)
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    # FastAPI reads this to document the requirement in OpenAPI.
    dependency.required_permission = permission  # type: ignore[attr-defined]
    return declare(dependency, AccessRule.partner(permission))


def require_operator(permission: str) -> Callable[..., Awaitable[Operator]]:
    """Dependency: an operator holding `permission` (manage includes read)."""
    if permission not in OPERATOR_PERMISSIONS:
        raise ValueError(f"not an operator permission: {permission}")

    async def dependency(request: Request) -> Operator:
        return ensure_operator(await authenticate(request), permission)

    dependency.__name__ = f"require_operator_{permission.rsplit(':', 1)[-1]}"
    return declare(dependency, AccessRule.operator(permission))


def partner_or_operator(partner_permission: str, operator_permission: str) -> Callable[..., Awaitable[Actor]]:
    """Dependency of a route partners and operators share: a partner (holding
    `partner_permission`, rate-limited, scoped to its own rows by the use case) or an operator
    holding `operator_permission` (platform-wide)."""

    async def dependency(request: Request) -> Actor:
        identity = await authenticate(request)
        if isinstance(identity, Operator):
            return ensure_operator(identity, operator_permission)
        principal = ensure_permission(identity, partner_permission)
        await count_partner_call(request, principal)
        return principal

    dependency.__name__ = f"require_{partner_permission.replace(':', '_')}_or_operator"
    return declare(dependency, AccessRule.shared(partner_permission, operator_permission))


def service_or_operator(operator_permission: str) -> Callable[..., Awaitable[ServiceIdentity | Operator]]:
    """Dependency of a read-only platform route (GET /v1/health on health:8010): any CaaS service
    with a token for this service, or an operator holding `operator_permission`."""

    async def dependency(request: Request) -> ServiceIdentity | Operator:
        token = _bearer(request)
        settings = request.app.state.settings
        if not settings.internal.enabled:
            return await authenticate_service(request)
        try:
            identity = request.app.state.service_verifier.verify(token)
        except Problem:
            # not a service token for us: an operator's, or nobody's (counted as a failure)
            return ensure_operator(await authenticate(request), operator_permission)
        request.scope["state"]["service_identity"] = identity
        return identity

    dependency.__name__ = "require_service_or_operator"
    return declare(dependency, AccessRule(Kind.SERVICE_OR_OPERATOR, operator_permission=operator_permission))


def actor_name(actor: Actor) -> str:
    """The audit log's `actor` for a partner's user or an operator."""
    return actor.actor if isinstance(actor, Operator) else actor.subject
