"""The success side of every service's OpenAPI, in the shape a partner can generate a client from.

(The error side -- the Problem schema on every error response -- is offchain.platform.openapi's.)
One post-processing step, installed by the app factory on every service (`install`), adds what
FastAPI cannot see in the routes themselves:
- the bearer security scheme (`bearerAuth`, a JWT from the SME auth service) on every operation
  whose dependencies authenticate the caller, with the credit permission it needs
  (`x-required-permission`); webhooks and probes stay open;
- the `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` response headers (and
  `Retry-After` on 429) on every operation counted against a partner's quota;
- operation ids a generated client names its functions after: the route function's name
  (`submit_application`, not `submit_application_v1_applications_post`) where it is unique.

Routes declare the rest themselves, so it sits where it is honoured: `IdempotencyKey` is the
`Idempotency-Key` header of the operations that honour one, and every answer has a response
model (lists: offchain.platform.pages.Page). Who may call an operation, and whether it is
counted, come from its access rule (offchain.platform.access).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import FastAPI, Header, routing

BEARER = "bearerAuth"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "A JWT issued by the SME platform's auth service (HS256 or RS256 via its JWKS) with "
    "`sub`, `partner_id` and `creditPermissions`; `caas token` prints a development one.",
}
RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Limit": {
        "description": "requests allowed in the current window for this partner and route class",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "requests left in the current window",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "seconds until the window resets",
        "schema": {"type": "integer"},
    },
}
RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}

IDEMPOTENCY_KEY_DESCRIPTION = (
    "1-255 printable ASCII characters chosen by the client, scoped to its partner. The first answer to a "
    "key is kept for at least 72 hours and replayed to a repeat with the same body (header "
    "`Idempotent-Replayed: true`); the same key with another body is a 409, and one still being "
    "processed a 409 with Retry-After. A server error releases the key for a retry."
)
# Declared where honoured (`idempotency_key: IdempotencyKey = None`); read by
# offchain.platform.idempotency, which answers a bad key with 400 (so no validation here).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=IDEMPOTENCY_KEY_DESCRIPTION,
        json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    ),
]


def _needs(route: Any) -> tuple[bool, str | None, bool]:
    """(authenticated, the permission required, rate limited), from the route's access rule
    (offchain.platform.access: the same rule the guard enforces, so the document cannot drift)."""
    from offchain.platform.access import Kind, rule_of

    rule = rule_of(route)
    if rule.kind in (Kind.PUBLIC, Kind.PROBE):
        return False, None, False
    permission = rule.partner_permission or rule.operator_permission
    # partner calls are counted against the partner's quota; operators and services are not
    return True, permission, rule.kind in (Kind.PARTNER, Kind.SHARED)


def complete(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Add security and rate-limit headers to a schema FastAPI generated from `routes`."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = SECURITY_SCHEME
    headers = components.setdefault("headers", {})
    headers.update(RATE_LIMIT_HEADERS)
    headers["Retry-After"] = RETRY_AFTER
    # included routers stay nested in the app's routes: FastAPI's own iterator flattens them
    api_routes = [
        route
        for route in routing.iter_route_contexts(routes)
        if isinstance(route.original_route, routing.APIRoute) and route.include_in_schema
    ]
    names = Counter(route.name for route in api_routes for _ in route.methods or ())
    for route in api_routes:
        authenticated, permission, limited = _needs(route)
        for method in route.methods or ():
            operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if names[route.name] == 1:
                operation["operationId"] = route.name
            if authenticated:
                operation["security"] = [{BEARER: []}]
                if permission:
                    operation["x-required-permission"] = permission
                    note = f"Needs the `{permission}` permission."
                    description = operation.get("description") or ""
                    if note not in description:
                        operation["description"] = f"{description}\n\n{note}".strip()
            if limited:
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    if code.startswith("2") or code == "429":
                        named = response.setdefault("headers", {})
                        for name in RATE_LIMIT_HEADERS:
                            named.setdefault(name, {"$ref": f"#/components/headers/{name}"})
                        if code == "429":
                            named.setdefault("Retry-After", {"$ref": "#/components/headers/Retry-After"})
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document. It wraps whatever `app.openapi` is
    (FastAPI's, or another step's), so the steps compose in any order; FastAPI builds a new
    document when its routes change, and each new one is completed once."""
    generate = app.openapi
    completed: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in completed:
            completed.clear()
            completed[id(schema)] = complete(schema, list(app.routes))
        return completed[id(schema)]

    app.openapi = openapi  # type: ignore[method-assign]
