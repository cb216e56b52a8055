"""The partner API's contract: auth and permissions, partner isolation, idempotency, rate limits."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import pytest_asyncio

from offchain.platform import auth
from offchain.platform.settings import Settings
from offchain.services.gateway.app import create_app

SECRET = Settings().auth.jwt_secret.get_secret_value()
pytestmark = pytest.mark.asyncio


def application_body(external_id: str | None = None, **overrides) -> dict:
    body = {
        "external_id": external_id or f"ext-{uuid.uuid4()}",
        "borrower": {"sme_user_id": "sme-user-42"},
        "amount": {"value": 500_000_00, "currency": "NGN"},
        "tenor_months": 6,
        "purpose": "working capital",
    }
    body.update(overrides)
    return body


def token(partner_id: uuid.UUID, permissions=auth.ALL_PERMISSIONS) -> dict[str, str]:
    return {
        "Authorization": "Bearer " + auth.issue_token(SECRET, partner_id=partner_id, permissions=permissions)
    }


@pytest_asyncio.fixture
async def client(settings: Settings):
    tuned = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"rate_limits": {"read": "1000/minute", "write": "40/minute"}}
            )
        }
    )
    app = create_app(tuned)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


@pytest.fixture
def partner() -> uuid.UUID:
    return uuid.uuid4()


async def test_submit__no_token__401_problem(client):
    response = await client.post("/v1/applications", json=application_body())
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_submit__bad_signature__401(client, partner):
    forged = auth.issue_token("another-secret", partner_id=partner)
    response = await client.post(
        "/v1/applications", json=application_body(), headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("post", "/v1/applications", auth.APPLICATION_CREATE),
        ("get", "/v1/applications", auth.APPLICATION_READ),
        ("get", f"/v1/applications/{uuid.uuid4()}", auth.APPLICATION_READ),
        ("get", "/v1/loans", auth.LOAN_READ),
        ("get", f"/v1/loans/{uuid.uuid4()}", auth.LOAN_READ),
        ("get", f"/v1/loans/{uuid.uuid4()}/schedule", auth.LOAN_READ),
        ("get", f"/v1/loans/{uuid.uuid4()}/repayments", auth.LOAN_READ),
    ],
)
async def test_permission_matrix__each_endpoint_needs_its_permission(
    client, partner, method, path, permission
):
    others = tuple(p for p in auth.ALL_PERMISSIONS if p != permission)
    kwargs = {"json": application_body()} if method == "post" else {}
    refused = await getattr(client, method)(path, headers=token(partner, others), **kwargs)
    assert refused.status_code == 403
    assert refused.json()["required_permission"] == permission
    allowed = await getattr(client, method)(path, headers=token(partner, (permission,)), **kwargs)
    assert allowed.status_code in (200, 201, 404)


async def test_submit_then_get__and_other_partner_sees_404(client, partner):
    created = await client.post("/v1/applications", json=application_body(), headers=token(partner))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "submitted"
    assert body["amount"] == {"value": 500_000_00, "currency": "NGN"}
    fetched = await client.get(f"/v1/applications/{body['id']}", headers=token(partner))
    assert fetched.status_code == 200
    assert fetched.json()["external_id"] == body["external_id"]
    stranger = await client.get(f"/v1/applications/{body['id']}", headers=token(uuid.uuid4()))
    assert stranger.status_code == 404
    listing = await client.get("/v1/applications", headers=token(uuid.uuid4()))
    assert listing.json()["data"] == []


async def test_submit__validation_error_names_the_field(client, partner):
    bad = application_body(amount={"value": 12.5, "currency": "NGN"}, tenor_months=0)
    response = await client.post("/v1/applications", json=bad, headers=token(partner))
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert "body.amount.value" in fields
    assert "body.tenor_months" in fields


async def test_submit__duplicate_external_id__409(client, partner):
    body = application_body()
    first = await client.post("/v1/applications", json=body, headers=token(partner))
    again = await client.post("/v1/applications", json=body, headers=token(partner))
    assert first.status_code == 201
    assert again.status_code == 409
    assert again.json()["existing_id"] == first.json()["id"]


async def test_idempotency__same_key_same_body__original_response(client, partner):
    headers = {**token(partner), "Idempotency-Key": "k-1"}
    body = application_body()
    first = await client.post("/v1/applications", json=body, headers=headers)
    # same JSON, other key order and spacing: still the same request
    replay = await client.post(
        "/v1/applications",
        content=__import__("json").dumps(dict(reversed(list(body.items())))),
        headers={**headers, "content-type": "application/json"},
    )
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"


async def test_idempotency__same_key_other_body__409(client, partner):
    headers = {**token(partner), "Idempotency-Key": "k-2"}
    await client.post("/v1/applications", json=application_body(), headers=headers)
    other = await client.post("/v1/applications", json=application_body(), headers=headers)
    assert other.status_code == 409
    assert other.json()["type"] == "urn:caas:problem:idempotency-key-reused"


async def test_idempotency__keys_are_per_partner(client, partner):
    body = application_body()
    a = await client.post(
        "/v1/applications", json=body, headers={**token(partner), "Idempotency-Key": "shared"}
    )
    b = await client.post(
        "/v1/applications", json=body, headers={**token(uuid.uuid4()), "Idempotency-Key": "shared"}
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_idempotency__a_refusal_is_the_stored_answer(client, partner):
    body = application_body()
    created = await client.post(
        "/v1/applications", json=body, headers={**token(partner), "Idempotency-Key": "a"}
    )
    assert created.status_code == 201
    # the same application again under a new key: refused (its work rolled back), and that
    # refusal is what the key answers from now on
    headers = {**token(partner), "Idempotency-Key": "b"}
    refused = await client.post("/v1/applications", json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    replay = await client.post("/v1/applications", json=body, headers=headers)
    assert replay.status_code == 409
    assert replay.json() == refused.json()
    assert replay.headers["idempotent-replayed"] == "true"


async def test_idempotency__while_the_first_runs__409_in_flight(client, partner, database_url):
    import asyncpg

    from offchain.platform.idempotency import _LOCK_CLASS

    key = "running"
    holder = await asyncpg.connect(database_url)  # stands in for the first request's transaction
    try:
        await holder.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_CLASS, f"{partner}:{key}")
        body = application_body()
        headers = {**token(partner), "Idempotency-Key": key}
        busy = await client.post("/v1/applications", json=body, headers=headers)
        assert busy.status_code == 409
        assert busy.json()["type"] == "urn:caas:problem:idempotency-key-in-flight"
        assert busy.headers["retry-after"] == "1"
        await holder.execute("SELECT pg_advisory_unlock_all()")
        done = await client.post("/v1/applications", json=body, headers=headers)
        assert done.status_code == 201  # nothing was kept from the refused attempt
    finally:
        await holder.close()


async def test_idempotency__a_crash_in_the_work_leaves_the_key_free(client, partner, monkeypatch):
    from offchain.services.gateway import usecases

    real = usecases.submit_application

    async def crash_once(**kwargs):
        monkeypatch.setattr(usecases, "submit_application", real)
        await real(**kwargs)  # the application row is written ... and then the process fails
        raise RuntimeError("crashed after the insert")

    monkeypatch.setattr(usecases, "submit_application", crash_once)
    body = application_body()
    headers = {**token(partner), "Idempotency-Key": "crash"}
    crashed = await client.post("/v1/applications", json=body, headers=headers)
    assert crashed.status_code == 500  # answered by the request middleware, not re-raised
    retried = await client.post("/v1/applications", json=body, headers=headers)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    listing = await client.get("/v1/applications?limit=100", headers=token(partner))
    assert [a["external_id"] for a in listing.json()["data"]] == [body["external_id"]]


async def test_idempotency__20_concurrent_requests__one_application(client, partner):
    headers = {**token(partner), "Idempotency-Key": "burst"}
    body = application_body()
    responses = await asyncio.gather(
        *(client.post("/v1/applications", json=body, headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    created_ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created_ids) == 1
    in_flight = [r for r in responses if r.status_code == 409]
    assert all(r.json()["type"] == "urn:caas:problem:idempotency-key-in-flight" for r in in_flight)
    listing = await client.get("/v1/applications?limit=100", headers=token(partner))
    assert [a["external_id"] for a in listing.json()["data"]] == [body["external_id"]]


async def test_rate_limit__headers_and_429(client, partner):
    first = await client.get("/v1/loans", headers=token(partner))
    assert first.headers["ratelimit-limit"] == "1000"
    assert int(first.headers["ratelimit-remaining"]) == 999
    statuses = []
    for _ in range(41):
        response = await client.post("/v1/applications", json=application_body(), headers=token(partner))
        statuses.append(response.status_code)
    assert statuses.count(201) == 40
    assert statuses[-1] == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"


async def test_pagination__cursor_walks_every_row_once(client, partner):
    for _ in range(5):
        await client.post("/v1/applications", json=application_body(), headers=token(partner))
    seen, cursor = [], None
    while True:
        url = "/v1/applications?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=token(partner))).json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    bad = await client.get("/v1/applications?cursor=garbage", headers=token(partner))
    assert bad.status_code == 400


async def test_rs256_token_from_the_sme_auth_service_via_jwks(settings, free_port):
    """The SME platform's RS256 tokens verify against its JWKS (the simulator serves both)."""
    from simulator_support import ServerThread

    from offchain.rails.simulator.app import create_app as simulator_app
    from offchain.rails.simulator.config import SimulatorConfig

    with ServerThread(simulator_app(SimulatorConfig()), free_port()) as simulator:
        tuned = settings.model_copy(
            update={"rails": settings.rails.model_copy(update={"simulator_url": simulator.url})}
        )
        app = create_app(tuned)
        partner = uuid.uuid4()
        async with app.router.lifespan_context(app), httpx.AsyncClient(base_url=simulator.url) as sme:
            issued = await sme.post(
                "/sme/auth/token",
                json={"sub": "user-1", "partner_id": str(partner), "creditPermissions": [auth.LOAN_READ]},
            )
            assert issued.status_code == 200, issued.text
            rs256 = issued.json()["access_token"]
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client:
                ok = await client.get("/v1/loans", headers={"Authorization": f"Bearer {rs256}"})
                assert ok.status_code == 200, ok.text
                tampered = rs256[:-4] + ("AAAA" if not rs256.endswith("AAAA") else "BBBB")
                refused = await client.get("/v1/loans", headers={"Authorization": f"Bearer {tampered}"})
                assert refused.status_code == 401
