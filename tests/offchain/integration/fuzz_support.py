"""What a Schemathesis run of a service needs: its app on real dependencies, and its credentials.

`service_headers` is the one place a fuzz run gets the credentials it sends to each service.
Today every service that checks a token takes a partner token (every permission); when the
internal services require a service identity (the "trust" work), the identity for those services
is returned here and no fuzz test changes.
"""

from __future__ import annotations

import os
import uuid

from fastapi import FastAPI

from offchain.platform import auth
from offchain.platform.auth import JwtVerifier
from offchain.platform.settings import Settings
from offchain.services.registry import create_app

# examples per operation (the coverage phase's own cases come on top); CI keeps the default
EXAMPLES = int(os.environ.get("CAAS_FUZZ_EXAMPLES", "12"))
PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000f022")


def service_headers(service: str, settings: Settings) -> dict[str, str]:
    """The credentials a fuzz run sends to `service` (swap here for service identities)."""
    del service  # one kind of credential for every service, for now
    token = auth.issue_token(settings.auth.jwt_secret.get_secret_value(), partner_id=PARTNER)
    return {"Authorization": f"Bearer {token}"}


def roomy(settings: Settings) -> Settings:
    """Hundreds of generated calls per partner would otherwise hit the real quotas and turn the
    run into a test of 429s (test_gateway_api.py covers the limiter itself)."""
    return settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"rate_limits": {"read": "1000000/minute", "write": "1000000/minute"}}
            )
        }
    )


def fuzz_app(service: str, settings: Settings) -> FastAPI:
    app = create_app(service, roomy(settings))
    if not hasattr(app.state, "jwt_verifier"):
        # Only the gateway builds a token verifier today; a token-checking route of another
        # service answered 500 ('State' object has no attribute 'jwt_verifier', issue 15, the
        # "trust" work: token verification on every service). Until that lands, the fuzz run
        # gives the service the verifier the gateway would, so it fuzzes the routes themselves.
        app.state.jwt_verifier = JwtVerifier(
            hs256_secret=settings.auth.jwt_secret.get_secret_value() or None,
            jwks=None,
            audience=settings.auth.audience,
            issuer=settings.auth.issuer,
        )
    return app
