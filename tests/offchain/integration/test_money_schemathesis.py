"""The money routes the gateway serves (payouts, payments, monitoring, the Paystack webhook intake,
the audit log) against their own OpenAPI, with Schemathesis generating the requests.

Same checks as test_gateway_schemathesis.py: no 5xx (but a declared 503 for the chain this setup
leaves out), documented status codes, content types and bodies.
"""

from __future__ import annotations

import uuid

import schemathesis
from fuzz_support import credentials
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from test_gateway_schemathesis import CHECKS, gateway_schema  # noqa: F401 - fixtures

MONEY_API = (
    r"^/v1/(payouts/\{loan_id\}(/(retry|release|finalize))?|payments(/\{payment_id\}(/(match|reverse))?)?"
    r"|monitoring/flags|loans/\{loan_id\}/(payment-references|virtual-account)|webhooks/paystack|audit/log)$"
)
schema = schemathesis.pytest.from_fixture("gateway_schema").include(path_regex=MONEY_API)
PARTNER = uuid.uuid4()


@schema.parametrize()
@hypothesis_settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_money_routes__conform_to_their_openapi(case, settings):
    # each operation with the identity its access rule asks for (partner, or operator)
    headers = credentials("gateway", case.operation.method, case.operation.path, settings)
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)
