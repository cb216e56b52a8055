"""The shared app factory: every service is a FastAPI app with the same operational surface.

    /health/live   the process answers
    /health/ready  its dependencies answer (SELECT 1, PING, eth_blockNumber); 503 with details if not
    /metrics       Prometheus, this service's own registry
plus X-Request-ID handling, JSON access logs and problem+json errors. Connections are opened
lazily, so a service starts (and says "not ready") while a dependency is still coming up.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis

from offchain.platform import openapi_client
from offchain.platform.access import access_guard, check_rules, probe
from offchain.platform.api_description import install_api_description
from offchain.platform.auth import JwtVerifier
from offchain.platform.auth_failures import FailedAuthLimiter
from offchain.platform.body_limit import BodyLimitMiddleware
from offchain.platform.db import Database
from offchain.platform.logging import configure_logging, get_logger
from offchain.platform.metrics import ServiceMetrics
from offchain.platform.middleware import RequestContextMiddleware, ResponseHeaders
from offchain.platform.openapi import install_error_schemas
from offchain.platform.probes import (
    NOT_CONFIGURED,
    ProbeResult,
    probe_chain,
    probe_database,
    probe_redis,
    resolved,
)
from offchain.platform.problems import install_problem_handlers
from offchain.platform.ratelimit import PartnerRateLimiter, quota_headers
from offchain.platform.redis import create_redis
from offchain.platform.service import Dependency, ServiceSpec
from offchain.platform.service_auth import ServiceVerifier
from offchain.platform.settings import Settings, get_settings
from offchain.platform.stopping import wait_or_stop
from offchain.platform.tracing import REQUEST_ID_HOOKS, instrument_app, untraced_requests

log = get_logger(__name__)

# The one service partners reach: its API description is their manual, readable by anyone.
PARTNER_FACING_SERVICE = "gateway"


@dataclass
class AppResources:
    """What a running service holds: created in the lifespan, closed when it ends."""

    spec: ServiceSpec
    settings: Settings
    http: httpx.AsyncClient
    db: Database | None = None
    redis: Redis | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # for services to hang their own on
    # the app's offchain.chain.client.ChainClient (the deployment, loaded once, and the JSON-RPC
    # client), made on first use by chain_of: the platform sits below the chain layer
    chain: Any = None

    @classmethod
    def open(cls, spec: ServiceSpec, settings: Settings) -> AppResources:
        application_name = f"caas-{spec.name}"
        return cls(
            spec=spec,
            settings=settings,
            # Every outbound call has a timeout; probes pass tighter ones.
            # X-Request-ID rides along on every call to another service (traceparent too, by the
            # httpx instrumentation of offchain.platform.tracing)
            http=httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0), event_hooks=REQUEST_ID_HOOKS),
            db=Database.from_settings(settings.database, application_name=application_name)
            if spec.uses_database and settings.database.url
            else None,
            redis=create_redis(settings.redis, client_name=application_name)
            if spec.uses_redis and settings.redis.url
            else None,
        )

    async def readiness(self) -> dict[str, ProbeResult]:
        timeout = self.settings.services.probe_timeout_s
        slow_ms = self.settings.services.slow_probe_ms
        checks: dict[str, Awaitable[ProbeResult]] = {}
        for dependency in sorted(self.spec.dependencies):
            if dependency is Dependency.DATABASE:
                checks["database"] = (
                    probe_database(self.db.engine, timeout_s=timeout, slow_ms=slow_ms)
                    if self.db
                    else resolved(NOT_CONFIGURED)
                )
            elif dependency is Dependency.REDIS:
                checks["redis"] = (
                    probe_redis(self.redis, timeout_s=timeout, slow_ms=slow_ms)
                    if self.redis
                    else resolved(NOT_CONFIGURED)
                )
            elif dependency is Dependency.CHAIN:
                rpc = self.settings.chain.rpc_url
                checks["blockchain"] = (
                    probe_chain(self.http, rpc, timeout_s=timeout, slow_ms=slow_ms)
                    if rpc
                    else resolved(NOT_CONFIGURED)
                )
        results = await asyncio.gather(*checks.values())
        return dict(zip(checks, results, strict=True))

    async def close(self) -> None:
        await self.http.aclose()
        if self.chain is not None:
            await self.chain.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.db is not None:
            await self.db.dispose()


# A long-running job of a service (outbox relay, indexer, sender, consumers); it returns when
# `stop` is set. The factory restarts it with backoff if it raises.
BackgroundTask = Callable[[AppResources, asyncio.Event], Awaitable[None]]


async def _supervise(name: str, task: BackgroundTask, res: AppResources, stop: asyncio.Event) -> None:
    delay = 1.0
    while not stop.is_set():
        try:
            await task(res, stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background.crashed", task=name, restart_in_s=delay)
            await wait_or_stop(stop, delay)
            delay = min(delay * 2, 60.0)


class LiveOut(BaseModel):
    status: Literal["alive"]
    service: str


class ProbeOut(BaseModel):
    status: Literal["healthy", "degraded", "down"]
    latency_ms: float | None = None
    detail: str | None = None


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    service: str
    checks: dict[str, ProbeOut]


def health_router() -> APIRouter:
    # probes and scrapes answer anyone: they say whether the process and its dependencies are up
    router = APIRouter(tags=["operations"], dependencies=[Depends(probe())])

    @router.get("/health/live", response_model=LiveOut)
    async def live(request: Request) -> dict[str, str]:
        return {"status": "alive", "service": request.app.state.spec.name}

    @router.get(
        "/health/ready",
        responses={
            200: {"description": "every dependency answers", "model": ReadyOut},
            503: {"description": "a dependency it needs is down", "model": ReadyOut},
        },
    )
    async def ready(request: Request) -> JSONResponse:
        resources: AppResources = request.app.state.resources
        results = await resources.readiness()
        ok = all(result.status != "down" for result in results.values())
        body = {
            "status": "ready" if ok else "not_ready",
            "service": resources.spec.name,
            "checks": {name: result.as_dict() for name, result in results.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        service_metrics: ServiceMetrics = request.app.state.metrics
        return Response(service_metrics.render(), media_type=service_metrics.content_type)

    return router


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, routes, models, ABIs: ~1M objects) out of
    the collector's sight. Otherwise each full collection walks all of it: measured on the
    gateway under load, 200+ ms pauses every few seconds that stalled every request in flight
    and set its p99. What is frozen lives as long as the process anyway. No collection first:
    freezing is a cheap list splice, a full collection of that heap takes ~0.2 s (and start-up
    leaves little garbage)."""
    gc.freeze()


def create_service_app(
    spec: ServiceSpec,
    settings: Settings | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    background: dict[str, BackgroundTask] | None = None,
    response_headers: ResponseHeaders | None = quota_headers,
    upload_paths: Collection[str] = (),
    known_services: Collection[str] | None = None,
) -> FastAPI:
    """A service's app. Every route gets the access guard (offchain.platform.access): partner,
    operator, public or probe routes as they declare, every other one only for a CaaS service
    with a token for this service. Every request body is limited (offchain.platform.body_limit)
    and partner calls are rate-limited wherever they are served."""
    settings = settings or get_settings()
    configure_logging(settings.log.level, settings.log.format)
    tasks = dict(background or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The lifespan runs in its own task: this binding reaches its logs and background jobs.
        structlog.contextvars.bind_contextvars(service=spec.name)
        resources = AppResources.open(spec, settings)
        app.state.resources = resources
        stop = asyncio.Event()
        running = [
            asyncio.create_task(_supervise(name, job, resources, stop), name=f"{spec.name}:{name}")
            for name, job in tasks.items()
        ]
        log.info("service.started", port=spec.port, background=sorted(tasks))
        _freeze_startup_heap()
        try:
            yield
        finally:
            stop.set()
            if running:
                _, pending = await asyncio.wait(running, timeout=10)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await resources.close()
            log.info("service.stopped")

    app = FastAPI(
        title=f"CaaS {spec.name}",
        description=spec.owns,
        version="0.1.0",
        lifespan=lifespan,
        # served behind the access guard instead (offchain.platform.api_description)
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans (offchain.platform.tracing); probes and scrapes every
        # few seconds are no one's trace, and request metrics are ours (ServiceMetrics)
        telemetry={"exclude": untraced_requests(settings.tracing), "metrics": False},
        # one guard on every route this app has or will have: see offchain.platform.access
        dependencies=[Depends(access_guard)],
    )
    app.state.spec = spec
    app.state.settings = settings
    app.state.metrics = ServiceMetrics(spec.name)
    install_identities(app, settings, known_services)
    instrument_app(app, settings.tracing, spec.name)
    # inside the request context (413s carry a request id and are logged), before everything else
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.limits.max_body_bytes,
        upload_paths=upload_paths,
        max_upload_bytes=settings.limits.max_upload_bytes,
    )
    app.add_middleware(
        RequestContextMiddleware,
        service=spec.name,
        metrics=app.state.metrics,
        access_log=settings.log.access_log,
        log_format=settings.log.format,
        response_headers=response_headers,
    )
    install_problem_handlers(app)
    openapi_client.install(app)
    install_error_schemas(app)
    # Routes are matched in the order they were included, one by one: the service's own API
    # first, probes and scrapes (a few a minute) after it.
    for router in routers:
        app.include_router(router)
    app.include_router(health_router())
    install_api_description(app, public_description=spec.name == PARTNER_FACING_SERVICE)
    check_rules(app)
    return app


def install_identities(app: FastAPI, settings: Settings, known_services: Collection[str] | None) -> None:
    """Every service verifies tokens the same way: partner and operator JWTs of the SME auth
    service (HS256 secret, RS256 via JWKS), service tokens for this service, the partner rate
    limiter and the failed-authentication limiter (both in Redis, when there is one)."""
    from offchain.platform.jwks import JwksClient

    if known_services is None:
        from offchain.platform.service_map import SERVICES

        known_services = SERVICES
    app.state.jwt_verifier = JwtVerifier(
        hs256_secret=settings.auth.jwt_secret.get_secret_value() or None,
        jwks=JwksClient.from_settings(settings),
        audience=settings.auth.audience,
        issuer=settings.auth.issuer,
        cache_size=settings.auth.token_cache_size,
        cache_s=settings.auth.token_cache_s,
    )
    key = settings.internal.service_key
    app.state.service_verifier = ServiceVerifier(
        key.get_secret_value() if key else None,
        audience=app.state.spec.name,
        known_services=known_services,
        max_ttl_s=settings.internal.max_token_ttl_s,
        leeway_s=settings.internal.leeway_s,
    )
    app.state.rate_limiter = PartnerRateLimiter(settings.auth.rate_limits) if settings.redis.url else None
    app.state.auth_failures = FailedAuthLimiter(settings.limits.failed_auth) if settings.redis.url else None
