"""`GET /v1/health` on the gateway (DESIGN §4): the platform's HealthStatus, as health:8010 has it.

A proxy, not a second evaluation: health:8010 owns the probes, the thresholds (HEALTH__*) and
the gauges; the gateway asks it and passes the answer on. One answer serves every caller for
`CACHE_S` (a single request in flight at a time), so partners polling the public API cannot turn
into a probe of every service and dependency per call.

Who may read it: operators (`caas:operations:read`) get the whole HealthStatus; partners
(`credit:loan:read`: whoever reads loans may ask whether the platform serving them is well) get
every entry's status and latency without the `detail` strings, which can name internal hosts,
addresses and errors. The gateway asks health:8010 with its own service identity.
health:8010 unreachable: a 503 `dependency-unavailable` problem with Retry-After.
The gateway app installs it (`install`); it lives with health:8010, whose schemas it speaks.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import asyncio
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request

from offchain.platform import auth
from offchain.platform.problems import Problem
from offchain.platform.service_auth import ServiceTokens
from offchain.services.health.schemas import HealthStatus, HealthSummary
from offchain.services.registry import SERVICES

router = APIRouter(prefix="/v1", tags=["health"])
CACHE_S = 2.0
GROUPS = ("smeServices", "caasServices", "dependencies", "queues")
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}

Reader = Annotated[auth.Actor, Depends(auth.partner_or_operator(auth.LOAN_READ, auth.OPERATIONS_READ))]


class _Cached:
    def __init__(self, tokens: ServiceTokens | None) -> None:
        self.lock = asyncio.Lock()
        self.at = 0.0
        self.body: dict[str, Any] | None = None  # the whole HealthStatus, detail included
        self.tokens = tokens


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """HealthStatus without `detail`, what partners read."""
    checked = {**status}
    for group in GROUPS:
        checked[group] = {
            name: {k: v for k, v in entry.items() if k != "detail"} for name, entry in status[group].items()
        }
    return checked


async def _fetch(request: Request) -> dict[str, Any]:
    resources = request.app.state.resources
    settings = resources.settings
    url = settings.service_url("health", SERVICES["health"].port) + "/v1/health"
    # health:8010 probes everything at once, each under probe_timeout_s
    timeout = settings.services.probe_timeout_s + 3.0
    cache: _Cached = request.app.state.health_cache
    if cache.tokens is None:
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Health service unavailable",
            detail="SERVICE_KEY is not set: the gateway cannot ask health:8010",
            headers={"Retry-After": "5"},
        )
    try:
        answer = await resources.http.get(url, timeout=timeout, headers=cache.tokens.headers("health"))
        answer.raise_for_status()
        # health:8010's shape, nothing else
        return HealthStatus.model_validate(answer.json()).model_dump()
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
    response_model=HealthStatus | HealthSummary,
    responses={503: {"description": "health:8010 did not answer (Retry-After)", **PROBLEM}},
    summary="The platform's HealthStatus (health:8010); `detail` for operators only",
)
async def get_health(request: Request, actor: Reader) -> dict[str, Any]:
    cache: _Cached = request.app.state.health_cache
    if cache.body is None or time.monotonic() - cache.at > CACHE_S:
        async with cache.lock:  # one request to health:8010 at a time; the others take its answer
            if cache.body is None or time.monotonic() - cache.at > CACHE_S:
                cache.body = await _fetch(request)
                cache.at = time.monotonic()
    return cache.body if isinstance(actor, auth.Operator) else summary(cache.body)


def install(app: Any) -> None:
    settings = app.state.settings
    tokens = (
        ServiceTokens.from_settings(settings, caller="gateway") if settings.internal.service_key else None
    )
    app.state.health_cache = _Cached(tokens)
    app.include_router(router)
