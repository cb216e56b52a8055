"""underwriting:8001 through its app factory, with SME KYC served by a real local HTTP server."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from identities import SERVICE_KEY, service_headers
from kyc_http_server import Behaviour, ThreadedServer, create_app, healthy_statement

from offchain.platform.problems import PROBLEM_JSON
from offchain.platform.settings import Settings
from offchain.rails.simulator.app import create_app as create_simulator_app
from offchain.rails.simulator.config import SimulatorConfig
from offchain.services.underwriting.app import create_app as create_underwriting_app
from offchain.services.underwriting.model_store import current_version

NAIRA = 100


def as_gateway() -> dict[str, str]:
    """underwriting's routes are for CaaS services only: these calls come as the gateway's
    (a token of 300 s, made when a client is)."""
    return service_headers("gateway", "underwriting")


@pytest.fixture(scope="module")
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture(scope="module")
def kyc_server(behaviour: Behaviour) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(behaviour)) as running:
        yield running


@pytest.fixture(scope="module")
def client(kyc_server: ThreadedServer) -> Iterator[TestClient]:
    settings = Settings(
        env="test", rails={"simulator_url": kyc_server.url}, internal={"service_key": SERVICE_KEY}
    )
    with TestClient(
        create_underwriting_app(settings), raise_server_exceptions=False, headers=as_gateway()
    ) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def _reset(behaviour: Behaviour) -> None:
    behaviour.reset()


def assessment(user: str = "sme-42", amount: int = 2_000_000 * NAIRA, **extra: Any) -> dict[str, Any]:
    return {
        "application": {
            "id": "app-1",
            "external_id": "ext-1",
            "status": "underwriting",  # the gateway's view carries more than underwriting reads
            "borrower": {"sme_user_id": user},
            "amount": {"value": amount, "currency": "NGN"},
            "tenor_months": 12,
            "purpose": "working capital",
        },
        "partner_claims": {"partner_id": "partner-1", "creditLimit": None, "riskRating": "B"},
        **extra,
    }


def test_assessment__verified_healthy_borrower_is_approved(client: TestClient, behaviour: Behaviour) -> None:
    response = client.post("/v1/assessments", json=assessment(), headers={"X-Request-ID": "uw-test-1"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved"
    assert body["approved_amount"] == {"value": 2_000_000 * NAIRA, "currency": "NGN"}
    assert body["risk_rating"] in "ABCD" and 0 < float(body["pd"]) < 1
    assert body["model_version"] == current_version()
    assert body["policy_version"].startswith("pol-")
    assert body["features"]["kyc"]["status"] == "verified"
    assert body["features"]["statement"]["months"] == 6
    assert behaviour.calls == 3  # KYC record, AML screen, bank statement
    assert behaviour.request_ids == ["uw-test-1"] * 3  # the caller's request id travels on
    assert body["features"]["kyc"]["sanctions_hit"] is False


@pytest.mark.parametrize(
    ("user", "status", "code"),
    [
        ("kyc-pending-1", "refer", "KYC_PENDING"),
        ("kyc-rejected-1", "declined", "KYC_REJECTED"),
        ("thin-file-1", "refer", "THIN_FILE"),
        ("unknown-1", "refer", "KYC_NOT_AVAILABLE"),
        ("sanctioned-1", "declined", "SANCTIONS_MATCH"),
        ("listed-1", "declined", "SANCTIONS_MATCH"),
        ("unscreened-1", "approved", None),
        ("aml-review-1", "refer", "AML_REVIEW"),
    ],
)
def test_assessment__id_conventions(client: TestClient, user: str, status: str, code: str | None) -> None:
    response = client.post("/v1/assessments", json=assessment(user))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status
    if code:
        assert code in [reason["code"] for reason in body["reasons"]]


def test_assessment__chain_history_and_exposures_count(client: TestClient) -> None:
    body = client.post(
        "/v1/assessments",
        json=assessment(chain_history={"defaulted_loans": 1, "defaults_ever": 1}),
    ).json()
    assert body["status"] == "declined" and body["reasons"][0]["code"] == "ACTIVE_DEFAULT_ON_CHAIN"

    body = client.post(
        "/v1/assessments",
        json=assessment(
            partner_claims={"partner_id": "p", "creditLimit": 5_000_000 * NAIRA},
            exposures={"partner_outstanding": 4_000_000 * NAIRA},
        ),
    ).json()
    assert body["status"] == "approved" and body["reasons"][0]["code"] == "PARTNER_CREDIT_LIMIT"
    assert body["approved_amount"]["value"] == 1_000_000 * NAIRA


def test_assessment__uploaded_statement_is_used_instead_of_fetching(
    client: TestClient, behaviour: Behaviour
) -> None:
    response = client.post("/v1/assessments", json=assessment(transactions=healthy_statement(months=3)))
    assert response.status_code == 200
    assert response.json()["features"]["statement"]["months"] == 3
    assert behaviour.calls == 2  # KYC record and AML screen only


def test_pre_assessment__eligibility_and_credit_available(client: TestClient) -> None:
    body = {"borrower": {"sme_user_id": "sme-7"}, "partner_claims": {"partner_id": "p"}}
    eligible = client.post("/v1/pre-assessments", json=body).json()
    assert eligible["status"] == "approved"
    assert eligible["requested_amount"]["value"] == 50_000 * NAIRA  # the product minimum
    # N300k a month for 12 months at the rating's APR, well above the minimum
    assert eligible["max_amount"]["value"] > 3_000_000 * NAIRA
    assert eligible["max_monthly_installment"]["value"] == 300_000 * NAIRA

    pending = client.post("/v1/pre-assessments", json={**body, "borrower": {"sme_user_id": "kyc-pending-2"}})
    assert pending.json()["status"] == "refer"


def test_assessment__bad_upload_is_a_field_level_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/assessments", json=assessment(transactions=[{"date": "2025-01-01", "amount": 12.5}])
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    # the statement's lines are part of the request schema: a request validation error
    assert response.json()["errors"][0]["field"] == "body.transactions.0.amount"


def test_assessment__invalid_body_is_a_problem(client: TestClient) -> None:
    body = assessment()
    body["application"]["amount"]["value"] = 1.5
    response = client.post("/v1/assessments", json=body)
    assert response.status_code == 422
    assert any(e["field"].endswith("amount.value") for e in response.json()["errors"])


def test_assessment__kyc_outage_is_503_with_retry_after(client: TestClient, behaviour: Behaviour) -> None:
    behaviour.fail_next = 3  # every attempt of one call
    response = client.post("/v1/assessments", json=assessment())
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "30"
    assert response.json()["type"] == "urn:caas:problem:kyc-unavailable"
    # the next call finds the upstream healthy again
    assert client.post("/v1/assessments", json=assessment()).status_code == 200


def test_assessment__kyc_not_configured() -> None:
    bare_settings = Settings(env="test", internal={"service_key": SERVICE_KEY})
    with TestClient(
        create_underwriting_app(bare_settings), raise_server_exceptions=False, headers=as_gateway()
    ) as bare:
        response = bare.post("/v1/assessments", json=assessment())
    assert response.status_code == 503
    assert response.json()["title"] == "SME KYC not configured"


def _csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["date", "amount", "balance", "description"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_analyze__json_and_csv_agree(client: TestClient) -> None:
    rows = healthy_statement(months=4)
    as_json = client.post(
        "/v1/bank-statements/analyze",
        json={"transactions": rows},
        params={"proposed_installment": 200_000 * NAIRA},
    )
    as_csv = client.post(
        "/v1/bank-statements/analyze",
        content=_csv(rows),
        headers={"Content-Type": "text/csv; charset=utf-8"},
        params={"proposed_installment": 200_000 * NAIRA},
    )
    assert as_json.status_code == as_csv.status_code == 200, as_csv.text
    assert as_json.json() == as_csv.json()
    body = as_json.json()
    assert body["months"] == 4
    assert body["average_monthly_inflow"] == 2_000_000 * NAIRA
    assert body["monthly_debt_service"] == 100_000 * NAIRA
    assert body["net_monthly_cash_flow"] == 600_000 * NAIRA
    # (600k + 100k) / (100k + 200k) = 2.3333
    assert body["dscr_bps"] == 23_333
    assert body["max_monthly_installment"] == 300_000 * NAIRA


def test_analyze__errors(client: TestClient) -> None:
    missing_column = client.post(
        "/v1/bank-statements/analyze",
        content=b"day,amount\n2025-01-01,5\n",
        headers={"Content-Type": "text/csv"},
    )
    assert missing_column.status_code == 422
    assert missing_column.json()["errors"] == [{"field": "header", "reason": "missing column(s): date"}]

    bad_row = client.post(
        "/v1/bank-statements/analyze",
        content=b"date,amount\n2025-01-01,5\n2025-13-01,1.50\n",
        headers={"Content-Type": "text/csv"},
    )
    assert {e["field"] for e in bad_row.json()["errors"]} == {"rows[1].date", "rows[1].amount"}

    not_json = client.post(
        "/v1/bank-statements/analyze", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["field"] == "body"

    wrong_type = client.post(
        "/v1/bank-statements/analyze", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.headers["content-type"] == PROBLEM_JSON


def test_models_current(client: TestClient) -> None:
    body = client.get("/v1/models/current").json()
    assert body["version"] == current_version()
    assert {f["name"] for f in body["features"]} >= {
        "status_of_existing_checking_account",
        "duration_in_month",
    }
    assert body["onchain_adjustment"]["points_per_repaid_loan"] == 15
    assert body["metadata"]["validation"]["folds"] == 25


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/assessments",
        "/v1/pre-assessments",
        "/v1/bank-statements/analyze",
        "/v1/models/current",
    } <= set(spec["paths"])
    upload = spec["paths"]["/v1/bank-statements/analyze"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv"} <= set(upload)


@pytest.mark.parametrize(
    ("user", "status", "code"),
    [
        ("sme-contract-1", "approved", None),
        ("thin-file-contract", "refer", "THIN_FILE"),
        ("sanctioned-contract", "declined", "SANCTIONS_MATCH"),
        ("kyc-pending-contract", "refer", "KYC_PENDING"),
        ("kyc-rejected-contract", "declined", "KYC_REJECTED"),
    ],
)
def test_against_the_simulator(
    simulator_client: TestClient, user: str, status: str, code: str | None
) -> None:
    """The contract with the SME platform's simulator (offchain/rails/simulator), not our stand-in."""
    response = simulator_client.post("/v1/assessments", json=assessment(user, amount=500_000 * NAIRA))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status, body["reasons"]
    if code:
        assert body["reasons"][0]["code"] == code
    else:
        assert body["features"]["statement"]["months"] >= 12


@pytest.fixture(scope="module")
def simulator_client() -> Iterator[TestClient]:
    # the simulator delivers nothing in these calls; its gateway URL points nowhere on purpose
    config = SimulatorConfig(gateway_url="http://127.0.0.1:9")
    with ThreadedServer(create_simulator_app(config), lifespan="on") as simulator:
        settings = Settings(
            env="test", rails={"simulator_url": simulator.url}, internal={"service_key": SERVICE_KEY}
        )
        with TestClient(
            create_underwriting_app(settings), raise_server_exceptions=False, headers=as_gateway()
        ) as test_client:
            yield test_client
