"""`GET /v1/health` on the gateway (DESIGN §4): the platform's HealthStatus, as health:8010 has it.

A proxy, not a second evaluation: health:8010 owns the probes, the thresholds (HEALTH__*) and
the gauges; the gateway asks it and passes the answer on. One answer serves every caller for
`CACHE_S` (a single request in flight at a time), so partners polling the public API cannot turn
into a probe of every service and dependency per call.

Who may read it: any caller with a valid token (a partner's today) gets every entry's status and
latency; the `detail` strings (they can name internal hosts, addresses and errors) are for
operators only, and are dropped until operator identity exists. health:8010 unreachable: a 503
`dependency-unavailable` problem with Retry-After.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import asyncio
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request

from offchain.platform.auth import Principal
from offchain.platform.problems import Problem
from offchain.services.gateway.routes import limited
from offchain.services.health.schemas import HealthStatus, HealthSummary
from offchain.services.registry import SERVICES

router = APIRouter(prefix="/v1", tags=["health"])
CACHE_S = 2.0
GROUPS = ("smeServices", "caasServices", "dependencies", "queues")
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}

# auth: operator -- `detail` is for operators (OPERATIONS_READ); until that identity exists any
# valid token reads the summary and nobody gets `detail` here (health:8010 has it, internally)
Reader = Annotated[Principal, Depends(limited(None, "read"))]


class _Cached:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.at = 0.0
        self.body: dict[str, Any] | None = None


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """HealthStatus without `detail` (validated on the way: health:8010's shape, nothing else)."""
    checked = HealthStatus.model_validate(status).model_dump()
    for group in GROUPS:
        for entry in checked[group].values():
            entry.pop("detail", None)
    return checked


async def _fetch(request: Request) -> dict[str, Any]:
    resources = request.app.state.resources
    settings = resources.settings
    url = settings.service_url("health", SERVICES["health"].port) + "/v1/health"
    # health:8010 probes everything at once, each under probe_timeout_s
    timeout = settings.services.probe_timeout_s + 3.0
    try:
        # auth: service -- health:8010 is internal; the trust work gives this call its identity
        answer = await resources.http.get(url, timeout=timeout)
        answer.raise_for_status()
        return summary(answer.json())
    except (httpx.HTTPError, ValueError) as error:
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Health service unavailable",
            detail=f"health:8010 did not answer with a HealthStatus ({type(error).__name__})",
            headers={"Retry-After": "5"},
        ) from error


@router.get(
    "/health",
    response_model=HealthSummary,
    responses={503: {"description": "health:8010 did not answer (Retry-After)", **PROBLEM}},
    summary="The platform's HealthStatus (health:8010): status and latency of everything",
)
async def get_health(request: Request, principal: Reader) -> dict[str, Any]:
    cache: _Cached = request.app.state.health_cache
    if cache.body is None or time.monotonic() - cache.at > CACHE_S:
        async with cache.lock:  # one request to health:8010 at a time; the others take its answer
            if cache.body is None or time.monotonic() - cache.at > CACHE_S:
                cache.body = await _fetch(request)
                cache.at = time.monotonic()
    return cache.body


def install(app: Any) -> None:
    app.state.health_cache = _Cached()
    app.include_router(router)
