"""What a Schemathesis run of a service needs: its app on real dependencies, and its credentials.

`credentials` is the one place a fuzz run decides what it sends with each operation: the
identity the operation's own access rule asks for (offchain.platform.access), so the generated
requests get past authentication and exercise the routes themselves. Refusals of the wrong
identity are the permission matrix's (test_permission_matrix.py).
"""

from __future__ import annotations

import os
import uuid
from functools import cache

from fastapi import FastAPI
from identities import SERVICE_KEY, operator_headers
from identities import service_headers as service_token_headers

from offchain.platform import auth
from offchain.platform.access import AccessRule, Kind, routes_with_rules
from offchain.platform.settings import Settings
from offchain.stack.composition import create_app

# examples per operation (the coverage phase's own cases come on top); CI keeps the default
EXAMPLES = int(os.environ.get("CAAS_FUZZ_EXAMPLES", "12"))
PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000f022")


@cache
def _rules(service: str) -> dict[tuple[str, str], AccessRule]:
    return {(method, path): rule for method, path, rule in routes_with_rules(create_app(service))}


def credentials(service: str, method: str, path: str, settings: Settings) -> dict[str, str]:
    """What a fuzz run sends to `method path` of `service`: the identity its rule asks for."""
    rule = _rules(service).get((method.upper(), path))
    secret = settings.auth.jwt_secret.get_secret_value()
    if rule is None or rule.kind in (Kind.PUBLIC, Kind.PROBE):
        return {}
    if rule.kind in (Kind.OPERATOR, Kind.SERVICE_OR_OPERATOR):
        return operator_headers("ops-fuzz", secret=secret)
    if rule.kind is Kind.SERVICE:
        caller = min(rule.callers) if rule.callers else "gateway"
        return service_token_headers(caller, service, key=SERVICE_KEY)
    token = auth.issue_token(secret, partner_id=PARTNER)
    return {"Authorization": f"Bearer {token}"}


def roomy(settings: Settings) -> Settings:
    """Hundreds of generated calls per partner would otherwise hit the real quotas, and
    Schemathesis' invalid-credential probes the per-address limit on failed authentications,
    turning the run into a test of 429s (test_trust_boundaries.py covers both limiters)."""
    return settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"rate_limits": {"read": "1000000/minute", "write": "1000000/minute"}}
            ),
            "limits": settings.limits.model_copy(update={"failed_auth": "1000000/minute"}),
        }
    )


def fuzz_app(service: str, settings: Settings) -> FastAPI:
    return create_app(service, roomy(settings))
