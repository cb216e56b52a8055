"""notifications service (8007): the partner webhook API (also served by the gateway), and its
background jobs -- event intake from the outbox, the signed delivery worker, borrower messages."""

from __future__ import annotations

import functools

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings, get_settings
from offchain.services.notifications.borrower import run_borrower_messages
from offchain.services.notifications.delivery import run_delivery_worker
from offchain.services.notifications.intake import run_event_intake
from offchain.services.notifications.metrics import NotificationMetrics
from offchain.services.notifications.routes import router
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = NotificationMetrics()
    app = create_service_app(
        SERVICES["notifications"],
        settings,
        routers=[router],
        background={
            "event_intake": functools.partial(run_event_intake, metrics=metrics),
            "webhook_delivery": functools.partial(run_delivery_worker, metrics=metrics),
            "borrower_messages": functools.partial(run_borrower_messages, metrics=metrics),
        },
    )
    metrics.register(app.state.metrics.registry)
    app.state.notification_metrics = metrics
    return app
