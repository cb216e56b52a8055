"""Operator console: a payout held by monitoring is released, unmatched money is matched, both
through the operator APIs under the operator's token, and both land in the audit log."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from conftest import Console
from eventually import eventually
from system_support import Stack

pytestmark = pytest.mark.stack


def loan_paid_to_a_shared_account(stack: Stack, external_id: str) -> str:
    """Another borrower's loan paying out to the account the demo borrower's loans use: approved
    on chain, its payout held for review (rule shared_payout_account)."""
    loan_id = stack.pending_loan(external_id, borrower="bright-bakery-ltd", amount=200_000_00)
    stack.sign_off(loan_id)
    eventually(  # 404 until the disbursement service has made the payout
        lambda: (
            (r := stack.api.get(f"/v1/payouts/{loan_id}", headers=stack.operator)).status_code == 200
            and r.json()["status"] == "review"
        ),
        within_s=90,
        what="the payout held for review",
    )
    return loan_id


def test_an_operator_releases_a_held_payout_and_matches_unmatched_money(browser: Any, stack: Stack) -> None:
    # the account's first borrower (disbursed: the loan the unmatched money is matched to), then
    # another borrower paying out to the same account (held)
    target = stack.approved_loan(f"console-ops-target-{time.time_ns()}")
    stack.loan_in(target, "ACTIVE", within_s=120)
    held = loan_paid_to_a_shared_account(stack, f"console-ops-held-{time.time_ns()}")
    reference = f"console-unmatched-{uuid.uuid4().hex[:8]}"
    charge = {"amount": 10_000_00, "currency": "NGN", "reference": reference}
    assert stack.sim.post("/simulate/charge", json=charge).status_code == 201

    def unmatched() -> dict[str, Any] | None:
        page = stack.get("/v1/payments", params={"status": "unmatched", "limit": 200}, headers=stack.operator)
        return next((p for p in page["data"] if p["reference"] == reference), None)

    payment = eventually(unmatched, what="the charge in suspense")

    console = Console(browser, stack)
    try:
        console.open("/console/operator")
        page = console.page
        page.get_by_label("Operator token").fill(stack.dev_env["DEMO_OPERATOR_TOKEN"])
        page.get_by_label("Operator token").press("Enter")
        console.wait(f'[data-release="{held}"]')
        console.wait(f'form[data-payment="{reference}"]')
        console.wait("#overall")
        console.screenshot("operator-1280")
        page.set_viewport_size({"width": 390, "height": 844})
        console.screenshot("operator-390")
        page.set_viewport_size({"width": 1280, "height": 900})

        page.locator(f'[data-release="{held}"]').click()
        eventually(lambda: "done" in page.locator("#status").inner_text(), what="the release")
        stack.loan_in(held, "ACTIVE", within_s=120)

        page.get_by_label(f"Loan id for {reference}").fill(target)
        page.get_by_label(f"Loan id for {reference}").press("Enter")  # the keyboard submits the match
        eventually(
            lambda: (
                "done" in page.locator("#status").inner_text()
                and "Match" in page.locator("#status").inner_text()
            ),
            what="the match",
        )
        matched = stack.get(f"/v1/payments/{payment['id']}", headers=stack.operator)
        assert matched["status"] != "unmatched" and matched["loan_id"] == target, matched
        assert console.errors() == []
    finally:
        console.close()

    log = stack.get("/v1/audit/log", params={"limit": 50}, headers=stack.operator)["data"]
    actions = {(e["action"], e["subject_id"]) for e in log if e["actor"].startswith("operator:")}
    assert ("payout.release", held) in actions, log
    assert any(action.startswith("payment.") and subject == payment["id"] for action, subject in actions), log
