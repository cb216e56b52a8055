"""health service: the ASGI app, serving GET /v1/health."""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings
from offchain.services.health.routes import router
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SERVICES["health"], settings, routers=[router])
