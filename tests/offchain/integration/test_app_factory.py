"""The shared app factory against real PostgreSQL, Redis and Anvil."""

from __future__ import annotations

import uuid

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from identities import service_headers
from pydantic import BaseModel
from sqlalchemy import text

from offchain.platform.app import create_service_app
from offchain.platform.deps import DatabaseDep
from offchain.platform.problems import PROBLEM_JSON, Problem
from offchain.platform.service import Dependency, ServiceSpec
from offchain.platform.settings import Settings

ALL_DEPENDENCIES = frozenset(Dependency)
SPEC = ServiceSpec("testsvc", 18999, "a service for tests", ALL_DEPENDENCIES)


class Amount(BaseModel):
    value: int
    currency: str


class Application(BaseModel):
    external_id: str
    amount: Amount


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @router.post("/v1/things")
    async def create_thing(body: Application) -> dict[str, str]:
        return {"id": body.external_id}

    @router.get("/v1/refused")
    async def refused() -> None:
        raise Problem(
            409,
            "urn:caas:problem:offer-expired",
            title="Offer expired",
            detail="offer 7 expired",
            offer_id="7",
        )

    @router.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    return router


@pytest.fixture
def chain_settings(settings: Settings, anvil_url: str) -> Settings:
    return settings.model_copy(update={"chain": settings.chain.model_copy(update={"rpc_url": anvil_url})})


def _client(settings: Settings, spec: ServiceSpec = SPEC) -> TestClient:
    app = create_service_app(spec, settings, routers=[_router()])
    # the test routes declare no rule: service routes, called here as the gateway would
    return TestClient(app, raise_server_exceptions=False, headers=service_headers("gateway", spec.name))


def test_live_and_ready_touch_every_dependency(chain_settings: Settings) -> None:
    with _client(chain_settings) as client:
        live = client.get("/health/live")
        ready = client.get("/health/ready")

    assert live.status_code == 200 and live.json()["service"] == "testsvc"
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "redis", "blockchain"}
    assert all(check["status"] == "healthy" for check in checks.values())
    assert checks["blockchain"]["detail"].startswith("block ")


def test_ready_is_503_with_details_when_redis_is_down(chain_settings: Settings) -> None:
    closed = chain_settings.model_copy(
        update={"redis": chain_settings.redis.model_copy(update={"url": "redis://127.0.0.1:1/0"})}
    )
    with _client(closed) as client:
        ready = client.get("/health/ready")

    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["status"] == "down"
    assert (
        "refused" in body["checks"]["redis"]["detail"].lower()
        or "connect" in body["checks"]["redis"]["detail"].lower()
    )
    assert body["checks"]["database"]["status"] == "healthy"


def test_ready_reports_unconfigured_dependencies(settings: Settings) -> None:
    bare = Settings(env="test")  # nothing configured
    with _client(bare) as client:
        ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert {c["detail"] for c in ready.json()["checks"].values()} == {"not configured"}


def test_metrics_are_labelled_by_route_template(settings: Settings) -> None:
    with _client(settings) as client:
        for thing in ("a", "b", "c"):
            client.get(f"/v1/things/{thing}")
        client.get("/no/such/path/1")
        client.get("/no/such/path/2")
        text = client.get("/metrics").text

    assert (
        'caas_http_requests_total{method="GET",route="/v1/things/{thing_id}",service="testsvc",status="200"} 3.0'
        in text
    )
    assert 'route="<unmatched>",service="testsvc",status="404"} 2.0' in text
    assert "caas_http_request_duration_seconds_bucket" in text
    assert "/no/such/path" not in text


def test_request_id_is_passed_through_or_generated(settings: Settings) -> None:
    with _client(settings) as client:
        echoed = client.get("/v1/things/x", headers={"X-Request-ID": "partner-req-42"})
        generated = client.get("/v1/things/x")
        unsafe = client.get("/v1/things/x", headers={"X-Request-ID": "bad id\twith spaces"})

    assert echoed.headers["x-request-id"] == "partner-req-42"
    assert len(generated.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


def test_errors_are_problem_json(settings: Settings) -> None:
    with _client(settings) as client:
        not_found = client.get("/v1/nothing-here")
        invalid = client.post("/v1/things", json={"external_id": "e1", "amount": {"value": "ten"}})
        refused = client.get("/v1/refused", headers={"X-Request-ID": "r-1"})
        boom = client.get("/v1/boom")
        wrong_method = client.delete("/v1/things/x")

    for response in (not_found, invalid, refused, boom, wrong_method):
        assert response.headers["content-type"] == PROBLEM_JSON
        body = response.json()
        assert {"type", "title", "status", "detail", "instance"} <= set(body)
        assert body["status"] == response.status_code

    assert not_found.json()["type"] == "about:blank" and not_found.json()["title"] == "Not Found"
    assert not_found.json()["instance"] == "/v1/nothing-here"

    assert invalid.status_code == 422
    errors = {e["field"]: e["reason"] for e in invalid.json()["errors"]}
    assert set(errors) == {"body.amount.value", "body.amount.currency"}

    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:caas:problem:offer-expired"
    assert refused.json()["title"] == "Offer expired" and refused.json()["offer_id"] == "7"
    assert refused.json()["request_id"] == "r-1"

    assert boom.status_code == 500
    assert "hunter2" not in boom.text
    assert boom.json()["request_id"] == boom.headers["x-request-id"]

    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["allow"]


def test_every_service_of_the_port_map_builds(settings: Settings) -> None:
    from offchain.services.registry import SERVICES
    from offchain.stack.composition import create_app

    ports = sorted(spec.port for spec in SERVICES.values())
    assert ports == list(range(8000, 8011))
    for name in SERVICES:
        app = create_app(name, settings)
        assert {"/health/live", "/health/ready"} <= set(app.openapi()["paths"]), name
        # no lifespan needed: /metrics reads only the app's own registry
        assert TestClient(app).get("/metrics").status_code == 200
    assert "/v1/health" in create_app("health", settings).openapi()["paths"]


def test_database_dependency_runs_as_the_app_role(settings: Settings) -> None:
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(db: DatabaseDep) -> dict[str, str]:
        async with db.partner_session(uuid.uuid4()) as session:
            role = (await session.execute(text("SELECT current_user"))).scalar_one()
        return {"role": role}

    app = create_service_app(SPEC, settings, routers=[router])
    with TestClient(app, headers=service_headers("gateway", SPEC.name)) as client:
        assert client.get("/whoami").json() == {"role": "caas_app"}


def test_access_line_is_one_json_object_per_request(settings: Settings, capsys) -> None:
    json_logs = settings.model_copy(
        update={"log": settings.log.model_copy(update={"format": "json", "level": "info"})}
    )
    with _client(json_logs) as client:
        capsys.readouterr()
        client.get("/v1/things/x", headers={"X-Request-ID": "partner-req-7"})
        client.get("/no/such/path")
        out = capsys.readouterr().out

    import json

    lines = [json.loads(line) for line in out.splitlines() if '"http.request"' in line]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/v1/things/{thing_id}", 200),
        ("<unmatched>", 404),
    ]
    first = lines[0]
    # structlog's JSON renderer's fields, in its order, so every line of a service reads alike
    assert list(first) == [
        "method", "route", "status", "duration_ms", "service", "request_id",
        "event", "logger", "level", "timestamp",
    ]  # fmt: skip
    assert first["method"] == "GET" and first["service"] == "testsvc"
    assert first["request_id"] == "partner-req-7"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["timestamp"].endswith("Z")
