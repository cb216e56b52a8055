"""offers service: the ASGI app, serving POST /v1/quotes and GET /v1/pricing."""

from __future__ import annotations

from fastapi import FastAPI

from offchain.domain.offers import PricingPolicy
from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings
from offchain.services.offers.routes import router
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None, *, pricing: PricingPolicy | None = None) -> FastAPI:
    app = create_service_app(SERVICES["offers"], settings, routers=[router])
    app.state.pricing = pricing or PricingPolicy()
    return app
