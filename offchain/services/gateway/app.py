"""gateway service (8000): the partner REST API /v1."""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.auth import JwtVerifier
from offchain.platform.ratelimit import PartnerRateLimiter, quota_headers
from offchain.platform.settings import Settings, get_settings
from offchain.rails.sme.auth import JwksClient
from offchain.services.analytics import routes as analytics_routes
from offchain.services.collections import routes as collections_routes
from offchain.services.disbursement.routes import router as payout_routes
from offchain.services.gateway import health, paystack_webhooks, sme_events
from offchain.services.gateway.routes import router
from offchain.services.notifications import routes as notifications_routes
from offchain.services.registry import SERVICES
from offchain.services.repayment.routes import router as payment_routes


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        SERVICES["gateway"],
        settings,
        routers=[router, sme_events.router, paystack_webhooks.router, payout_routes, payment_routes],
        response_headers=quota_headers,
    )
    app.include_router(collections_routes.router)  # collections:8005's API
    app.include_router(analytics_routes.router)  # analytics:8009's API
    app.include_router(notifications_routes.router)  # partner webhooks API (notifications:8007)
    health.install(app)  # GET /v1/health: health:8010's HealthStatus, without `detail`
    # HS256 with the shared secret, and RS256 against the SME auth service's JWKS when one is
    # configured (JWKS_URL, or the SME auth/simulator URL); keys are cached and refetched on rotation.
    app.state.jwt_verifier = JwtVerifier(
        hs256_secret=settings.auth.jwt_secret.get_secret_value() or None,
        jwks=JwksClient.from_settings(settings),
        audience=settings.auth.audience,
        issuer=settings.auth.issuer,
        cache_size=settings.auth.token_cache_size,
        cache_s=settings.auth.token_cache_s,
    )
    app.state.rate_limiter = PartnerRateLimiter(settings.auth.rate_limits) if settings.redis.url else None
    return app
