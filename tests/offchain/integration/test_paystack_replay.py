"""Paystack's documented samples replayed against the running stack, signed as Paystack signs them
(x-paystack-signature = hex HMAC-SHA512 of the raw body with the secret key), each twice:
recorded once, at the borrower's amount, with Paystack's fee on its own account; the transfer
and assignment samples acknowledged; a charge Paystack never heard of ends "not confirmed"
(listed for operators, not dead-lettered); the ledger balances and reconciles with the rail.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from eventually import eventually_async
from identities import operator_headers
from journey_support import approved_loan, loan_state
from money_support import _partner_headers, running_stack
from paystack_samples import body, sample
from redis.asyncio import Redis
from simulator_support import PAYSTACK_SECRET
from sqlalchemy import select
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.eventbus.messages import StreamNames
from offchain.persistence import ledger as journal
from offchain.persistence.money import Payment
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.rails.paystack.webhooks import sign
from offchain.services.ledger.reconciliation import reconcile
from offchain.services.ledger.usecases import rail_checks

pytestmark = pytest.mark.asyncio


async def _replay(
    client: httpx.AsyncClient, payload: dict[str, Any], times: int = 2
) -> list[tuple[int, str]]:
    raw = body(payload)
    headers = {"x-paystack-signature": sign(raw, PAYSTACK_SECRET), "content-type": "application/json"}
    answers = [await client.post("/v1/webhooks/paystack", content=raw, headers=headers) for _ in range(times)]
    return [(a.status_code, a.json().get("status")) for a in answers]


async def _known_to_paystack(sim: httpx.AsyncClient, transaction: dict[str, Any]) -> None:
    stored = await sim.post("/simulate/transactions", json={"transaction": transaction})
    assert stored.status_code == 201, stored.text


ONCE = [(200, "accepted"), (200, "duplicate")]


async def test_documented_samples_replayed_signed__recorded_once_at_the_right_amount(
    money_settings: Settings,
    free_port,  # type: ignore[no-untyped-def]
) -> None:
    async with running_stack(money_settings, free_port) as (settings, client, sim):
        headers = _partner_headers(settings)
        approved = await approved_loan(client, headers, external_id="replay-1")
        loan_id = approved["loan_id"]
        active = await loan_state(client, headers, loan_id, "ACTIVE", within_s=90)
        owed = active["outstanding"]["value"]

        # 1. charge.success as documented (metadata 0, fees null; names no loan): suspense at 10000
        charge = sample("charge_success")
        await _known_to_paystack(sim, charge["data"])
        assert await _replay(client, charge) == ONCE

        # 2. the verify sample's transaction (the payer bore the fees: 40333 = 30050 + 10283). Its
        #    one change: metadata names the loan (the sample's is "")
        paid = sample("verify_transaction")["data"]
        paid["metadata"] = {"loan_id": loan_id}
        await _known_to_paystack(sim, paid)
        assert await _replay(client, {"event": "charge.success", "data": paid}) == ONCE

        # 3. the dedicated-account charge, paid into the loan's own dedicated account
        opened = await client.post(f"/v1/loans/{loan_id}/virtual-account", headers=headers)
        assert opened.status_code == 201, opened.text
        into_account = sample("charge_success_dedicated_nuban")
        into_account["data"]["reference"] = "dva-replay-0001"
        into_account["data"]["authorization"]["receiver_bank_account_number"] = opened.json()[
            "account_number"
        ]
        await _known_to_paystack(sim, into_account["data"])
        assert await _replay(client, into_account) == ONCE

        # 4. transfers that are not ours, and an assignment: acknowledged, nothing moves
        for name in ("transfer_success", "transfer_failed", "transfer_reversed"):
            assert await _replay(client, sample(name)) == ONCE, name
        assert await _replay(client, sample("dedicatedaccount_assign_success")) == [(200, "ignored")] * 2

        # 5. a charge Paystack never heard of: not confirmed
        unknown = sample("charge_success")
        unknown["data"]["reference"] = "never-heard-of-0001"
        assert await _replay(client, unknown) == ONCE

        db = Database.from_settings(settings.database)
        try:

            async def settled() -> list[Payment] | None:
                async with db.worker_session() as session:
                    rows = list(
                        (
                            await session.execute(select(Payment).order_by(Payment.provider_reference))
                        ).scalars()
                    )
                done = [r.status for r in rows] == ["recorded", "unmatched", "recorded"]
                return rows if done else None

            rows = await eventually_async(settled, within_s=90)
            assert [
                (r.provider_reference, r.amount, r.applied, r.provider_fee, r.payer_fee) for r in rows
            ] == [
                ("dva-replay-0001", 10000, 10000, 0, 0),
                ("qTPrJoy9Bx", 10000, 0, 0, 0),
                ("re4lyvq3s3", 30050, 30050, 10283, 10283),
            ]
            assert [r.match_method for r in rows] == ["virtual_account", None, "metadata"]

            # the chain credited the loan with the borrower's 30050 and 10000, each once
            after = await loan_state(client, headers, loan_id, "ACTIVE")
            assert after["outstanding"]["value"] == owed - 30050 - 10000
            deployment = Deployment.load(settings.chain.deployment_file)
            book = deployment.loan_book(Web3(Web3.HTTPProvider(settings.chain.rpc_url)))
            for row in rows:
                recorded = book.functions.is_payment_recorded(bytes.fromhex(row.payment_ref[2:])).call()
                assert recorded == (row.status == "recorded"), row.provider_reference

            async with db.worker_session() as session:
                fees = await journal.balance(session, accounts.rail_fees(mm.PAYSTACK), "NGN")
                recovered = await journal.balance(session, accounts.rail_fees_recovered(mm.PAYSTACK), "NGN")
                clearing = await journal.balance(session, accounts.rail_clearing(mm.PAYSTACK), "NGN")
                assert (fees.posted, recovered.posted) == (10283, 10283)
                assert clearing.posted == 10000 + 30050 + 10000  # exactly what Paystack settles
                for line in await journal.trial_balance(session):
                    assert line.balanced, line

            # the unknown charge: a notice operators see, counted, never a dead letter
            operator = operator_headers("ops-notices", secret=settings.auth.jwt_secret.get_secret_value())

            async def listed() -> list[dict[str, Any]] | None:
                page = (await client.get("/v1/payment-notices", headers=operator)).json()
                return page["data"] or None

            [notice] = await eventually_async(listed, within_s=30)
            assert (notice["reference"], notice["reason"], notice["notices"]) == (
                "never-heard-of-0001",
                "not_found",
                1,
            )
            redis = Redis.from_url(settings.redis.url, decode_responses=True)
            try:
                names = StreamNames(settings.events.stream_prefix)
                assert await redis.xlen(names.dead_letter("repayment.intake")) == 0
            finally:
                await redis.aclose()

            # ledger <-> chain <-> rail: consistent (the rail's verify compared at the borrower's amount)
            report = await reconcile(
                db=db,
                rpc=JsonRpc(settings.chain.rpc_url),
                deployment=deployment,
                checks=rail_checks(settings),
            )
            assert report.status == "consistent", [m.as_dict() for m in report.mismatches]
        finally:
            await db.dispose()
