"""The disbursement service's background jobs (crash-safe, each payout once):
- `approvals`: chain.LoanApproved -> the payout row and its ledger hold (once per loan);
- `payouts`: sends due transfers and asks the rail about the ones it has been silent on;
- `transfer_webhooks`: paystack.transfer.* hints -> verify with the rail -> apply;
- `confirmations`: chain.LoanDisbursed -> credit.disbursement.completed; a refused
  record_disbursement (tx.reverted / tx.failed) -> the payout goes to review.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from offchain.chain.client import chain_of
from offchain.eventbus.idempotent import claim_event
from offchain.eventbus.messages import Event
from offchain.eventbus.service import run_consumer
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.stopping import wait_or_stop
from offchain.rails.paystack.client import PaystackClient
from offchain.rails.sme.payments import SmeWalletClient
from offchain.services.disbursement import chain_events, payouts

log = get_logger(__name__)

TRANSFER_TOPICS = ("paystack.transfer.success", "paystack.transfer.failed", "paystack.transfer.reversed")
TX_OUTCOME_TOPICS = ("tx.reverted", "tx.failed")


@asynccontextmanager
async def payout_context(resources: AppResources) -> AsyncIterator[payouts.PayoutContext]:
    settings = resources.settings
    if not settings.chain.deployment_file:
        raise RuntimeError("disbursement needs DEPLOYMENT_FILE (the LoanBook it records payouts on)")
    client = PaystackClient.from_settings(settings.rails, http=resources.http)
    wallet = (
        SmeWalletClient.from_settings(settings.rails, http=resources.http)
        if settings.rails.sme_service_urls()["payments"]
        else None
    )
    yield payouts.PayoutContext(
        paystack=client,
        settings=settings.money,
        deployment=chain_of(resources).deployment,  # loaded once per app
        wallet=wallet,
    )


def _require_db(resources: AppResources) -> Database:
    if resources.db is None:
        raise RuntimeError("disbursement needs DATABASE_URL")
    return resources.db


class ApprovalHandler:
    """chain.LoanApproved -> the payout row and its ledger hold (once per loan)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, event: Event) -> None:
        async with self.db.worker_session() as session:
            await payouts.open_payout(session, chain_loan_id=str(event.payload["loan_id"]))


async def approvals(resources: AppResources, stop: asyncio.Event) -> None:
    await run_consumer(
        resources,
        stop,
        group="disbursement.approvals",
        topics=["chain.LoanApproved"],
        handler=ApprovalHandler(_require_db(resources)),
    )


async def payout_worker(resources: AppResources, stop: asyncio.Event) -> None:
    db = _require_db(resources)
    async with payout_context(resources) as ctx:
        while not stop.is_set():
            try:
                busy = await run_round(db, ctx)
            except Exception:
                log.exception("payouts.round_failed")
                busy = False
            if not busy:
                await wait_or_stop(stop, ctx.settings.worker_poll_s)


async def run_round(db: Database, ctx: payouts.PayoutContext) -> bool:
    """One pass over due payouts; each in its own transaction, so one bad payout blocks nothing."""
    async with db.worker_session() as session:
        due = await payouts.due_payouts(
            session, limit=ctx.settings.worker_batch, verify_after_s=ctx.settings.payout_verify_after_s
        )
        loan_ids = [p.loan_id for p in due]
    for loan_id in loan_ids:
        async with db.worker_session() as session:
            payout = await payouts.lock_payout(session, loan_id)
            if payout is None:
                continue
            if payout.status == "queued":
                await payouts.initiate(session, payout, ctx)
            elif payout.status == "initiated":
                await payouts.check_with_rail(session, payout, ctx)
    return bool(loan_ids)


class TransferWebhookHandler:
    """paystack.transfer.* hints -> verify with the rail -> apply."""

    def __init__(self, db: Database, ctx: payouts.PayoutContext) -> None:
        self.db, self.ctx = db, ctx

    async def __call__(self, event: Event) -> None:
        reference = str((event.payload.get("data") or {}).get("reference") or "")
        async with self.db.worker_session() as session:
            payout = await payouts.lock_payout_by_reference(session, reference)
            if payout is None:
                log.info("payouts.webhook_for_unknown_reference", reference=reference)
                return
            # the webhook is a hint: what the rail says now decides
            await payouts.check_with_rail(session, payout, self.ctx)


async def transfer_webhooks(resources: AppResources, stop: asyncio.Event) -> None:
    db = _require_db(resources)
    async with payout_context(resources) as ctx:
        await run_consumer(
            resources,
            stop,
            group="disbursement.transfer-webhooks",
            topics=TRANSFER_TOPICS,
            handler=TransferWebhookHandler(db, ctx),
        )


class ConfirmationHandler:
    """chain.LoanDisbursed -> credit.disbursement.completed; a refused record_disbursement
    (tx.reverted / tx.failed) -> the payout goes to review."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, event: Event) -> None:
        async with self.db.worker_session() as session:
            if event.topic == "chain.LoanDisbursed":
                loan = str(event.payload["loan_id"]).lower()
                # keyed by loan, not by log: a re-indexed (reorged) event does not notify twice
                if await claim_event(session, consumer="disbursement.completed", event_id=loan):
                    await chain_events.on_loan_disbursed(
                        session, chain_loan_id=loan, tx_hash=event.payload.get("tx_hash")
                    )
                return
            key = str(event.payload.get("idempotency_key") or "")
            if key.startswith("disburse:"):
                await chain_events.on_chain_refused(
                    session,
                    loan_id=uuid.UUID(key.split(":", 1)[1]),
                    reason=event.payload.get("revert_reason"),
                )


async def confirmations(resources: AppResources, stop: asyncio.Event) -> None:
    await run_consumer(
        resources,
        stop,
        group="disbursement.confirmations",
        topics=["chain.LoanDisbursed", *TX_OUTCOME_TOPICS],
        handler=ConfirmationHandler(_require_db(resources)),
    )
