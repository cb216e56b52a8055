"""Paystack's documented samples (tests/offchain/fixtures/paystack) replayed against `caas up`,
signed as Paystack signs them -- x-paystack-signature = hex HMAC-SHA512 of the raw body with the
secret key -- each twice: recorded once, at the borrower's amount, on chain; the payer-borne fee
kept off the loan; a charge Paystack never heard of listed as not confirmed."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from eventually import eventually
from system_support import Stack

pytestmark = pytest.mark.stack
SAMPLES = Path(__file__).resolve().parents[1] / "offchain" / "fixtures" / "paystack"


def _sample(name: str) -> dict[str, Any]:
    doc = json.loads((SAMPLES / f"{name}.json").read_text())
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _replay(stack: Stack, payload: dict[str, Any]) -> list[str]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    secret = stack.dev_env["PAYSTACK_SECRET_KEY"].encode()
    signature = hmac.new(secret, body, hashlib.sha512).hexdigest()
    answers = [
        stack.api.post("/v1/webhooks/paystack", content=body, headers={"x-paystack-signature": signature})
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    return [a.json()["status"] for a in answers]


def test_documented_samples_replayed_on_caas_up__recorded_once_at_the_borrowers_amount(stack: Stack) -> None:
    loan_id = stack.approved_loan("system-paystack-samples")
    owed = stack.loan_in(loan_id, "ACTIVE", within_s=120)["outstanding"]["value"]

    # the verify sample's transaction (40333 = requested 30050 + fees 10283), naming this loan
    paid = _sample("verify_transaction")["data"]
    paid["reference"] = "re4lyvq3s3-system"
    paid["metadata"] = {"loan_id": loan_id}
    assert stack.sim.post("/simulate/transactions", json={"transaction": paid}).status_code == 201
    assert _replay(stack, {"event": "charge.success", "data": paid}) == ["accepted", "duplicate"]

    # the webhooks page's charge.success, metadata 0: no loan named, suspense at 10000
    charge = _sample("charge_success")
    charge["data"]["reference"] = "qTPrJoy9Bx-system"
    assert stack.sim.post("/simulate/transactions", json={"transaction": charge["data"]}).status_code == 201
    assert _replay(stack, charge) == ["accepted", "duplicate"]

    # a charge Paystack never heard of
    unknown = _sample("charge_success")
    unknown["data"]["reference"] = "never-heard-of-system"
    assert _replay(stack, unknown) == ["accepted", "duplicate"]

    def recorded() -> dict[str, Any] | None:
        page = stack.get("/v1/payments", params={"limit": 200})
        found = [p for p in page["data"] if p["reference"] == paid["reference"]]
        return found[0] if found and found[0]["status"] == "recorded" else None

    payment = eventually(recorded, what="the sample's payment recorded on chain")
    assert payment["amount"]["value"] == 30050 and payment["applied"]["value"] == 30050
    assert (payment["provider_fee"]["value"], payment["payer_fee"]["value"]) == (10283, 10283)
    assert stack.book.functions.is_payment_recorded(bytes.fromhex(payment["payment_ref"][2:])).call()
    assert stack.loan(loan_id)["outstanding"]["value"] == owed - 30050
    repayments = [tx for tx in stack.events(loan_id, "RepaymentRecorded")]
    assert [int(tx["args"]["amount"]) for tx in repayments] == [30050]  # once, the borrower's amount

    def suspended() -> dict[str, Any] | None:
        # no loan claims it: nobody's but the operators' (a partner sees only what it can place)
        page = stack.get("/v1/payments", params={"status": "unmatched", "limit": 200}, headers=stack.operator)
        found = [p for p in page["data"] if p["reference"] == charge["data"]["reference"]]
        return found[0] if found else None

    assert eventually(suspended, what="the metadata-0 sample in suspense")["amount"]["value"] == 10000

    def not_confirmed() -> dict[str, Any] | None:
        page = stack.get("/v1/payment-notices", headers=stack.operator)
        found = [n for n in page["data"] if n["reference"] == "never-heard-of-system"]
        return found[0] if found else None

    notice = eventually(not_confirmed, what="the unknown charge listed as not confirmed")
    assert (notice["status"], notice["reason"], notice["notices"]) == ("not_confirmed", "not_found", 1)
