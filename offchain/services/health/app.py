"""health service: the ASGI app, serving GET /v1/health, and a monitor that re-evaluates the
platform every HEALTH__MONITOR_INTERVAL_S so its Prometheus gauges stay current for alerting."""

from __future__ import annotations

import asyncio
import functools

from fastapi import FastAPI

from offchain.platform.app import AppResources, create_service_app
from offchain.platform.logging import get_logger
from offchain.platform.settings import Settings
from offchain.platform.stopping import wait_or_stop
from offchain.services.health.metrics import HealthMetrics
from offchain.services.health.routes import router
from offchain.services.health.status import platform_health
from offchain.services.registry import SERVICES

log = get_logger(__name__)
GROUPS = ("smeServices", "caasServices", "dependencies", "queues")


async def monitor(resources: AppResources, stop: asyncio.Event, *, metrics: HealthMetrics) -> None:
    previous = None
    while not stop.is_set():
        report = await platform_health(resources, metrics)
        if report["status"] != previous:
            # one line per change of the overall status, naming what is not healthy
            unhealthy = {
                f"{group}.{name}": entry["detail"] or entry["status"]
                for group in GROUPS
                for name, entry in report[group].items()
                if entry["status"] != "healthy"
            }
            log.info("health.changed", status=report["status"], previous=previous, unhealthy=unhealthy)
            previous = report["status"]
        await wait_or_stop(stop, resources.settings.health.monitor_interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    metrics = HealthMetrics()
    app = create_service_app(
        SERVICES["health"],
        settings,
        routers=[router],
        background={"monitor": functools.partial(monitor, metrics=metrics)},
    )
    app.state.health_metrics = metrics.register(app.state.metrics.registry)
    return app
