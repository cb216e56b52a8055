"""gateway service (8000): the partner REST API /v1, and the operators' platform-wide routes.

Partner and operator tokens are verified, and partner calls rate-limited, by the app factory
(offchain.platform.app): HS256 with the shared secret, RS256 against the SME auth service's
JWKS when one is configured. The gateway is the one port a deployment publishes
(docker-compose.yml), so every route partners or operators need is served here too.
"""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings, get_settings
from offchain.services.analytics import routes as analytics_routes
from offchain.services.collections import routes as collections_routes
from offchain.services.disbursement.routes import router as payout_routes
from offchain.services.gateway import console, operations, paystack_webhooks, sme_events
from offchain.services.gateway.committee import routes as committee_routes
from offchain.services.gateway.routes import router
from offchain.services.health import gateway_proxy as health
from offchain.services.ledger.routes import router as ledger_routes
from offchain.services.notifications import operator_routes as notification_operator_routes
from offchain.services.notifications import routes as notifications_routes
from offchain.services.offers import partner_routes as offer_routes
from offchain.services.registry import SERVICES
from offchain.services.repayment.notice_routes import router as notice_routes
from offchain.services.repayment.routes import router as payment_routes


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        SERVICES["gateway"],
        settings,
        routers=[
            router,
            offer_routes.router,  # offers:8002's partner API: accepting an offer
            committee_routes.router,  # the committee's EIP-712 approvals of a loan
            sme_events.router,
            paystack_webhooks.router,
            payout_routes,
            payment_routes,
            notice_routes,  # operators: payment notices Paystack could not confirm
            collections_routes.router,  # collections:8005's API
            analytics_routes.router,  # analytics:8009's API
            notifications_routes.router,  # partner webhooks API (notifications:8007)
            ledger_routes,  # ledger:8006's API: partners' statements, operators' trial balance
            operations.router,  # operators: dead letters, audit log
            notification_operator_routes.router,  # operators: a webhook event's replay across partners
        ],
    )
    app.state.paystack_metrics = paystack_webhooks.PaystackWebhookMetrics(app.state.metrics.registry)
    health.install(app)  # GET /v1/health: health:8010's HealthStatus (detail for operators)
    console.install(app)  # /console: signer, auditor and operator pages (docs/CONSOLES.md)
    return app
