"""disbursement service (8003): pays out approved loans through the rail, crash-safe and once.

Wiring only: the routes (routes.py; GET /v1/payouts/{loan_id}, POST /v1/payouts/{loan_id}/retry
for operators) and the background jobs (workers.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from offchain.platform.app import create_service_app
from offchain.platform.settings import Settings
from offchain.services.disbursement.routes import router
from offchain.services.disbursement.workers import approvals, confirmations, payout_worker, transfer_webhooks
from offchain.services.registry import SERVICES


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        SERVICES["disbursement"],
        settings,
        routers=[router],
        background={
            "approvals": approvals,
            "payouts": payout_worker,
            "transfer_webhooks": transfer_webhooks,
            "confirmations": confirmations,
        },
    )
