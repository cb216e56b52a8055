"""health:8010 GET /v1/health: real servers, real probes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from identities import operator_headers

from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app
from offchain.stack.runner import InProcessServers, NamedApp

pytestmark = pytest.mark.asyncio
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


async def _health(settings: Settings, gateway_port: int, health_port: int) -> dict:
    servers = InProcessServers(
        [
            NamedApp("gateway", create_app("gateway", settings), gateway_port),
            NamedApp("health", create_app("health", settings), health_port),
        ]
    )
    await servers.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"http://127.0.0.1:{health_port}/v1/health", headers=operator_headers()
            )
    finally:
        await servers.stop()
    assert response.status_code == 200
    return response.json()


def _settings(
    settings: Settings, anvil_url: str, gateway_port: int, health_port: int, simulator_url: str | None
) -> Settings:
    urls = {name: CLOSED for name in SERVICES}
    urls |= {"gateway": f"http://127.0.0.1:{gateway_port}", "health": f"http://127.0.0.1:{health_port}"}
    return settings.model_copy(
        update={
            "chain": settings.chain.model_copy(update={"rpc_url": anvil_url}),
            "services": settings.services.model_copy(update={"urls": urls}),
            "rails": settings.rails.model_copy(update={"simulator_url": simulator_url}),
        }
    )


async def test_v1_health_reports_every_service_and_dependency(
    settings: Settings, anvil_url: str, free_port: Callable[[], int]
) -> None:
    gateway_port, health_port = free_port(), free_port()
    # any HTTP answer below 500 counts as "up" for an SME service: the gateway stands in
    configured = _settings(settings, anvil_url, gateway_port, health_port, f"http://127.0.0.1:{gateway_port}")

    body = await _health(configured, gateway_port, health_port)

    assert set(body["caasServices"]) == set(SERVICES)
    assert body["caasServices"]["gateway"]["status"] == "healthy"
    assert body["caasServices"]["health"]["status"] == "healthy"
    assert body["caasServices"]["ledger"]["status"] == "down"
    assert body["caasServices"]["ledger"]["detail"].startswith("ConnectError")
    assert {name: entry["status"] for name, entry in body["smeServices"].items()} == {
        "auth": "healthy",
        "kyc": "healthy",
        "payments": "healthy",
    }
    assert {name: entry["status"] for name, entry in body["dependencies"].items()} == {
        "database": "healthy",
        "redis": "healthy",
        "blockchain": "healthy",
    }
    assert body["status"] == "down"  # nine services are not running
    for entry in body["caasServices"].values():
        assert set(entry) == {"status", "latency_ms", "detail"}


async def test_sme_services_without_simulator_are_down_not_configured(
    settings: Settings, anvil_url: str, free_port: Callable[[], int]
) -> None:
    gateway_port, health_port = free_port(), free_port()
    body = await _health(
        _settings(settings, anvil_url, gateway_port, health_port, None), gateway_port, health_port
    )
    assert body["smeServices"]["auth"] == {"status": "down", "latency_ms": None, "detail": "not configured"}
