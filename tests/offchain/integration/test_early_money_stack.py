"""Early money end to end (issue 15): a Paystack charge at every state of a loan -- PENDING,
APPROVED, the moment the chain says ACTIVE, ACTIVE, REPAID, and a loan CANCELLED while it holds
money -- ends with ledger, chain and rail in agreement: each applicable charge recorded on chain
exactly once under its own payment_ref, the rest held in the loan's held account for review, the
reconciliation run (ledger <-> chain <-> rail) consistent.

Real everything, as test_money_movement.py: the simulator plays Paystack and delivers the signed
webhooks to the gateway on HTTP; underwriting, orchestration (sender, indexer), disbursement and
repayment run in this event loop on a fresh database, Redis and Anvil.
"""

from __future__ import annotations

import asyncio

import pytest
from eventually import eventually_async
from identities import operator_headers
from journey_support import approve, loan_state, pending_loan
from money_support import _charge, _partner_headers, running_stack
from sqlalchemy import select, text
from web3 import Web3

from offchain.chain import allowlist
from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import submit
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.money import Payment
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.ledger.reconciliation import reconcile
from offchain.services.ledger.usecases import rail_checks

pytestmark = pytest.mark.asyncio
ACTIVE, CANCELLED = 3, 7


async def _statuses(db: Database, *references: str) -> dict[str, str]:
    async with db.worker_session() as session:
        rows = await session.execute(
            select(Payment.provider_reference, Payment.status).where(
                Payment.provider_reference.in_(references)
            )
        )
        return dict(rows.all())


async def _until_statuses(db: Database, expected: dict[str, str], within_s: float = 90) -> None:
    await eventually_async(
        lambda: _statuses(db, *expected),
        what=f"payment statuses {expected}",
        within_s=within_s,
        accept=lambda statuses: statuses == expected,
    )


async def test_a_charge_at_every_state__ledger_chain_rail_agree(
    money_settings: Settings, free_port, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stack(money_settings, free_port) as (settings, client, sim):
        headers = _partner_headers(settings)
        db = Database.from_settings(settings.database)
        deployment = Deployment.load(settings.chain.deployment_file)
        book = deployment.loan_book(Web3(Web3.HTTPProvider(settings.chain.rpc_url)))
        try:
            # -- loan A: money at PENDING and at APPROVED (its payout waits for an OTP meanwhile)
            a = await pending_loan(client, headers, external_id="early-a")
            a_id, a_chain = a["loan_id"], a["loan"]["chain_loan_id"]
            await _charge(sim, amount=50_000_00, loan_id=a_id, reference="early-a-pending")
            assert (await sim.post("/simulate/scenario", json={"transfer": {"otp": True}})).status_code == 200
            await approve(client, headers, a_id)

            async def awaiting_otp():  # type: ignore[no-untyped-def]
                payout = (await client.get(f"/v1/payouts/{a_id}", headers=headers)).json()
                return payout if payout.get("provider_status") == "otp" else None

            await eventually_async(awaiting_otp, within_s=60)
            await sim.delete("/simulate/scenario")
            # delivered twice by the rail: one payment
            await sim.post(
                "/simulate/scenario", json={"webhook": {"fault": "duplicate", "event": "charge.success"}}
            )
            await _charge(sim, amount=50_000_00, loan_id=a_chain, reference="early-a-approved")
            await _until_statuses(db, {"early-a-pending": "held", "early-a-approved": "held"})
            await sim.delete("/simulate/scenario")

            # visible meanwhile: listed as held, with why; the loan's held account holds them
            listed = (await client.get("/v1/payments", params={"status": "held"}, headers=headers)).json()
            held_rows = {row["reference"]: row for row in listed["data"]}
            assert set(held_rows) == {"early-a-pending", "early-a-approved"}, listed
            assert all("ACTIVE" in row["detail"] and row["loan_id"] == a_id for row in held_rows.values())
            async with db.worker_session() as session:
                held = await journal.balance(session, accounts.loan_held(a_id), "NGN")
            assert held.posted == 100_000_00
            # held money is not in suspense: nothing to match by hand
            refused = await client.post(
                f"/v1/payments/{held_rows['early-a-pending']['id']}/match",
                json={"loan_id": a_id},
                headers=headers,
            )
            assert refused.status_code == 409, refused.text

            # -- the OTP: paid out, ACTIVE on chain; charges sent the moment the chain says so,
            # before the backend's projection has caught up (in runs here both were taken in
            # while it still said APPROVED: held, then applied on LoanDisbursed)
            operator = operator_headers("ops-otp", secret=settings.auth.jwt_secret.get_secret_value())
            finalized = await client.post(
                f"/v1/payouts/{a_id}/finalize", json={"otp": "123456"}, headers=operator
            )
            assert finalized.status_code == 200, finalized.text
            chain_a = bytes.fromhex(a_chain[2:])

            async def active_on_chain():  # type: ignore[no-untyped-def]
                return book.functions.loan_state(chain_a).call() == ACTIVE

            await eventually_async(active_on_chain, within_s=90, every=0.05)
            await asyncio.gather(
                _charge(sim, amount=20_000_00, loan_id=a_id, reference="early-a-transition-1"),
                _charge(sim, amount=20_000_00, loan_id=a_id, reference="early-a-transition-2"),
            )
            loan = await loan_state(client, headers, a_id, "ACTIVE", within_s=60)
            await _charge(sim, amount=10_000_00, loan_id=a_id, reference="early-a-active")
            applied = {
                "early-a-pending": "recorded",
                "early-a-approved": "recorded",
                "early-a-transition-1": "recorded",
                "early-a-transition-2": "recorded",
                "early-a-active": "recorded",
            }
            await _until_statuses(db, applied)
            rest = loan["outstanding"]["value"] - 150_000_00
            assert rest > 0, loan
            await _charge(sim, amount=rest, loan_id=a_id, reference="early-a-last")
            await loan_state(client, headers, a_id, "REPAID", within_s=90)
            # -- after REPAID: nothing to apply it to, for review
            await _charge(sim, amount=5_000_00, loan_id=a_id, reference="early-a-repaid")

            # -- loan B: money at PENDING, then the loan is cancelled
            b = await pending_loan(client, headers, external_id="early-b", account_serial="098765432")
            b_id, b_chain = b["loan_id"], b["loan"]["chain_loan_id"]
            await _charge(sim, amount=7_000_00, loan_id=b_id, reference="early-b-pending")
            await _until_statuses(db, {"early-b-pending": "held"})
            # nothing in the product cancels a loan yet: the test lets origination (gateway) ask
            # the sending key for cancel_loan, through the allowlist as every intent goes
            monkeypatch.setitem(
                allowlist.ALLOWED,
                "gateway",
                (*allowlist.ALLOWED["gateway"], allowlist.Permit(allowlist.LOAN_BOOK, "cancel_loan")),
            )
            async with db.worker_session() as session:
                await submit(
                    session,
                    caller="gateway",
                    deployment=deployment,
                    idempotency_key=f"test-cancel:{b_chain}",
                    to=deployment.loan_book_address,
                    data=deployment.loan_book_contract.encode(
                        "cancel_loan",
                        bytes.fromhex(b_chain[2:]),
                        mm.keccak_reason("withdrawn"),
                    ),
                )
            await loan_state(client, headers, b_id, "CANCELLED", within_s=60)

            final = {
                **applied,
                "early-a-last": "recorded",
                "early-a-repaid": "review",
                "early-b-pending": "review",
            }
            await _until_statuses(db, final)
            review = (await client.get("/v1/payments", params={"status": "review"}, headers=headers)).json()
            assert {row["reference"] for row in review["data"]} == {"early-a-repaid", "early-b-pending"}

            # -- the chain: each applicable charge recorded once, under its own payment_ref
            async with db.worker_session() as session:
                rows = {
                    row.provider_reference: row
                    for row in (
                        await session.execute(select(Payment).where(Payment.provider_reference.in_(final)))
                    ).scalars()
                }
                on_chain = dict(
                    (
                        await session.execute(
                            text(
                                "SELECT args->>'payment_ref', count(*) FROM caas_chain_events "
                                "WHERE event = 'RepaymentRecorded' AND loan_id = :loan GROUP BY 1"
                            ),
                            {"loan": a_chain},
                        )
                    ).all()
                )
                a_held = await journal.balance(session, accounts.loan_held(a_id), "NGN")
                b_held = await journal.balance(session, accounts.loan_held(b_id), "NGN")
                a_receivable = await journal.balance(session, accounts.loan_receivable(a_id), "NGN")
                for line in await journal.trial_balance(session):
                    assert line.balanced, line
            recorded_refs = {rows[ref].payment_ref for ref, status in final.items() if status == "recorded"}
            assert on_chain == {ref: 1 for ref in recorded_refs}, on_chain
            for reference, row in rows.items():
                assert book.functions.is_payment_recorded(bytes.fromhex(row.payment_ref[2:])).call() == (
                    final[reference] == "recorded"
                ), reference
            assert book.functions.outstanding(chain_a).call() == 0
            assert book.functions.loan_state(bytes.fromhex(b_chain[2:])).call() == CANCELLED
            # -- the ledger: applied money left the held accounts, reviewed money is still there
            assert (a_held.posted, b_held.posted) == (5_000_00, 7_000_00)
            assert (a_receivable.posted, a_receivable.pending_credits) == (0, 0)

            # -- reconciliation: ledger <-> chain <-> projection <-> rail
            report = await reconcile(
                db=db,
                rpc=JsonRpc(settings.chain.rpc_url),
                deployment=deployment,
                checks=rail_checks(settings),
            )
            assert report.status == "consistent", [m.as_dict() for m in report.mismatches]
        finally:
            await db.dispose()
