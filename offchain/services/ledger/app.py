"""ledger service (8006): the double-entry journal's read API and reconciliation."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from offchain.platform.app import AppResources, BackgroundTask, create_service_app
from offchain.platform.logging import get_logger
from offchain.platform.settings import Environment, Settings, get_settings
from offchain.platform.stopping import wait_or_stop
from offchain.services.ledger import usecases
from offchain.services.ledger.routes import router
from offchain.services.registry import SERVICES

log = get_logger(__name__)


def reconciliation_job(metrics: dict[str, usecases.LedgerMetrics]) -> BackgroundTask:
    async def job(resources: AppResources, stop: asyncio.Event) -> None:
        """Reconcile every `ledger.reconcile_interval_s` seconds until the service stops."""
        interval = resources.settings.ledger.reconcile_interval_s
        while not stop.is_set():
            report = await usecases.run_reconciliation(
                resources, trigger="schedule", metrics=metrics.get("ledger")
            )
            if report is None:
                log.info("ledger.reconciliation.skipped", reason="another replica is running one")
            await wait_or_stop(stop, interval)

    return job


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    enabled = settings.ledger.reconcile_enabled
    if enabled is None:
        enabled = settings.env is not Environment.TEST
    # the gauges live in the app's registry, which exists only once the app does: the job finds
    # them here when it runs
    metrics: dict[str, usecases.LedgerMetrics] = {}
    background = {"reconciliation": reconciliation_job(metrics)} if enabled and settings.database.url else {}
    app = create_service_app(SERVICES["ledger"], settings, routers=[router], background=background)
    metrics["ledger"] = app.state.ledger_metrics = usecases.LedgerMetrics(app.state.metrics.registry)
    return app
