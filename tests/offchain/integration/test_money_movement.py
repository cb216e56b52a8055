"""Money movement end to end: an approved loan is paid out through the simulated rail, goes ACTIVE,
is repaid by Paystack charges (one delivered twice, one sent ten times at once, one too large),
reaches REPAID, and the ledger matches the chain to the kobo.

Real everything: the gateway serves HTTP on a free port (the simulator's webhooks reach it), the
other services run in this event loop on a fresh database, Redis and Anvil.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from eventually import eventually_async
from identities import operator_headers
from journey_support import approved_loan, loan_state
from money_support import _charge, _partner_headers, running_stack
from simulator_support import PAYSTACK_SECRET
from sqlalchemy import select, text
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.money import Payment, Payout
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.rails.paystack.webhooks import sign
from offchain.services.ledger.reconciliation import reconcile
from offchain.services.ledger.usecases import rail_checks

pytestmark = pytest.mark.asyncio


async def test_payout_repayments_ledger_reconciles(money_settings: Settings, free_port) -> None:
    async with running_stack(money_settings, free_port) as (settings, client, sim):
        headers = _partner_headers(settings)
        approved = await approved_loan(client, headers, external_id="money-1")
        loan_id = approved["loan_id"]

        # -- payout: hold -> transfer -> transfer.success -> record_disbursement -> ACTIVE
        loan = await loan_state(client, headers, loan_id, "ACTIVE", within_s=90)
        payout = (await client.get(f"/v1/payouts/{loan_id}", headers={**headers})).json()
        assert payout["status"] == "succeeded", payout
        transfers = [
            t for t in (await sim.get("/simulate/transfers")).json() if t["reference"] == payout["reference"]
        ]
        assert [t["status"] for t in transfers] == ["success"]
        total_due = loan["outstanding"]["value"]
        chain_loan_id = loan["chain_loan_id"]

        # -- webhook intake refusals change nothing
        tampered_body = json.dumps(
            {"event": "charge.success", "data": {"reference": "x", "amount": 1}}
        ).encode()
        tampered = await client.post(
            "/v1/webhooks/paystack",
            content=tampered_body,
            headers={"x-paystack-signature": sign(tampered_body + b" ", PAYSTACK_SECRET)},
        )
        assert tampered.status_code == 401
        assert tampered.headers["content-type"] == "application/problem+json"
        unknown_body = json.dumps({"event": "subscription.create", "data": {"id": 1}}).encode()
        unknown = await client.post(
            "/v1/webhooks/paystack",
            content=unknown_body,
            headers={"x-paystack-signature": sign(unknown_body, PAYSTACK_SECRET)},
        )
        assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"

        # -- repayment 1: named by metadata.loan_id, delivered twice by the rail
        first = total_due // 3
        await sim.post(
            "/simulate/scenario", json={"webhook": {"fault": "duplicate", "event": "charge.success"}}
        )
        await _charge(sim, amount=first, loan_id=loan_id, reference="money-rp-1")

        # -- repayment 2: the same signed delivery ten times at once
        await sim.post("/simulate/scenario", json={"webhook": {"fault": "drop", "event": "charge.success"}})
        charged = await _charge(sim, amount=first, loan_id=chain_loan_id, reference="money-rp-2")
        delivery = json.dumps(
            {
                "event": "charge.success",
                "data": {k: v for k, v in charged["transaction"].items() if k != "paidAt"},
            }
        ).encode()
        signature = sign(delivery, PAYSTACK_SECRET)
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/webhooks/paystack", content=delivery, headers={"x-paystack-signature": signature}
                )
                for _ in range(10)
            )
        )
        statuses = sorted(a.json()["status"] for a in answers)
        assert [a.status_code for a in answers] == [200] * 10
        assert statuses == ["accepted"] + ["duplicate"] * 9, statuses

        # -- repayment 3: into the loan's dedicated virtual account (no loan id on the payment)
        opened = await client.post(f"/v1/loans/{loan_id}/virtual-account", headers=headers)
        assert opened.status_code == 201, opened.text
        again = await client.post(f"/v1/loans/{loan_id}/virtual-account", headers=headers)
        assert again.json()["account_number"] == opened.json()["account_number"]
        await _charge(
            sim, amount=1_000_00, account_number=opened.json()["account_number"], reference="money-va-1"
        )

        # -- repayment 4: the SME platform's wallet, a signed sme.payment.received event
        sme_payment = await sim.post(
            "/simulate/sme/payment",
            json={
                "amount": 2_000_00,
                "currency": "NGN",
                "method": "wallet",
                "loan_id": loan_id,
                "reference": "money-sme-1",
            },
        )
        assert sme_payment.status_code == 202, sme_payment.text

        async def recorded(*references: str) -> bool:
            async with db.worker_session() as session:
                statuses = (
                    await session.execute(
                        select(Payment.status).where(Payment.provider_reference.in_(references))
                    )
                ).scalars()
                return sorted(statuses) == ["recorded"] * len(references)

        db = Database.from_settings(settings.database)
        await eventually_async(
            lambda: recorded("money-rp-1", "money-rp-2", "money-va-1", "money-sme-1"), within_s=90
        )

        # -- repayment 5: more than is left; the excess is the borrower's credit
        rest = total_due - 2 * first - 1_000_00 - 2_000_00
        await _charge(sim, amount=rest + 1_000_00, loan_id=loan_id, reference="money-rp-3")

        await loan_state(client, headers, loan_id, "REPAID", within_s=90)

        try:

            async def settled():  # type: ignore[no-untyped-def]
                async with db.worker_session() as session:
                    rows = list(
                        (
                            await session.execute(select(Payment).order_by(Payment.provider_reference))
                        ).scalars()
                    )
                return rows if rows and all(r.status == "recorded" for r in rows) and len(rows) == 5 else None

            rows = await eventually_async(settled, within_s=60)
            assert [(r.provider_reference, r.applied, r.excess, r.match_method) for r in rows] == [
                ("money-rp-1", first, 0, "metadata"),
                ("money-rp-2", first, 0, "metadata"),
                ("money-rp-3", rest, 1_000_00, "metadata"),
                ("money-sme-1", 2_000_00, 0, "metadata"),
                ("money-va-1", 1_000_00, 0, "virtual_account"),
            ]
            # on chain: each payment exactly once
            deployment = Deployment.load(settings.chain.deployment_file)
            w3 = Web3(Web3.HTTPProvider(settings.chain.rpc_url))
            book = deployment.loan_book(w3)
            for row in rows:
                assert book.functions.is_payment_recorded(bytes.fromhex(row.payment_ref[2:])).call()
            chain_id = bytes.fromhex(chain_loan_id[2:])
            assert book.functions.outstanding(chain_id).call() == 0

            async with db.worker_session() as session:
                recorded_events = (
                    await session.execute(
                        text(
                            "SELECT count(*) FROM caas_chain_events WHERE event = 'RepaymentRecorded' AND loan_id = :l"
                        ),
                        {"l": chain_loan_id},
                    )
                ).scalar_one()
                assert recorded_events == 5
                receivable = await journal.balance(session, accounts.loan_receivable(loan_id), "NGN")
                unearned = await journal.balance(session, accounts.loan_unearned_income(loan_id), "NGN")
                clearing = await journal.balance(session, accounts.rail_clearing(mm.PAYSTACK), "NGN")
                assert receivable.posted == 0 and receivable.pending_credits == 0
                assert unearned.posted == 0
                # clearing holds what Paystack settles: the charges less its fees (the merchant
                # bore them: the simulator's charges have amount == requested_amount)
                fees = sum(r.provider_fee for r in rows if r.provider == mm.PAYSTACK)
                assert fees > 0 and all(r.payer_fee == 0 for r in rows)
                assert clearing.posted == total_due + 1_000_00 - 2_000_00 - fees
                rail_fees = await journal.balance(session, accounts.rail_fees(mm.PAYSTACK), "NGN")
                assert rail_fees.posted == fees
                sme_clearing = await journal.balance(session, accounts.rail_clearing(mm.SME), "NGN")
                assert sme_clearing.posted == 2_000_00
                for line in await journal.trial_balance(session):
                    assert line.balanced, line
                payout_row = await session.get(Payout, uuid.UUID(loan_id))
                assert payout_row is not None and payout_row.disbursed_tx is not None

            async def partner_events():  # type: ignore[no-untyped-def]
                # credit.loan.repaid follows LoanRepaid on its own consumer: it can trail the rows
                async with db.worker_session() as session:
                    found = dict(
                        (
                            await session.execute(
                                text(
                                    "SELECT topic, count(*) FROM caas_outbox WHERE topic LIKE 'credit.%' "
                                    "AND topic NOT LIKE 'credit.application.%' GROUP BY topic"
                                )
                            )
                        ).all()
                    )
                return found if "credit.loan.repaid" in found else None

            events = await eventually_async(partner_events, within_s=30)
            assert events["credit.disbursement.completed"] == 1
            assert events["credit.repayment.received"] == 5
            assert events["credit.loan.repaid"] == 1

            # -- reconciliation: ledger <-> chain <-> rail agree; a tampered record is caught
            rpc = JsonRpc(settings.chain.rpc_url)
            checks = rail_checks(settings)
            report = await reconcile(db=db, rpc=rpc, deployment=deployment, checks=checks)
            assert report.status == "consistent", [m.as_dict() for m in report.mismatches]
            async with db.worker_session() as session:
                await session.execute(
                    text(
                        "UPDATE caas_payments SET amount = amount + 1 WHERE provider_reference = 'money-rp-2'"
                    )
                )
            report = await reconcile(db=db, rpc=rpc, deployment=deployment, checks=checks)
            kinds = sorted(m.kind for m in report.mismatches)
            assert kinds == ["clearing_vs_payments", "payment_vs_rail"], [
                m.as_dict() for m in report.mismatches
            ]
        finally:
            await db.dispose()


async def _payout_outcome(settings: Settings, loan_id: str) -> dict:
    """What a payout ends as: its row, its ledger effect, the chain."""
    db = Database.from_settings(settings.database)
    try:
        async with db.worker_session() as session:
            payout = await session.get(Payout, uuid.UUID(loan_id))
            assert payout is not None
            receivable = await journal.balance(session, accounts.loan_receivable(loan_id), "NGN")
            funding = await journal.balance(session, accounts.partner_funding(str(payout.partner_id)), "NGN")
            return {
                "status": payout.status,
                "attempt": payout.attempt,
                "reference": payout.reference,
                "chain_requested": payout.chain_requested,
                "receivable": receivable.posted,
                "receivable_pending": receivable.pending_debits,
                "funding_for_this_loan": payout.amount,
                "funding_posted": funding.posted,
            }
    finally:
        await db.dispose()


async def test_failed_then_retried_and_reversals_in_either_order(money_settings: Settings, free_port) -> None:
    async with running_stack(money_settings, free_port) as (settings, client, sim):
        headers = _partner_headers(settings)
        outcomes = {}
        scenarios = {
            # the bank refuses the first transfer; the retry goes out under the same reference
            "failed-once": {"transfer": {"outcome": "failed"}},
            # paid, then reversed 3 s later, webhooks in the order they happened
            "reversed-in-order": {"transfer": {"outcome": "reversed", "delay_s": 3.0}},
            # paid then reversed, but transfer.reversed reaches us before transfer.success
            "reversed-reordered": {
                "transfer": {"outcome": "reversed", "delay_s": 0.5},
                "webhook": {"fault": "reorder", "event": "transfer.success", "hold_s": 10},
            },
        }
        for name, scenario in scenarios.items():
            # rules apply to the next transfer (and webhook): this loan's, the only one in flight
            assert (await sim.post("/simulate/scenario", json=scenario)).status_code == 200
            approved = await approved_loan(client, headers, external_id=f"payout-{name}")
            loan_id = approved["loan_id"]
            await loan_state(client, headers, loan_id, "ACTIVE", within_s=120)

            async def paid(loan_id: str = loan_id):  # type: ignore[no-untyped-def]
                outcome = await _payout_outcome(settings, loan_id)
                # every scenario ends paid by the second transfer under the same reference
                settled = outcome["status"] == "succeeded" and outcome["attempt"] == 2
                return outcome if settled and not outcome["receivable_pending"] else None

            outcomes[name] = await eventually_async(paid, within_s=60)
            transfers = (await sim.get("/simulate/transfers")).json()
            mine = [t for t in transfers if t["reference"] == outcomes[name]["reference"]]
            assert [t["status"] for t in mine] == ["success"], (name, mine)
            await sim.delete("/simulate/scenario")

        # transaction monitoring: another borrower's payout to the same account is held for review
        held = await approved_loan(
            client, headers, external_id="payout-shared-account", sme_user_id="bright-bakery-ltd"
        )

        async def in_review():  # type: ignore[no-untyped-def]
            payout = (await client.get(f"/v1/payouts/{held['loan_id']}", headers=headers)).json()
            return payout if payout.get("status") == "review" else None

        review = await eventually_async(in_review, within_s=60)
        assert "shared_payout_account" in review["last_error"], review
        # a payout to the borrower's SME wallet goes through the SME platform, not Paystack; paid
        # after the held one went to review, it shows the payout worker has moved on past it
        wallet_loan = await approved_loan(
            client,
            headers,
            external_id="payout-wallet",
            payout={"method": "wallet", "account_number": "7012345678", "bank_code": "999"},
        )
        await loan_state(client, headers, wallet_loan["loan_id"], "ACTIVE", within_s=120)
        wallet_payout = (await client.get(f"/v1/payouts/{wallet_loan['loan_id']}", headers=headers)).json()
        assert (wallet_payout["rail"], wallet_payout["status"], wallet_payout["attempt"]) == (
            "sme",
            "succeeded",
            1,
        )
        sent = (await sim.get(f"/sme/wallet/transfers/{wallet_payout['reference']}")).json()
        assert (sent["wallet_id"], sent["amount"], sent["status"]) == (
            "7012345678",
            wallet_payout["amount"]["value"],
            "successful",
        )
        assert (await client.get(f"/v1/payouts/{held['loan_id']}", headers=headers)).json()[
            "status"
        ] == "review"
        # monitoring flags and a payout's release are the operators', never the partner's
        assert (await client.get("/v1/monitoring/flags", headers=headers)).status_code == 403
        refused = await client.post(f"/v1/payouts/{held['loan_id']}/release", headers=headers)
        assert refused.status_code == 403, refused.text
        operator = operator_headers("ops-bola")
        flags = (await client.get("/v1/monitoring/flags", headers=operator)).json()["data"]
        assert [(f["loan_id"], f["rule"]) for f in flags] == [(held["loan_id"], "shared_payout_account")]
        released = await client.post(f"/v1/payouts/{held['loan_id']}/release", headers=operator)
        assert released.status_code == 200, released.text
        await loan_state(client, headers, held["loan_id"], "ACTIVE", within_s=120)
        assert (await client.get("/v1/monitoring/flags", headers=operator)).json()["data"] == []
        # the release is in the append-only audit log, with the state before and after
        entries = (
            await client.get("/v1/audit/log", params={"subject_type": "payout"}, headers=headers)
        ).json()["data"]
        release = [e for e in entries if e["action"] == "payout.release"]
        assert len(release) == 1 and release[0]["subject_id"] == held["loan_id"], entries
        assert release[0]["actor"] == "operator:ops-bola"  # the operator's identity, in the partner's log
        assert (release[0]["details"]["before"]["status"], release[0]["details"]["after"]["status"]) == (
            "review",
            "queued",
        )
        actions = {e["action"] for e in (await client.get("/v1/audit/log", headers=headers)).json()["data"]}
        assert {"offer.accept", "loan.approval", "payout.release"} <= actions, actions

        # an integration with OTP on: the transfer waits until the business enters the OTP
        assert (await sim.post("/simulate/scenario", json={"transfer": {"otp": True}})).status_code == 200
        otp_loan = await approved_loan(client, headers, external_id="payout-otp", account_serial="098765432")

        async def awaiting_otp():  # type: ignore[no-untyped-def]
            payout = (await client.get(f"/v1/payouts/{otp_loan['loan_id']}", headers=headers)).json()
            return payout if payout.get("provider_status") == "otp" else None

        await eventually_async(awaiting_otp, within_s=60)
        wrong = await client.post(
            f"/v1/payouts/{otp_loan['loan_id']}/finalize", json={"otp": "000000"}, headers=operator
        )
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "otp", wrong.text
        right = await client.post(
            f"/v1/payouts/{otp_loan['loan_id']}/finalize", json={"otp": "123456"}, headers=operator
        )
        assert right.status_code == 200, right.text
        await loan_state(client, headers, otp_loan["loan_id"], "ACTIVE", within_s=120)

        total_due = (await client.get(f"/v1/loans/{approved['loan_id']}", headers=headers)).json()[
            "outstanding"
        ]
        for name, outcome in outcomes.items():
            # one payout's worth in the ledger, whatever the rail did on the way
            assert outcome["receivable"] == total_due["value"], (name, outcome)
            assert outcome["chain_requested"] is True
            # the scenario really happened: the first transfer did not pay, the second did
            assert outcome["attempt"] == 2, (name, outcome)
        # six loans funded by one partner: exactly six principals, nothing twice
        funding = await _payout_outcome(settings, held["loan_id"])
        assert funding["funding_posted"] == 6 * outcomes["failed-once"]["funding_for_this_loan"]
