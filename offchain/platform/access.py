"""Who may call each route, declared on the route and enforced for every route by construction.

Every app made by offchain.platform.app.create_service_app carries one app-level dependency,
`access_guard`, which FastAPI runs before anything else on every route the app ever gets
(included routers, routes added later). A route declares its rule through the dependency that
authenticates it:

    partner              auth.require(permission)                  a partner's token, rate-limited
    operator             auth.require_operator(permission)         an operator's token
    partner_or_operator  auth.partner_or_operator(perm, op_perm)   either, scoped by the use case
    service              service_only(*callers)                    a service token for this service
    service_or_operator  auth.service_or_operator(op_perm)         a service token, or an operator's
    public               public(reason)                            no token: the body is signed
    probe                probe()                                   /health/*, /metrics

A route that declares nothing is a service route for any CaaS service: the guard itself asks for
a service token addressed to this service (offchain.platform.service_auth). So a new route can
never be reachable without an identity by accident; tests/offchain/integration/
test_permission_matrix.py holds every route to the rule it is expected to have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts

from offchain.platform.auth_failures import counted_failures
from offchain.platform.service_auth import ServiceIdentity, forbidden_caller, unauthenticated


class Kind(StrEnum):
    PARTNER = "partner"
    OPERATOR = "operator"
    SHARED = "partner_or_operator"
    SERVICE = "service"
    SERVICE_OR_OPERATOR = "service_or_operator"
    PUBLIC = "public"
    PROBE = "probe"


@dataclass(frozen=True)
class AccessRule:
    kind: Kind
    partner_permission: str | None = None
    operator_permission: str | None = None
    # SERVICE: the services that may call (None: any CaaS service)
    callers: frozenset[str] | None = None
    # PUBLIC: why no token is needed (what authenticates the call instead)
    reason: str | None = None
    # SERVICE: False when the rule is the guard's default for an undeclared route
    declared: bool = True

    @classmethod
    def partner(cls, permission: str) -> AccessRule:
        return cls(Kind.PARTNER, partner_permission=permission)

    @classmethod
    def operator(cls, permission: str) -> AccessRule:
        return cls(Kind.OPERATOR, operator_permission=permission)

    @classmethod
    def shared(cls, partner_permission: str, operator_permission: str) -> AccessRule:
        return cls(
            Kind.SHARED, partner_permission=partner_permission, operator_permission=operator_permission
        )

    @classmethod
    def service(cls, callers: frozenset[str] | None = None, *, declared: bool = True) -> AccessRule:
        return cls(Kind.SERVICE, callers=callers, declared=declared)

    def describe(self) -> str:
        if self.kind is Kind.PARTNER:
            return f"partner ({self.partner_permission})"
        if self.kind is Kind.OPERATOR:
            return f"operator ({self.operator_permission})"
        if self.kind is Kind.SHARED:
            return f"partner ({self.partner_permission}) or operator ({self.operator_permission})"
        if self.kind is Kind.SERVICE:
            return "service: " + (", ".join(sorted(self.callers)) if self.callers else "any CaaS service")
        if self.kind is Kind.SERVICE_OR_OPERATOR:
            return f"any CaaS service, or operator ({self.operator_permission})"
        if self.kind is Kind.PUBLIC:
            return f"public: {self.reason}"
        return "probe"


# An undeclared route: any CaaS service holding a token for this service.
DEFAULT_RULE = AccessRule.service(declared=False)
_ATTRIBUTE = "caas_access"


def declare(dependency: Callable[..., Any], rule: AccessRule) -> Any:
    """Mark `dependency` as the one that authenticates its route under `rule`."""
    setattr(dependency, _ATTRIBUTE, rule)
    return dependency


def public(reason: str) -> Callable[..., Any]:
    """Dependency of a route anyone may call because something else authenticates it (a
    provider's signature over the body): `dependencies=[Depends(public("..."))]`."""

    async def no_token_needed() -> None:
        return None

    return declare(no_token_needed, AccessRule(Kind.PUBLIC, reason=reason))


def probe() -> Callable[..., Any]:
    async def probe_needs_no_token() -> None:
        return None

    return declare(probe_needs_no_token, AccessRule(Kind.PROBE))


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("send Authorization: Bearer <service token>")
    return token.strip()


async def authenticate_service(request: Request, callers: frozenset[str] | None = None) -> ServiceIdentity:
    """The calling service, verified with this app's ServiceVerifier; 401 without a valid
    token for this service, 403 for a service not among `callers`."""
    state = request.scope.setdefault("state", {})
    identity: ServiceIdentity | None = state.get("service_identity")
    if identity is None:
        settings = request.app.state.settings
        if not settings.internal.enabled:
            # development/test switch only (production refuses it): nobody is asked who they are
            identity = ServiceIdentity(name="unverified", audience=request.app.state.spec.name, token_id="")
        else:
            token = _bearer(request)  # no token at all is not a guess: not counted
            async with counted_failures(request):
                identity = request.app.state.service_verifier.verify(token)
        state["service_identity"] = identity
    if callers is not None and identity.name not in callers and identity.name != "unverified":
        raise forbidden_caller(identity, callers)
    return identity


def service_only(*callers: str) -> Callable[..., Any]:
    """Dependency: the calling service (one of `callers`, or any CaaS service when none)."""
    allowed = frozenset(callers) or None

    async def dependency(request: Request) -> ServiceIdentity:
        return await authenticate_service(request, allowed)

    dependency.__name__ = "require_service" + ("_" + "_".join(sorted(callers)) if callers else "")
    return declare(dependency, AccessRule.service(allowed))


def _declared_rules(route: Any) -> set[AccessRule]:
    found: set[AccessRule] = set()
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        rule = getattr(dependant.call, _ATTRIBUTE, None)
        if isinstance(rule, AccessRule):
            found.add(rule)
        pending.extend(dependant.dependencies)
    return found


def rule_of(route: Any) -> AccessRule:
    """The route's rule: the one its dependencies declare, or DEFAULT_RULE."""
    rules = _declared_rules(route)
    if len(rules) > 1:
        raise RuntimeError(
            f"{sorted(route.methods or ())} {route.path} declares several access rules: "
            f"{', '.join(sorted(rule.describe() for rule in rules))}"
        )
    return next(iter(rules), DEFAULT_RULE)


# route object id -> (the route, its rule): routes are not hashable; the route is held so its
# id cannot be reused by another object while the entry exists
_rules: dict[int, tuple[Any, AccessRule]] = {}


async def access_guard(request: Request) -> None:
    """The app-level dependency: every route's rule is applied; undeclared routes need a service."""
    route = request.scope.get("route")
    held = _rules.get(id(route))
    if held is not None and held[0] is route:
        rule = held[1]
    else:
        rule = rule_of(route) if isinstance(route, APIRoute) else DEFAULT_RULE
        if len(_rules) < 10_000:
            _rules[id(route)] = (route, rule)
    if not rule.declared:
        await authenticate_service(request)


def routes_with_rules(app: FastAPI) -> Iterator[tuple[str, str, AccessRule]]:
    """(method, path, rule) of every API route of `app`, as the guard sees them."""
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        rule = rule_of(context)  # the effective route: its dependant includes the app's guard
        for method in sorted(context.methods or ()):
            yield method, str(context.path_format), rule  # {param}, without converters


def check_rules(app: FastAPI) -> None:
    """Fail at start-up on a route that declares two rules (which one would apply is a guess)."""
    for _ in routes_with_rules(app):
        pass
