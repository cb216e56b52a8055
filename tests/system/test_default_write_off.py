"""A loan that is never repaid: closes of business see it missed, past due, DEFAULTED at the
contract's threshold (mark_default on chain) and proposed for write-off; the committee's
signers propose, confirm and execute the write-off from their own keys. Moves the chain's clock
by months, so it runs after the other system tests (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from eventually import eventually
from system_support import DAY, Stack, lagos_date

from offchain.domain.loan_book import LoanState

pytestmark = [pytest.mark.stack, pytest.mark.time_travel, pytest.mark.all_chains]
HOUR = 3_600


def test_missed_payments__default_at_threshold__committee_writes_off(stack: Stack) -> None:
    loan_id = stack.approved_loan("system-default")
    loan = stack.loan_in(loan_id, "ACTIVE", within_s=120)
    chain_loan_id = loan["chain_loan_id"]
    disbursed_at = int(datetime.fromisoformat(loan["disbursed_at"]).timestamp())
    first_due = disbursed_at + loan["installment_interval_s"]
    grace = loan["grace_period_s"]
    threshold = stack.book.functions.default_after_days().call()
    raw_id = bytes.fromhex(chain_loan_id[2:])

    closed: list[str] = []

    def close_business_days_until(unix: int) -> None:
        """Move the chain to `unix`, then close every business date since the last one closed
        up to that date (the catch-up the daily job does after an outage)."""
        stack.warp_to(unix)
        day = lagos_date(stack.head_timestamp())
        # an operator's action: the close of business runs over every partner's loans
        result = stack.post(
            "/v1/collections/cob-runs",
            {"business_date": day.isoformat(), "catch_up": True},
            headers=stack.operator,
        )
        runs = result["runs"]
        assert all(r["status"] == "completed" and r["loans_processed"] >= 1 for r in runs), runs
        assert runs[-1]["business_date"] == day.isoformat()
        closed.extend(r["business_date"] for r in runs)

    def history() -> list[str]:
        return [h["kind"] for h in stack.get(f"/v1/loans/{loan_id}/collections")["history"]]

    # the first installment falls due; the next day it is missed
    close_business_days_until(first_due + HOUR)
    close_business_days_until(first_due + grace + DAY + HOUR)
    assert "missed" in history()
    # past the grace period: past due, and a late fee within the cap
    assert stack.book.functions.days_past_due(raw_id, stack.head_timestamp()).call() >= 1
    eventually(lambda: stack.events(loan_id, "LateFeeAssessed"), what="LateFeeAssessed")

    # every business date on to one day short of the threshold (catch-up covers 31 at most)
    for days in range(30, threshold - 1, 30):
        close_business_days_until(first_due + days * DAY + HOUR)
    close_business_days_until(first_due + (threshold - 1) * DAY + HOUR)
    assert stack.book.functions.days_past_due(raw_id, stack.head_timestamp()).call() == threshold - 1
    assert "mark_default" not in history()
    assert stack.chain_state(chain_loan_id) is LoanState.ACTIVE

    # at the threshold: the close of business sends mark_default
    close_business_days_until(first_due + threshold * DAY + HOUR)
    assert "mark_default" in history()
    eventually(lambda: stack.chain_state(chain_loan_id) is LoanState.DEFAULTED, what="DEFAULTED on chain")
    stack.loan_in(loan_id, "DEFAULTED")
    (defaulted,) = stack.events(loan_id, "LoanDefaulted")

    # the next business day opens the committee's write-off proposal
    close_business_days_until(stack.head_timestamp() + DAY)
    proposals = [
        p for p in stack.get("/v1/collections/write-off-proposals")["data"] if p["loan_id"] == loan_id
    ]
    assert len(proposals) == 1, proposals
    proposal = proposals[0]
    assert proposal["status"] == "awaiting_signers", proposal
    assert proposal["propose"]["action"] == 5 and proposal["propose"]["arg"] == chain_loan_id
    assert proposal["committee"].lower() == stack.deployment.committee_address.lower()

    # signers, from their own keys: one proposes the stored calldata, another confirms, one executes
    first, second = stack.signer_keys[:2]
    committee = stack.committee
    receipt = stack.transact(first, proposal["committee"], proposal["calldata"])
    (proposed,) = committee.events.Proposed().process_receipt(receipt)
    proposal_id = proposed["args"]["proposal_id"]
    assert proposed["args"]["action"] == 5 and proposed["args"]["arg"] == raw_id
    assert stack.chain_state(chain_loan_id) is LoanState.DEFAULTED  # one signature is not enough
    stack.transact(second, proposal["committee"], committee.encode_abi("confirm", args=[proposal_id]))
    stack.transact(first, proposal["committee"], committee.encode_abi("execute", args=[proposal_id]))

    assert stack.chain_state(chain_loan_id) is LoanState.WRITTEN_OFF
    written_off = stack.loan_in(loan_id, "WRITTEN_OFF")
    assert [e["event"] for e in written_off["transactions"]][-1] == "LoanWrittenOff"
    assert stack.book.functions.outstanding(raw_id).call() > 0  # written off, not repaid
    listed = [p for p in stack.get("/v1/collections/write-off-proposals")["data"] if p["loan_id"] == loan_id]
    assert listed[0]["status"] == "executed"

    # a recovery after the write-off (issue 20: recorded, not refused): the borrower pays through
    # Paystack, the chain records it and the loan stays WRITTEN_OFF with less outstanding; the
    # ledger keeps the written-off receivable at zero (the money reduces the credit loss) and
    # reconciliation finds nothing to say about the loan
    outstanding = stack.book.functions.outstanding(raw_id).call()
    recovery = 10_000_00
    charged = stack.sim.post(
        "/simulate/charge",
        json={"amount": recovery, "currency": "NGN", "loan_id": loan_id, "reference": f"recovery-{loan_id}"},
    )
    assert charged.status_code == 201, charged.text
    eventually(lambda: stack.events(loan_id, "RepaymentRecorded") or None, what="recovery recorded on chain")
    assert stack.book.functions.outstanding(raw_id).call() == outstanding - recovery
    assert stack.chain_state(chain_loan_id) is LoanState.WRITTEN_OFF
    # the ledger's routes through the gateway, the one published port: the partner's statement,
    # the operator's reconciliation run
    ledger = stack.api

    def receivable_cleared() -> dict | None:
        statement = ledger.get(f"/v1/ledger/loans/{loan_id}").json()
        receivable = [a for a in statement["accounts"] if a["kind"] == "loan_receivable"]
        recovered = [e for e in statement["entries"] if e["posting_id"].startswith("recovery:")]
        return statement if receivable and receivable[0]["balance"] == 0 and recovered else None

    eventually(receivable_cleared, what="the recovery booked against credit losses")
    run = ledger.post("/v1/ledger/reconciliation/runs", headers=stack.operator)
    assert run.status_code == 201, run.text
    about_loan = [m for m in run.json()["mismatches"] if chain_loan_id.lower() in str(m["subject"]).lower()]
    assert about_loan == [], about_loan
    # every business date since the first one closed exactly once, none skipped
    first_day = lagos_date(first_due + HOUR)
    assert closed == [(first_day + timedelta(days=n)).isoformat() for n in range(len(closed))], closed
    assert len(closed) >= threshold + 1
    kinds = history()
    assert kinds.index("missed") < kinds.index("mark_default") < kinds.index("write_off_proposal"), kinds
    print(
        f"\ndefault: first installment due {datetime.fromtimestamp(first_due, UTC):%Y-%m-%d %H:%M} UTC, "
        f"DEFAULTED at {threshold} days past due "
        f"(tx {defaulted['tx_hash']}), written off by proposal {proposal_id}; {len(closed)} business dates "
        f"closed, {closed[0]} to {closed[-1]}"
    )
