"""offers:8002 over HTTP: POST /v1/quotes and GET /v1/pricing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from identities import service_headers

from offchain.domain.offers import PricingPolicy, RatePlan
from offchain.platform.problems import PROBLEM_JSON
from offchain.platform.settings import Settings
from offchain.services.offers.app import create_app

NAIRA = 100


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=service_headers("gateway", "offers")) as client:
        yield client


def quote_body(**overrides: object) -> dict:
    return {
        "rating": "B",
        "amount": {"value": 1_000_000 * NAIRA, "currency": "NGN"},
        "tenor_months": 6,
        "frequency": "monthly",
    } | overrides


def test_post_quote__offer_with_a_schedule_that_adds_up(client: TestClient) -> None:
    response = client.post("/v1/quotes", json=quote_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refusals"] == []
    (offer,) = body["offers"]
    assert offer["basis"] == "requested"
    assert offer["amount"] == {"value": 1_000_000 * NAIRA, "currency": "NGN"}
    assert offer["apr_bps"] == 3_000 and offer["ear_bps"] >= 3_000
    schedule = offer["schedule"]
    amounts = [row["amount"]["value"] for row in schedule["installments"]]
    assert sum(amounts) == offer["total_due"]["value"] == schedule["total_due"]["value"]
    assert len(set(amounts[:-1])) == 1 and amounts[-1] >= amounts[0]
    assert schedule["installment_interval"] == offer["installment_interval"] == 30 * 86_400
    assert offer["expires_at"].endswith("+00:00")


def test_post_quote__affordability_yields_capped_and_longer_options(client: TestClient) -> None:
    response = client.post(
        "/v1/quotes",
        json=quote_body(
            amount={"value": 2_000_000 * NAIRA, "currency": "NGN"},
            affordability={"max_monthly_installment": {"value": 200_000 * NAIRA, "currency": "NGN"}},
        ),
    )
    assert response.status_code == 200, response.text
    assert [offer["basis"] for offer in response.json()["offers"]] == ["amount_capped", "tenor_extended"]


def test_post_quote__no_offer_is_200_with_reasons(client: TestClient) -> None:
    response = client.post("/v1/quotes", json=quote_body(rating="E"))
    assert response.status_code == 200
    assert response.json() == {"offers": [], "refusals": ["rating_not_lent_to"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (quote_body(amount={"value": 1000.5, "currency": "NGN"}), "body.amount.value"),
        (quote_body(amount={"value": "1000", "currency": "NGN"}), "body.amount.value"),
        (quote_body(tenor_months=0), "body.tenor_months"),
        (quote_body(frequency="daily"), "body.frequency"),
    ],
)
def test_post_quote__invalid_bodies_are_problem_json(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/v1/quotes", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert field in [error["field"] for error in response.json()["errors"]]


def test_post_quote__unpriceable_currency_is_422(client: TestClient) -> None:
    response = client.post("/v1/quotes", json=quote_body(amount={"value": 100, "currency": "USD"}))
    assert response.status_code == 422
    assert response.json()["type"] == "urn:caas:problem:unpriceable"
    mixed = quote_body(affordability={"max_amount": {"value": 1, "currency": "USD"}})
    response = client.post("/v1/quotes", json=mixed)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "affordability.max_amount", "reason": "expected NGN"}]


def test_get_pricing__serves_the_policy_in_force(settings: Settings) -> None:
    policy = PricingPolicy(version="custom", plans={"A": RatePlan(1_800, 0, 0, 0, 100_000, 10**9, 12)})
    with TestClient(
        create_app(settings, pricing=policy), headers=service_headers("gateway", "offers")
    ) as client:
        response = client.get("/v1/pricing")
        assert response.status_code == 200
        assert response.json() == policy.to_json()
        quoted = client.post("/v1/quotes", json=quote_body(rating="A")).json()
    assert quoted["offers"][0]["apr_bps"] == 1_800
    assert quoted["offers"][0]["pricing_version"] == "custom"


def test_openapi__documents_both_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/quotes"] and "get" in paths["/v1/pricing"]
