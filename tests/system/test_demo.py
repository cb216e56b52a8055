"""`caas demo` against the running stack: one loan end to end, and the chain agrees it is REPAID."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from system_support import Stack

from offchain.domain.loan_book import LoanState

pytestmark = [pytest.mark.stack, pytest.mark.all_chains]

TX = re.compile(r"^\s+tx (0x[0-9a-f]{64})$", re.MULTILINE)
DONE = re.compile(r"^done in [\d.]+s: loan ([0-9a-f-]{36}) is REPAID on chain", re.MULTILINE)
STEPS = [
    "application",
    "decision",
    "offer",
    "acceptance",
    "signature 1/2",
    "signature 2/2",
    "payout",
    "repayment 1/3",
    "repayment 2/3",
    "repayment 3/3",
    "REPAID",
]


def _demo(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # run where `caas up` ran: the demo finds the stack through .caas/dev.env alone
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", "demo", *args],
        cwd=stack.cwd,
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_caas_demo__one_loan_end_to_end__exits_0_and_the_chain_says_repaid(stack: Stack) -> None:
    started = time.monotonic()
    run = _demo(stack)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    print(f"\n{out}caas demo: {seconds:.1f}s wall")

    labels = re.findall(r"^\s*\d+\. (.+?)\s{2,}", out, re.MULTILINE)
    assert labels == STEPS, labels
    (loan_id,) = DONE.findall(out)
    loan = stack.loan(loan_id)
    chain_loan_id = loan["chain_loan_id"]

    # the chain itself, not the backend's copy
    raw_id = bytes.fromhex(chain_loan_id[2:])
    assert stack.chain_state(chain_loan_id) is LoanState.REPAID
    assert stack.book.functions.outstanding(raw_id).call() == 0
    assert loan["chain_state"] == "REPAID" and loan["outstanding"]["value"] == 0

    # every printed hash is a mined, successful transaction that emitted this loan's event
    printed = TX.findall(out)
    by_tx: dict[str, set[str]] = {}
    for event in loan["transactions"]:
        by_tx.setdefault(event["tx_hash"], set()).add(event["event"])
    # create, approve, disburse, three repayments; the last repayment's tx also emits LoanRepaid
    assert len(printed) == 7 and len(set(printed)) == 6, printed
    for tx_hash in printed:
        assert stack.w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
        assert tx_hash in by_tx, (tx_hash, by_tx)
    expected = ["LoanCreated", "LoanApproved", "LoanDisbursed", "RepaymentRecorded", "RepaymentRecorded"]
    for tx_hash, event in zip(printed[:5], expected, strict=True):
        assert event in by_tx[tx_hash], (event, tx_hash, by_tx[tx_hash])
    assert by_tx[printed[5]] == {"RepaymentRecorded", "LoanRepaid"} and printed[6] == printed[5]

    # three repayments on chain, each once, though the first charge's webhook came twice
    recorded = [e for e in loan["transactions"] if e["event"] == "RepaymentRecorded"]
    assert len(recorded) == 3
    assert len({e["args"]["payment_ref"] for e in recorded}) == 3
    for event in recorded:
        assert stack.book.functions.is_payment_recorded(
            bytes.fromhex(event["args"]["payment_ref"][2:])
        ).call()
    assert sum(int(e["args"]["amount"]) for e in recorded) == loan["total_due"]["value"]
    # the auditor's view the demo points to: chain, recomputed event chain and backend agree
    audit = subprocess.run(
        [sys.executable, "-m", "offchain.cli", "audit", chain_loan_id],
        cwd=stack.cwd,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "OK: chain, logs and backend agree" in audit.stdout

    first_charge = re.search(r"Paystack charge (demo-\w+-r1)", out)
    assert first_charge is not None
    deliveries = stack.sim.get(
        "/simulate/webhooks", params={"event": "charge.success", "reference": first_charge.group(1)}
    ).json()
    assert [d["state"] for d in deliveries] == ["delivered", "delivered"]
    assert all(200 <= d["attempts"][-1]["status_code"] < 300 for d in deliveries)


def test_caas_demo__failures__exit_1_with_the_step_and_reason(stack: Stack) -> None:
    # nothing listening where the gateway should be
    unreachable = _demo(stack, GATEWAY_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert (
        "caas demo failed at preflight: cannot reach the gateway at http://127.0.0.1:9" in unreachable.stderr
    )

    # the SME platform reports the borrower's KYC rejected: the underwriter declines, the demo stops there
    declined = _demo(stack, "--sme-user-id", "kyc-rejected-demo", "--timeout", "60")
    assert declined.returncode == 1, declined.stdout
    assert "caas demo failed at decision: the application was declined" in declined.stderr
    assert " 1. application" in declined.stdout and "acceptance" not in declined.stdout
