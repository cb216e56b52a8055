"""health:8010 routes: GET /v1/health, for the CaaS services and for operators (it names every
dependency, its latency and what is failing: not for the public; the gateway's /v1/health is
the one a deployment publishes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from offchain.platform import auth
from offchain.platform.deps import ResourcesDep
from offchain.services.health.schemas import HealthStatus
from offchain.services.health.status import platform_health

router = APIRouter(prefix="/v1", tags=["health"])


@router.get(
    "/health",
    response_model=HealthStatus,
    dependencies=[Depends(auth.service_or_operator(auth.OPERATIONS_READ))],
)
async def get_health(resources: ResourcesDep, request: Request) -> dict[str, Any]:
    """Status of SME services, CaaS services, dependencies and queues (always 200; read the statuses)."""
    return await platform_health(resources, request.app.state.health_metrics)
