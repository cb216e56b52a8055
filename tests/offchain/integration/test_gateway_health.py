"""GET /v1/health on the gateway (DESIGN §4): health:8010's HealthStatus, whole for operators,
without the `detail` strings for partners; one request to health:8010 per cache window however
many callers; a 503 problem when health:8010 does not answer. Real servers on free ports.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
import pytest
from fuzz_support import credentials
from identities import operator_headers, service_headers

from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app
from offchain.stack.runner import InProcessServers, NamedApp

pytestmark = pytest.mark.asyncio
CLOSED = "http://127.0.0.1:1"


def _settings(settings: Settings, gateway_port: int, health_port: int) -> Settings:
    urls = {name: CLOSED for name in SERVICES}
    urls |= {"gateway": f"http://127.0.0.1:{gateway_port}", "health": f"http://127.0.0.1:{health_port}"}
    return settings.model_copy(
        update={"services": settings.services.model_copy(update={"urls": urls, "probe_timeout_s": 1.0})}
    )


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    return set()


def _statuses(body: dict) -> dict[str, str]:
    return {
        f"{group}.{name}": entry["status"]
        for group in ("smeServices", "caasServices", "dependencies", "queues")
        for name, entry in body[group].items()
    }


def _health_requests(app) -> int:  # type: ignore[no-untyped-def]
    text = app.state.metrics.render().decode()
    return sum(
        int(float(n))
        for n in re.findall(r'caas_http_requests_total\{[^}]*route="/v1/health"[^}]*\} (\S+)', text)
    )


async def test_gateway_health__summary_for_partners__detail_for_operators(
    settings: Settings, free_port: Callable[[], int]
) -> None:
    gateway_port, health_port = free_port(), free_port()
    configured = _settings(settings, gateway_port, health_port)
    health_app = create_app("health", configured)
    gateway = InProcessServers([NamedApp("gateway", create_app("gateway", configured), gateway_port)])
    health = InProcessServers([NamedApp("health", health_app, health_port)])
    await gateway.start()
    await health.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=20) as client:
            anonymous = await client.get("/v1/health")
            assert anonymous.status_code == 401
            assert anonymous.headers["content-type"] == "application/problem+json"

            headers = credentials("gateway", "GET", "/v1/health", configured)  # a partner's
            answer = await client.get("/v1/health", headers=headers)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert set(body) == {
                "status",
                "checkedAt",
                "smeServices",
                "caasServices",
                "dependencies",
                "queues",
            }
            assert set(body["caasServices"]) == set(SERVICES)
            # no detail strings (they name hosts and errors); everything else is there
            assert "detail" not in _keys(body)
            assert all({"status", "latency_ms"} == set(e) for e in body["dependencies"].values())
            # the same verdicts health:8010 gives itself (read right after, inside the cache window)
            async with httpx.AsyncClient(timeout=20) as internal:
                own = (
                    await internal.get(
                        f"http://127.0.0.1:{health_port}/v1/health",
                        headers=service_headers("gateway", "health"),
                    )
                ).json()
            assert "detail" in _keys(own)
            # an operator reads the whole HealthStatus, detail included
            secret = configured.auth.jwt_secret.get_secret_value()
            whole = await client.get("/v1/health", headers=operator_headers("ops-health", secret=secret))
            assert whole.status_code == 200, whole.text
            assert "detail" in _keys(whole.json())
            assert (
                _statuses(body)["dependencies.database"]
                == _statuses(own)["dependencies.database"]
                == "healthy"
            )
            assert _statuses(body)["caasServices.gateway"] == "healthy"
            assert _statuses(body)["caasServices.ledger"] == _statuses(own)["caasServices.ledger"] == "down"

            # twenty callers at once: health:8010 is asked at most once more
            await asyncio.sleep(2.1)  # past the cache window
            before = _health_requests(health_app)
            answers = await asyncio.gather(*(client.get("/v1/health", headers=headers) for _ in range(20)))
            assert {a.status_code for a in answers} == {200}
            assert _health_requests(health_app) - before <= 1

            # health:8010 gone: a decided 503, not a hang or a 500
            await health.stop()
            await asyncio.sleep(2.1)
            gone = await client.get("/v1/health", headers=headers)
            assert gone.status_code == 503, gone.text
            assert gone.headers["content-type"] == "application/problem+json"
            assert gone.json()["type"] == "urn:caas:problem:dependency-unavailable"
            assert gone.headers["retry-after"] == "5"
    finally:
        await gateway.stop()
        await health.stop()
