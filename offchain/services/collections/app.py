"""collections service (8005): the close of business, promises to pay, write-off proposals.

Wiring only: the routes (routes.py) and the daily close of business (workers.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings, get_settings
from offchain.services.collections.routes import router
from offchain.services.collections.workers import daily_cob
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_service_app(
        SERVICES["collections"], settings, routers=[router], background={"daily_cob": daily_cob}
    )
