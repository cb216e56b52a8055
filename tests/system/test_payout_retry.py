"""A payout the bank refuses once, then pays on the automatic retry under the same reference."""

from __future__ import annotations

from typing import Any

import pytest
from eventually import eventually
from system_support import Stack

from offchain.domain import money_movement

pytestmark = [pytest.mark.stack, pytest.mark.all_chains]


def test_payout__fails_then_succeeds_on_retry__same_reference_one_disbursement(stack: Stack) -> None:
    # the rail refuses the next transfer it is asked for: this loan's
    rule = stack.sim.post("/simulate/scenario", json={"transfer": {"outcome": "failed"}})
    assert rule.status_code == 200, rule.text
    try:
        loan_id = stack.approved_loan("system-payout-retry")
        loan = stack.loan_in(loan_id, "ACTIVE", within_s=120)
    finally:
        stack.sim.delete("/simulate/scenario")

    def succeeded() -> dict[str, Any] | None:
        payout = stack.get(f"/v1/payouts/{loan_id}")
        return payout if payout["status"] == "succeeded" and payout["recorded_on_chain"] else None

    payout = eventually(succeeded, what="the payout to succeed")
    reference = payout["reference"]
    assert payout["attempt"] == 2, payout
    assert payout["amount"]["value"] == loan["principal"]["value"]

    # on the rail: one transfer under the one reference, failed first, then paid
    def webhooks(event: str) -> list[dict[str, Any]]:
        return stack.sim.get("/simulate/webhooks", params={"event": event, "reference": reference}).json()

    failed, paid = webhooks("transfer.failed"), webhooks("transfer.success")
    assert len(failed) == 1 and len(paid) == 1, (failed, paid)
    assert failed[0]["seq"] < paid[0]["seq"]
    transfers = [t for t in stack.sim.get("/simulate/transfers").json() if t["reference"] == reference]
    assert [t["status"] for t in transfers] == ["success"]

    # on chain: disbursed once, with the rail reference of that one transfer
    disbursed = stack.events(loan_id, "LoanDisbursed")
    assert len(disbursed) == 1
    assert disbursed[0]["tx_hash"] == payout["disbursed_tx"]
    expected_rail_ref = "0x" + money_movement.rail_ref(payout["rail"], reference).hex()
    assert disbursed[0]["args"]["rail_ref"] == expected_rail_ref
    assert int(disbursed[0]["args"]["amount"]) == loan["principal"]["value"]
