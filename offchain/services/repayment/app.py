"""repayment service (8004): Paystack and SME payment intake, matching, on-chain recording, reversals.

Wiring only: the routes (routes.py, notice_routes.py) and the background jobs (workers.py).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from offchain.platform.app import AppResources, create_service_app
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.services.repayment import notices
from offchain.services.repayment.notice_routes import router as notice_router
from offchain.services.repayment.routes import router
from offchain.services.repayment.workers import chain_worker, held_sweeper, intake_worker


def create_app(settings: Settings | None = None) -> FastAPI:
    notice_metrics = notices.NoticeMetrics()

    async def intake(resources: AppResources, stop: asyncio.Event) -> None:
        await intake_worker(resources, stop, metrics=notice_metrics)

    app = create_service_app(
        SERVICES["repayment"],
        settings,
        routers=[router, notice_router],
        background={"intake": intake, "chain": chain_worker, "held": held_sweeper},
    )
    notice_metrics.register(app.state.metrics.registry)
    return app
