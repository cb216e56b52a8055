"""The spec of who may call what (tests/offchain/integration/test_permission_matrix.py holds
every served route to it): one rule per (method, path), whichever service serves it."""

from __future__ import annotations

import re
import uuid

from offchain.platform import auth
from offchain.platform.access import AccessRule, Kind

A = auth
P = AccessRule.partner
O = AccessRule.operator  # noqa: E741 - the matrix's alphabet
PO = AccessRule.shared
ANY_SERVICE = AccessRule.service(declared=False)
PROBE = AccessRule(Kind.PROBE)


def public(reason: str) -> AccessRule:
    return AccessRule(Kind.PUBLIC, reason=reason)


TX_CALLERS = AccessRule.service(frozenset({"gateway", "disbursement", "repayment", "collections"}))

# The spec: every (method, path) any service serves, and who may call it.
CONSOLE_PAGE = public("a static page with no data: every API it calls authenticates the caller itself")

RULES: dict[tuple[str, str], AccessRule] = {
    # partner API (gateway)
    ("GET", "/v1/loans/{loan_id}"): P(A.LOAN_READ),
    ("POST", "/v1/applications"): P(A.APPLICATION_CREATE),
    ("GET", "/v1/applications/{application_id}"): P(A.APPLICATION_READ),
    ("GET", "/v1/applications"): P(A.APPLICATION_READ),
    ("GET", "/v1/loans"): P(A.LOAN_READ),
    ("GET", "/v1/loans/{loan_id}/schedule"): P(A.LOAN_READ),
    ("GET", "/v1/loans/{loan_id}/repayments"): P(A.LOAN_READ),
    ("GET", "/v1/audit/loans/{loan_id}"): P(A.AUDIT_READ),
    ("GET", "/v1/audit/log"): PO(A.AUDIT_READ, A.OPERATIONS_READ),
    ("POST", "/v1/offers/{offer_id}/accept"): P(A.APPLICATION_CREATE),
    ("GET", "/v1/loans/{loan_id}/approval-request"): P(A.LOAN_READ),
    ("POST", "/v1/loans/{loan_id}/approvals"): P(A.APPLICATION_APPROVE),
    # consoles (gateway /console, docs/CONSOLES.md): static pages and the public chain config;
    # the signer's agreement needs what approval-request needs
    ("GET", "/console"): CONSOLE_PAGE,
    ("GET", "/console/"): CONSOLE_PAGE,
    ("GET", "/console/signer"): CONSOLE_PAGE,
    ("GET", "/console/auditor"): CONSOLE_PAGE,
    ("GET", "/console/operator"): CONSOLE_PAGE,
    ("GET", "/console/api/config"): public("public chain configuration: the RPC URL and contract addresses"),
    ("GET", "/console/api/loans/{loan_id}/agreement"): P(A.LOAN_READ),
    ("POST", "/v1/events/sme"): public("signed by the SME platform (x-sme-signature over the body)"),
    ("POST", "/v1/webhooks/paystack"): public(
        "signed by Paystack (x-paystack-signature, HMAC-SHA512 of the body)"
    ),
    # payouts
    ("GET", "/v1/payouts/{loan_id}"): PO(A.DISBURSEMENT_EXECUTE, A.OPERATIONS_READ),
    ("POST", "/v1/payouts/{loan_id}/retry"): O(A.OPERATIONS_MANAGE),
    ("POST", "/v1/payouts/{loan_id}/release"): O(A.OPERATIONS_MANAGE),
    ("POST", "/v1/payouts/{loan_id}/finalize"): O(A.OPERATIONS_MANAGE),
    ("GET", "/v1/monitoring/flags"): O(A.OPERATIONS_READ),
    # payments
    ("GET", "/v1/payments"): PO(A.COLLECTION_MANAGE, A.OPERATIONS_READ),
    ("GET", "/v1/payments/{payment_id}"): PO(A.COLLECTION_MANAGE, A.OPERATIONS_READ),
    ("POST", "/v1/payments/{payment_id}/match"): PO(A.COLLECTION_MANAGE, A.OPERATIONS_MANAGE),
    ("POST", "/v1/payments/{payment_id}/reverse"): P(A.COLLECTION_MANAGE),
    ("POST", "/v1/loans/{loan_id}/payment-references"): P(A.COLLECTION_MANAGE),
    ("POST", "/v1/loans/{loan_id}/virtual-account"): P(A.COLLECTION_MANAGE),
    # payment notices the provider did not confirm
    ("GET", "/v1/payment-notices"): O(A.OPERATIONS_READ),
    ("GET", "/v1/payment-notices/{notice_id}"): O(A.OPERATIONS_READ),
    ("POST", "/v1/payment-notices/{notice_id}/reverify"): O(A.OPERATIONS_MANAGE),
    # collections
    ("POST", "/v1/collections/cob-runs"): O(A.OPERATIONS_MANAGE),
    ("GET", "/v1/collections/cob-runs/{business_date}"): PO(A.COLLECTION_MANAGE, A.OPERATIONS_READ),
    ("GET", "/v1/loans/{loan_id}/collections"): P(A.COLLECTION_MANAGE),
    ("POST", "/v1/loans/{loan_id}/promises-to-pay"): P(A.COLLECTION_MANAGE),
    ("GET", "/v1/collections/write-off-proposals"): P(A.COLLECTION_MANAGE),
    # analytics
    ("GET", "/v1/analytics/portfolio"): P(A.ANALYTICS_READ),
    # webhooks
    ("POST", "/v1/webhook-endpoints"): P(A.WEBHOOK_MANAGE),
    ("GET", "/v1/webhook-endpoints"): P(A.WEBHOOK_MANAGE),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}"): P(A.WEBHOOK_MANAGE),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): P(A.WEBHOOK_MANAGE),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): P(A.WEBHOOK_MANAGE),
    ("GET", "/v1/events"): P(A.WEBHOOK_MANAGE),
    ("GET", "/v1/events/{event_id}"): P(A.WEBHOOK_MANAGE),
    ("POST", "/v1/events/{event_id}/replay"): P(A.WEBHOOK_MANAGE),
    # ledger
    ("GET", "/v1/ledger/accounts/{code}/balance"): PO(A.AUDIT_READ, A.OPERATIONS_READ),
    ("GET", "/v1/ledger/postings/{posting_id}"): PO(A.AUDIT_READ, A.OPERATIONS_READ),
    ("GET", "/v1/ledger/loans/{loan_id}"): PO(A.AUDIT_READ, A.OPERATIONS_READ),
    ("GET", "/v1/ledger/trial-balance"): O(A.OPERATIONS_READ),
    ("GET", "/v1/ledger/reconciliation"): O(A.OPERATIONS_READ),
    ("POST", "/v1/ledger/reconciliation/runs"): O(A.OPERATIONS_MANAGE),
    # operators only
    ("GET", "/v1/operations/dead-letters"): O(A.OPERATIONS_READ),
    ("POST", "/v1/operations/dead-letters/{group}/{message_id}/requeue"): O(A.OPERATIONS_MANAGE),
    ("POST", "/v1/operations/events/{event_id}/replay"): O(A.OPERATIONS_MANAGE),
    # internal: services only
    ("POST", "/v1/assessments"): ANY_SERVICE,
    ("POST", "/v1/pre-assessments"): ANY_SERVICE,
    ("POST", "/v1/bank-statements/analyze"): ANY_SERVICE,
    ("GET", "/v1/models/current"): ANY_SERVICE,
    ("POST", "/v1/quotes"): ANY_SERVICE,
    ("GET", "/v1/pricing"): ANY_SERVICE,
    ("POST", "/v1/tx-intents"): TX_CALLERS,
    ("GET", "/v1/tx-intents/{key}"): TX_CALLERS,
    ("GET", "/v1/health"): AccessRule(Kind.SERVICE_OR_OPERATOR, operator_permission=A.OPERATIONS_READ),
    # probes
    ("GET", "/health/live"): PROBE,
    ("GET", "/health/ready"): PROBE,
    ("GET", "/metrics"): PROBE,
    # an internal port describes itself to CaaS services and operators only
    ("GET", "/openapi.json"): AccessRule(Kind.SERVICE_OR_OPERATOR, operator_permission=A.OPERATIONS_READ),
}

_SAMPLES = {
    "business_date": "2026-01-05",
    "code": "cash:operating",
    "posting_id": "no-such-posting",
    "key": "no-such-intent",
    "group": "no-such-group",
    "message_id": "1-0",
}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _SAMPLES.get(m.group(1), str(uuid.uuid4())), path)


# A path whose rule differs on one service (say a gateway route that answers the public while
# its namesake on an internal port does not): (service, method, path) -> rule, read first.
BY_SERVICE: dict[tuple[str, str, str], AccessRule] = {
    # the gateway answers partners (without detail) and operators; health:8010 itself is internal
    ("gateway", "GET", "/v1/health"): PO(A.LOAN_READ, A.OPERATIONS_READ),
    # the partner API's manual
    ("gateway", "GET", "/openapi.json"): public(
        "the partner API's description: what any partner may read in its manual"
    ),
    ("gateway", "GET", "/docs"): public(
        "the partner API's description: what any partner may read in its manual"
    ),
}


def rule_for(service: str, method: str, path: str) -> AccessRule:
    """The spec's rule of `method path` on `service` (KeyError: the route has none)."""
    return BY_SERVICE.get((service, method, path)) or RULES[(method, path)]
