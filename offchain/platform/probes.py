"""Dependency probes shared by `/health/ready` and health:8010's `/v1/health`.

Each probe really touches its dependency (SELECT 1, PING, eth_blockNumber, GET) under a timeout
and returns a `ProbeResult` in DESIGN's HealthStatus entry shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Status = Literal["healthy", "degraded", "down"]
_RANK: dict[str, int] = {"healthy": 0, "degraded": 1, "down": 2}


@dataclass(frozen=True)
class ProbeResult:
    status: Status
    latency_ms: float | None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "latency_ms": self.latency_ms, "detail": self.detail}


NOT_CONFIGURED = ProbeResult("down", None, "not configured")


async def resolved(result: ProbeResult) -> ProbeResult:
    """A probe whose answer is known without asking (e.g. nothing configured to ask)."""
    return result


def worst(results: list[ProbeResult]) -> Status:
    if not results:
        return "healthy"
    return max((r.status for r in results), key=_RANK.__getitem__)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text_ = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text_}"[:300]


async def _timed(check: Awaitable[str | None], *, timeout_s: float, slow_ms: float) -> ProbeResult:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check, timeout_s)
    except Exception as exc:
        return ProbeResult("down", round((time.perf_counter() - started) * 1000, 1), _describe(exc))
    latency = round((time.perf_counter() - started) * 1000, 1)
    if latency > slow_ms:
        return ProbeResult("degraded", latency, f"slow ({latency} ms); {detail or ''}".rstrip("; "))
    return ProbeResult("healthy", latency, detail)


async def probe_database(engine: AsyncEngine, *, timeout_s: float, slow_ms: float) -> ProbeResult:
    async def check() -> str | None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None

    return await _timed(check(), timeout_s=timeout_s, slow_ms=slow_ms)


async def probe_redis(redis: Redis, *, timeout_s: float, slow_ms: float) -> ProbeResult:
    async def check() -> str | None:
        await redis.ping()
        return None

    return await _timed(check(), timeout_s=timeout_s, slow_ms=slow_ms)


async def probe_chain(
    http: httpx.AsyncClient, rpc_url: str, *, timeout_s: float, slow_ms: float
) -> ProbeResult:
    async def check() -> str | None:
        response = await http.post(
            rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=timeout_s,
        )
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            raise RuntimeError(f"RPC error: {body['error']}")
        return f"block {int(body['result'], 16)}"

    return await _timed(check(), timeout_s=timeout_s, slow_ms=slow_ms)


async def probe_service(
    http: httpx.AsyncClient, url: str, *, timeout_s: float, slow_ms: float
) -> ProbeResult:
    """A CaaS service's `/health/ready`: 200 healthy, answered-but-not-ready degraded."""
    started = time.perf_counter()
    try:
        response = await http.get(f"{url}/health/ready", timeout=timeout_s)
    except Exception as exc:
        return ProbeResult("down", round((time.perf_counter() - started) * 1000, 1), _describe(exc))
    latency = round((time.perf_counter() - started) * 1000, 1)
    if response.status_code == 200:
        return ProbeResult("degraded" if latency > slow_ms else "healthy", latency, None)
    failing = []
    try:
        checks = response.json().get("checks", {})
        failing = [name for name, check in checks.items() if check.get("status") != "healthy"]
    except ValueError:
        pass
    detail = f"not ready ({', '.join(failing)})" if failing else f"HTTP {response.status_code}"
    return ProbeResult("degraded", latency, detail)


async def probe_url(http: httpx.AsyncClient, url: str, *, timeout_s: float, slow_ms: float) -> ProbeResult:
    """An external service we know only by base URL: any answer below 500 means it is up."""

    async def check() -> str | None:
        response = await http.get(url, timeout=timeout_s)
        if response.status_code >= 500:
            raise RuntimeError(f"HTTP {response.status_code}")
        return None

    return await _timed(check(), timeout_s=timeout_s, slow_ms=slow_ms)
