"""The partner gateway against its own OpenAPI, with Schemathesis generating the requests.

Every documented operation is called with schema-derived (and schema-violating) inputs through
the ASGI app on the session's migrated PostgreSQL and Redis; each response must be no 5xx and
must match what `/openapi.json` promises: a documented status code, its content type, its body.

The operations that need a chain (offer accept, approval request, approvals, audit) are in the
run too: without `chain.rpc_url`/`deployment_file` they answer their declared 503
`dependency-unavailable` (or an earlier 4xx). `test_offers_chain.py` and the partner journey
cover them against a real Anvil.

The gaps this run found earlier (a 500 on U+0000, undeclared 400/404 answers) each keep a
regression test below. test_services_schemathesis.py runs every service (the gateway whole)
with a chain configured and every Schemathesis check; this run keeps the chainless setup.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from fuzz_support import credentials
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from offchain.platform.settings import Settings
from offchain.services.gateway.app import create_app

UNAVAILABLE = "urn:caas:problem:dependency-unavailable"


def no_undeclared_server_error(ctx, response, case):
    """No 5xx, except the 503 an operation declares for a dependency this setup leaves out (the
    chain): status_code_conformance still holds the operation to declaring it."""
    if (
        response.status_code == 503
        and response.headers.get("content-type", [""])[0] == "application/problem+json"
        and response.json().get("type") == UNAVAILABLE
    ):
        return None
    return not_a_server_error(ctx, response, case)


no_undeclared_server_error.__name__ = "not_a_server_error"
CHECKS = [
    no_undeclared_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def gateway_schema(settings: Settings):
    # Hundreds of generated calls per partner would otherwise hit the real quotas and turn the
    # run into a test of 429s; test_gateway_api.py covers the limiter itself.
    roomy = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"rate_limits": {"read": "100000/minute", "write": "100000/minute"}}
            )
        }
    )
    # Schemathesis runs the app's lifespan (DB pool, Redis) in its own event-loop thread and
    # ends it in the test's teardown, while the session's database is still there.
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(roomy))


# The partner credit API and the gateway's own intake; routers other services mount on the
# gateway are fuzzed by their own tests.
CREDIT_API = (
    r"^/(health/.*|v1/(applications(/\{application_id\})?|offers/\{offer_id\}/accept|events/sme"
    r"|loans(/\{loan_id\}(/(schedule|repayments|approval-request|approvals))?)?|audit/loans/\{loan_id\}))$"
)
schema = schemathesis.pytest.from_fixture("gateway_schema").include(path_regex=CREDIT_API)


@pytest.fixture
def bearer(settings: Settings) -> dict[str, str]:
    # a partner's (the credit API's routes are partner routes; fuzz_support.credentials decides)
    return credentials("gateway", "GET", "/v1/loans", settings)


@schema.parametrize()
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    # One app (and DB pool) serves every example of the run, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_gateway__conforms_to_its_openapi(case, bearer):
    response = case.call(headers=bearer)
    case.validate_response(response, checks=CHECKS, headers=bearer)


# --- regressions: gaps an earlier run found, each now declared or refused cleanly ----------------


def _call_documented(gateway_schema, bearer, method, path, **case_kwargs):
    case = gateway_schema[path][method].Case(**case_kwargs)
    response = case.call(headers=bearer)
    case.validate_response(response, checks=CHECKS, headers=bearer)
    return response


@pytest.mark.parametrize("suffix", ["schedule", "repayments"])
def test_loan_subresources__unknown_loan__declared_404(gateway_schema, bearer, suffix):
    response = _call_documented(
        gateway_schema,
        bearer,
        "GET",
        f"/v1/loans/{{loan_id}}/{suffix}",
        path_parameters={"loan_id": str(uuid.uuid4())},
    )
    assert response.status_code == 404
    assert response.json()["type"] == "urn:caas:problem:not-found"


@pytest.mark.parametrize("path", ["/v1/applications", "/v1/loans"])
def test_list__bad_cursor__declared_400(gateway_schema, bearer, path):
    response = _call_documented(gateway_schema, bearer, "GET", path, query={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "cursor", "reason": "not a cursor this API issued"}]


def test_submit__undecodable_body__declared_400(gateway_schema, bearer):
    response = _call_documented(
        gateway_schema, bearer, "POST", "/v1/applications", body=b"\xff\xfe{", media_type="application/json"
    )
    assert response.status_code == 400


@pytest.mark.parametrize("field", ["purpose", "external_id"])
def test_submit__nul_character__422_naming_the_field(gateway_schema, bearer, field):
    body = {
        "external_id": f"ext-{uuid.uuid4()}",
        "borrower": {"sme_user_id": "sme-user-42"},
        "amount": {"value": 500_000_00, "currency": "NGN"},
        "tenor_months": 6,
        "purpose": "working capital",
    }
    body[field] += "\x00"
    response = _call_documented(
        gateway_schema, bearer, "POST", "/v1/applications", body=body, media_type="application/json"
    )
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [f"body.{field}"]


@pytest.mark.parametrize("path", ["/v1/applications", "/v1/loans"])
def test_list__nul_status_filter__422_naming_the_field(gateway_schema, bearer, path):
    response = _call_documented(gateway_schema, bearer, "GET", path, query={"status": "\x00"})
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["query.status"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/loans/{loan_id}/approval-request"),
        ("POST", "/v1/offers/{offer_id}/accept"),
    ],
)
def test_chain_endpoints__no_chain__declared_503(gateway_schema, bearer, method, path):
    kwargs: dict = {"path_parameters": {"loan_id" if "loan_id" in path else "offer_id": str(uuid.uuid4())}}
    if method == "POST":
        kwargs |= {
            "body": {
                "payout": {"method": "bank_transfer", "account_number": "0123456789", "bank_code": "058"}
            },
            "media_type": "application/json",
        }
    response = _call_documented(gateway_schema, bearer, method, path, **kwargs)
    assert response.status_code == 503
    assert response.json()["type"] == UNAVAILABLE
