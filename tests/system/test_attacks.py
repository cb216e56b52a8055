"""The attacks of issues 14 and 15, replayed against `caas up` as an outsider would send them.

Everything goes over HTTP to the ports `caas up` serves (and JSON-RPC to its chain), with only
what an attacker could hold: partner tokens (any permissions, the SME auth service's key being
the platform's, as a partner integration's own tokens would be), a forged service token, and the
provider secrets where the attack is "a validly signed but hostile webhook". Each case asserts
the refusal and that nothing moved: the chain's loan, the unmatched money, the sending key's nonce.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from eth_utils import keccak
from eventually import eventually
from system_support import Stack

from offchain.chain.contracts import sign_approval
from offchain.demo import valid_nuban
from offchain.platform import auth
from offchain.platform.service_auth import issue_service_token
from offchain.rails.paystack.webhooks import sign as paystack_sign
from offchain.rails.sme.events import encode_event
from offchain.rails.sme.events import sign as sme_sign

pytestmark = pytest.mark.stack

INTERNAL = range(8001, 8011)
PAYSTACK_SAMPLES = Path(__file__).resolve().parents[1] / "offchain" / "fixtures" / "paystack"


def _paystack_sample(name: str) -> dict[str, Any]:
    doc = json.loads((PAYSTACK_SAMPLES / f"{name}.json").read_text())
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _partner(stack: Stack, partner_id: uuid.UUID, *permissions: str) -> dict[str, str]:
    token = auth.issue_token(
        stack.dev_env["JWT_SECRET"], partner_id=partner_id, permissions=permissions or auth.ALL_PERMISSIONS
    )
    return {"Authorization": f"Bearer {token}"}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    return response.json()


@pytest.fixture(scope="module")
def active_loan(stack: Stack) -> Iterator[tuple[str, str]]:
    """A loan of the demo partner, ACTIVE on chain: (loan id, chain loan id)."""
    loan_id = stack.approved_loan("attack-target")
    loan = stack.loan_in(loan_id, "ACTIVE", within_s=120)
    yield loan_id, loan["chain_loan_id"]


def test_internal_ports__nothing_acts_without_a_service_identity(
    stack: Stack, active_loan: tuple[str, str]
) -> None:
    loan_id, chain_loan_id = active_loan
    raw = bytes.fromhex(chain_loan_id[2:])
    forged_ref = keccak(text=f"attacker:{uuid.uuid4()}")
    data = stack.book.encode_abi("record_repayment", args=[raw, 1000, forged_ref])
    body = {
        "idempotency_key": f"forged-{uuid.uuid4()}",
        "to": stack.deployment.loan_book_address,
        "data": data,
    }
    outstanding = stack.book.functions.outstanding(raw).call()
    sender = stack.w3.eth.account.from_key(stack.dev_env["SENDER_PRIVATE_KEY"]).address
    nonce = stack.w3.eth.get_transaction_count(sender)
    partner = _partner(stack, uuid.uuid4())
    forged_service = issue_service_token(
        "not-the-deployment-key-" + "x" * 20, caller="repayment", audience="orchestration"
    )
    real_repayment = issue_service_token(
        stack.dev_env["SERVICE_KEY"], caller="repayment", audience="orchestration"
    )
    answers = {}
    with httpx.Client(base_url="http://127.0.0.1:8008", timeout=10) as orchestration:
        for name, headers in {
            "no token": {},
            "partner": partner,
            "operator": {"Authorization": f"Bearer {stack.dev_env['DEMO_OPERATOR_TOKEN']}"},
            "forged service": {"Authorization": f"Bearer {forged_service}"},
            # even the repayment service may not ask over HTTP for what the chain takes on its word
            "repayment over HTTP": {"Authorization": f"Bearer {real_repayment}"},
        }.items():
            answers[name] = orchestration.post("/v1/tx-intents", json=body, headers=headers).status_code
    assert answers == {
        "no token": 401,
        "partner": 401,
        "operator": 401,
        "forged service": 401,
        "repayment over HTTP": 403,
    }, answers
    # absence shown by the next real movement: a borrower's charge, recorded by the same sending
    # key after the attacks; had any forged intent been taken, it would have gone first
    genuine = f"attack-genuine-{uuid.uuid4().hex[:8]}"
    charged = stack.sim.post(
        "/simulate/charge",
        json={"amount": 1_000_00, "currency": "NGN", "loan_id": loan_id, "reference": genuine},
    )
    assert charged.status_code == 201, charged.text
    genuine_ref = keccak(text=f"paystack:{genuine}")
    eventually(
        lambda: stack.book.functions.is_payment_recorded(genuine_ref).call(),
        what="the genuine repayment after the attacks",
    )
    assert stack.book.functions.outstanding(raw).call() == outstanding - 1_000_00
    assert not stack.book.functions.is_payment_recorded(forged_ref).call()
    assert stack.w3.eth.get_transaction_count(sender) == nonce + 1

    # every internal port: a partner's token is no identity there (probes stay open)
    for port in INTERNAL:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/health/ready").status_code == 200
            # the port's description is no map for an anonymous caller either
            assert client.get("/openapi.json").status_code == 401
            assert client.get("/docs").status_code in (401, 404)
            spec = client.get("/openapi.json", headers=stack.operator).json()
            for path, operations in spec["paths"].items():
                if path.startswith("/health") or path == "/metrics":
                    continue
                for method in operations:
                    url = path.replace("{", "").replace("}", "")  # any value: refused before routing
                    anonymous = client.request(method.upper(), url)
                    assert anonymous.status_code in (401, 404, 405, 422), (port, method, path, anonymous.text)
                    assert anonymous.status_code != 500


def test_partners_reach_neither_operator_functions_nor_each_others_money(
    stack: Stack, active_loan: tuple[str, str]
) -> None:
    no_loans = uuid.uuid4()
    collector = _partner(stack, no_loans, auth.COLLECTION_MANAGE)
    cob = stack.api.post("/v1/collections/cob-runs", json={"business_date": "2000-01-04"}, headers=collector)
    assert _problem(cob, 403)["required_permission"] == auth.OPERATIONS_MANAGE
    auditor = _partner(stack, no_loans, auth.AUDIT_READ)
    for path in ("/v1/ledger/trial-balance", "/v1/ledger/reconciliation"):
        _problem(stack.api.get(path, headers=auditor), 403)
        with httpx.Client(base_url="http://127.0.0.1:8006", timeout=10) as ledger:
            assert ledger.get(path, headers=auditor).status_code in (401, 403)

    # money nobody can place: in suspense, listed to operators only, matched by no partner
    reference = f"attack-unmatched-{uuid.uuid4().hex[:8]}"
    assert (
        stack.sim.post(
            "/simulate/charge", json={"amount": 12_345_00, "currency": "NGN", "reference": reference}
        ).status_code
        == 201
    )

    def in_suspense() -> dict[str, Any] | None:
        page = stack.get("/v1/payments", params={"status": "unmatched", "limit": 200}, headers=stack.operator)
        return next((p for p in page["data"] if p["reference"] == reference), None)

    payment = eventually(in_suspense, what="the charge in suspense")
    thief = uuid.uuid4()
    listed = stack.api.get(
        "/v1/payments", params={"status": "unmatched", "limit": 200}, headers=_partner(stack, thief)
    )
    assert reference not in {p["reference"] for p in listed.json()["data"]}
    loan_id, _ = active_loan
    for who in (_partner(stack, thief), stack.api.headers):
        stolen = stack.api.post(f"/v1/payments/{payment['id']}/match", json={"loan_id": loan_id}, headers=who)
        assert stolen.status_code == 404, stolen.text
    assert in_suspense() is not None  # still there, still nobody's


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8008/v1/tx-intents",
        "http://localhost:9000/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0/",
        "https://localhost./",
        "http://169.254.169.254/latest/meta-data/",
        "https://0x7f000001/",
        "http://10.0.0.1/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
    ],
)
def test_webhook_endpoints__internal_addresses_refused(stack: Stack, url: str) -> None:
    answer = stack.api.post("/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]})
    problem = _problem(answer, 422)
    assert problem["errors"][0]["field"] == "body.url", problem


def test_a_64_mib_body_is_refused_before_it_is_read(stack: Stack) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65_536
        for _ in range(1024):
            sent += len(chunk)
            yield chunk

    started = time.monotonic()
    try:
        answer = httpx.post(
            f"{stack.dev_env['GATEWAY_URL']}/v1/applications",
            content=body(),
            headers={"content-type": "application/json", "content-length": str(64 * 2**20)},
            timeout=30,
        )
        assert answer.status_code == 413, answer.text
    except httpx.HTTPError:
        pass  # the server may close the connection after its 413: the point is it stopped reading
    assert time.monotonic() - started < 10
    assert sent < 16 * 2**20, f"{sent} bytes were taken in"


@pytest.mark.parametrize(
    "path",
    ["/v1/payments", "/v1/collections/write-off-proposals", "/v1/analytics/portfolio", "/v1/loans"],
)
def test_partner_routes__under_the_rate_limiter(stack: Stack, path: str) -> None:
    answer = stack.api.get(path)
    assert answer.status_code == 200, answer.text
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(answer.headers), (
        answer.headers
    )


def test_hostile_input__decided_4xx_never_5xx(stack: Stack, active_loan: tuple[str, str]) -> None:
    loan_id, _chain_loan_id = active_loan
    application = {
        "external_id": f"attack-{uuid.uuid4().hex[:8]}",
        "borrower": {"sme_user_id": "acme-trading-ltd"},
        "amount": {"value": 10**78, "currency": "NGN"},
        "tenor_months": 3,
        "purpose": "inventory",
    }
    _problem(stack.api.post("/v1/applications", json=application), 422)
    far = "9999-12-31T23:59:59-12:00"
    for cursor in (
        base64.urlsafe_b64encode(json.dumps({"created_at": far, "id": str(uuid.uuid4())}).encode()).decode(),
        base64.urlsafe_b64encode(("[" * 5000 + "]" * 5000).encode()).decode(),
        "%%%not-base64",
    ):
        answer = stack.api.get("/v1/loans", params={"cursor": cursor})
        assert answer.status_code in (400, 422), answer.text
    assert stack.api.get("/v1/events", params={"since": far}).status_code == 422
    signature = "0x" + "1" * 129
    refused = stack.api.post(
        f"/v1/loans/{loan_id}/approvals", json={"signer": "0x" + "11" * 20, "signature": signature}
    )
    assert refused.status_code in (409, 422), refused.text

    # validly signed but hostile webhooks (Paystack's documented charge.success, made hostile): a
    # decided 2xx, since the provider retries anything else for 72 hours
    secret = stack.dev_env["PAYSTACK_SECRET_KEY"]
    with_nul = _paystack_sample("charge_success")
    with_nul["data"]["reference"] = "bad\u0000ref"
    nested = _paystack_sample("charge_success")
    nested["data"]["reference"] = f"deep-{uuid.uuid4().hex[:8]}"
    nested["data"]["metadata"] = "__DEEP__"
    deep = json.dumps(nested).replace('"__DEEP__"', '{"a": ' * 1000 + "1" + "}" * 1000)
    for body in (json.dumps(with_nul).encode(), deep.encode()):
        answer = stack.api.post(
            "/v1/webhooks/paystack",
            content=body,
            headers={"x-paystack-signature": paystack_sign(body, secret), "content-type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
    event = encode_event(
        "sme.kyc.verified",
        {"sme_user_id": "nul\u0000user"},
        event_id=str(uuid.uuid4()),
        created_at="2026-12-01T00:00:00Z",
    )
    answer = stack.api.post(
        "/v1/events/sme",
        content=event,
        headers={
            "x-sme-signature": sme_sign(event, stack.dev_env["SME_EVENTS_SECRET"]),
            "content-type": "application/json",
        },
    )
    assert answer.status_code == 200 and answer.json()["status"] == "rejected", answer.text

    # a signed JWT whose exp no clock can hold; the formerly unwired ports with and without a token
    forever = jwt.encode(
        {"sub": "x", "partner_id": str(uuid.uuid4()), "exp": 10**400, "creditPermissions": []},
        stack.dev_env["JWT_SECRET"],
        algorithm="HS256",
    )
    _problem(stack.api.get("/v1/loans", headers={"Authorization": f"Bearer {forever}"}), 401)
    # :8003's flags are the operators' (a partner is refused); :8004's payments a partner route
    # scoped to the partner's own rows; both verify tokens like every service (no 500)
    for url, partner_status in (
        ("http://127.0.0.1:8003/v1/monitoring/flags", 403),
        ("http://127.0.0.1:8004/v1/payments", 200),
    ):
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers=stack.api.headers, timeout=10).status_code == partner_status


def test_gateway_health__partners_summary_operators_detail(stack: Stack) -> None:
    _problem(httpx.get(f"{stack.dev_env['GATEWAY_URL']}/v1/health", timeout=10), 401)
    summary = stack.get("/v1/health")
    assert set(summary["caasServices"]) >= {"gateway", "orchestration"}
    assert all("detail" not in entry for entry in summary["dependencies"].values())
    whole = stack.get("/v1/health", headers=stack.operator)
    assert all("detail" in entry for entry in whole["dependencies"].values())


def _pending_loan(stack: Stack, external_id: str) -> str:
    return stack.pending_loan(
        external_id,
        borrower=f"acme-{external_id}",
        amount=200_000_00,
        account_number=valid_nuban(serial=str(uuid.uuid4().int)[:9]),
    )


def test_approvals_and_early_money__nothing_wedges_nothing_strands(stack: Stack) -> None:
    loan_id = _pending_loan(stack, f"attack-approve-{uuid.uuid4().hex[:6]}")
    # money paid while the loan is PENDING: held, then applied once it is ACTIVE
    early = f"attack-early-{uuid.uuid4().hex[:8]}"
    charged = stack.sim.post(
        "/simulate/charge",
        json={"amount": 10_000_00, "currency": "NGN", "loan_id": loan_id, "reference": early},
    )
    assert charged.status_code == 201, charged.text

    request = stack.get(f"/v1/loans/{loan_id}/approval-request")
    required = request["required"]
    signatures = []
    for key in stack.signer_keys[:required]:
        signer, signature = sign_approval(request["typed_data"], key)
        # v as 0/1 (yParity), as some wallets give it: normalized, never kept in a reverting form
        signatures.append(
            {"signer": signer, "signature": "0x" + signature[:64].hex() + f"{signature[64] - 27:02x}"}
        )
    with ThreadPoolExecutor(len(signatures)) as pool:
        answers = list(
            pool.map(lambda body: stack.api.post(f"/v1/loans/{loan_id}/approvals", json=body), signatures)
        )
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    assert sum(1 for a in answers if a.status_code == 200 and a.json().get("submitted")) == 1, [
        a.text for a in answers
    ]
    stack.loan_in(loan_id, "ACTIVE", within_s=120)
    late = stack.api.post(f"/v1/loans/{loan_id}/approvals", json=signatures[0])
    assert _problem(late, 409)["state"] in ("APPROVED", "ACTIVE"), late.text
    _problem(stack.api.get(f"/v1/loans/{loan_id}/approval-request"), 409)

    payment_ref = "0x" + keccak(text=f"paystack:{early}").hex()
    recorded = eventually(
        lambda: stack.events(loan_id, "RepaymentRecorded") or None,
        within_s=90,
        what="the money paid at PENDING applied once the loan is ACTIVE",
    )
    assert [(int(tx["args"]["amount"]), str(tx["args"]["payment_ref"]).lower()) for tx in recorded] == [
        (10_000_00, payment_ref)
    ], recorded
    assert stack.book.functions.is_payment_recorded(bytes.fromhex(payment_ref[2:])).call()
