"""repayment service: the ASGI app. Its business routes are added here as they are built."""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SERVICES["repayment"], settings)
