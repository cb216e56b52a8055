"""analytics service (8009): portfolio figures per partner, as JSON, CSV or SVG charts."""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings, get_settings
from offchain.services.analytics.routes import router
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_service_app(SERVICES["analytics"], settings, routers=[router])
