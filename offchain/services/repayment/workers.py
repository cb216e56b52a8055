"""The repayment service's background jobs:
- `intake`: paystack.charge.success and sme.payment.received -> verify with the provider ->
  match -> ledger hold + record_repayment intent (one transaction; duplicates have no effect).
  A provider that answers "no such payment" or "not successful" ends the notice as not
  confirmed (notices.py: a row operators list, a counter), never as a retried fault;
  The events read at once go together: verified concurrently, then taken in by one transaction
  (`receiving.receive_many`); a batch that fails is retried event by event;
- `chain`: the LoanBook's answers -> postings and partner events (a batch of events in one
  transaction, RepaymentRecorded runs in a few statements): RepaymentRecorded (hold
  posted, interest earned, credit.repayment.received), RepaymentReversed (postings reversed),
  LateFeeAssessed (fee income), LoanWrittenOff (credit loss), LoanRepaid / LoanDefaulted
  (partner events), LoanDisbursed / LoanCancelled (money held for the loan applied, or to
  review: early_money), and refused intents (money to suspense);
- `held`: the backstop sweep of early_money: held money of loans that can take it now.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
from opentelemetry import propagate
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import chain_of
from offchain.chain.contracts import Deployment
from offchain.eventbus.idempotent import claim_event
from offchain.eventbus.messages import Event
from offchain.eventbus.service import run_consumer
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.stopping import wait_or_stop
from offchain.platform.tracing import consumer_span, inject_context
from offchain.rails.paystack.client import PaystackClient
from offchain.rails.sme.payments import SmePaymentsClient
from offchain.services.repayment import chain_events, early_money, intake, notices, receiving, recoveries

log = get_logger(__name__)

# payments of different loans at once (each loan is locked while its money is allocated); the
# database pool (DATABASE__POOL_SIZE + MAX_OVERFLOW) should hold both consumers' sessions
CONCURRENCY = 8
# provider verify calls in flight at once for a batch of intake events (as many connections are
# kept alive: more would open and close a connection per call)
VERIFY_CONCURRENCY = 16
INTAKE_TOPICS = ("paystack.charge.success", "sme.payment.received")
CHAIN_TOPICS = (
    "chain.RepaymentRecorded",
    "chain.RepaymentReversed",
    "chain.LateFeeAssessed",
    "chain.LoanWrittenOff",
    "chain.LoanRepaid",
    "chain.LoanDefaulted",
    "chain.LoanDisbursed",
    "chain.LoanCancelled",
    "tx.reverted",
    "tx.failed",
)


def deployment_of(resources: AppResources) -> Deployment:
    path = resources.settings.chain.deployment_file
    if not path:
        raise RuntimeError("repayment needs DEPLOYMENT_FILE (the LoanBook it records payments on)")
    return chain_of(resources).deployment  # loaded once per app


@asynccontextmanager
async def _requirements(resources: AppResources) -> AsyncIterator[tuple[Database, Deployment]]:
    if resources.db is None:
        raise RuntimeError("repayment needs DATABASE_URL")
    yield resources.db, deployment_of(resources)


class IntakeHandlers:
    """The intake consumer's handlers: verify with the provider, then take in (receive_many)."""

    def __init__(
        self,
        db: Database,
        deployment: Deployment,
        *,
        paystack: PaystackClient,
        sme: SmePaymentsClient,
        metrics: notices.NoticeMetrics,
    ) -> None:
        self.db, self.deployment, self.paystack, self.sme, self.metrics = (
            db,
            deployment,
            paystack,
            sme,
            metrics,
        )
        self.verifying = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def verified(self, event: Event) -> receiving.Verified | None:
        """The event's payment as its provider confirms it (None: not paid, logged)."""
        data = dict((event.payload or {}).get("data") or {})
        try:
            if event.topic == "paystack.charge.success":
                found = await intake.verified_paystack_charge(self.paystack, data)
            else:
                found = await intake.verified_sme_payment(self.sme, data)
        except intake.NotConfirmed as refusal:
            # a definite answer, not a fault: the notice ends as not confirmed (notices.py)
            async with self.db.worker_session() as session:
                await notices.record_not_confirmed(
                    session,
                    topic=event.topic,
                    data=data,
                    reason=refusal.reason,
                    detail=str(refusal),
                    provider_status=refusal.provider_status,
                )
            provider = notices.PROVIDER_OF_TOPIC.get(event.topic, "other")
            self.metrics.not_confirmed.labels(provider, refusal.reason).inc()
            return None
        payment, record, channel, paid_at = found
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return receiving.Verified(payment, record, channel, paid_at, carrier.get("traceparent"))

    async def verified_in_span(self, event: Event) -> receiving.Verified | None:
        async with self.verifying:
            with consumer_span(
                topic=event.topic,
                headers=event.headers,
                group="repayment.intake",
                message_id=event.stream_id,
                event_id=event.id,
            ):
                return await self.verified(event)

    async def handle_batch(self, events: list[Event]) -> None:
        # the provider's answers at once (network-bound), then one transaction for the batch
        found = await asyncio.gather(*(self.verified_in_span(event) for event in events))
        items = [item for item in found if item is not None]
        if not items:
            return
        async with self.db.worker_session() as session:
            results = await receiving.receive_many(session, items, deployment=self.deployment)
        log.info(
            "payment.intake_batch",
            size=len(items),
            created=sum(result.created for result in results),
        )

    async def handle(self, event: Event) -> None:
        # one event (a batch that failed is retried event by event): the batch path with one
        # item, so both take loan locks the same way and cannot deadlock each other
        item = await self.verified(event)
        if item is None:
            return
        async with self.db.worker_session() as session:
            (result,) = await receiving.receive_many(session, [item], deployment=self.deployment)
        log.info(
            "payment.intake",
            reference=item.payment.reference,
            status=result.status,
            created=result.created,
        )


async def intake_worker(
    resources: AppResources, stop: asyncio.Event, *, metrics: notices.NoticeMetrics | None = None
) -> None:
    async with (
        _requirements(resources) as (db, deployment),
        # Paystack verifies over aiohttp: under a burst httpx cost this service ~40% of its CPU.
        # Idle connections are let go before a server's usual 5 s keep-alive closes them.
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=VERIFY_CONCURRENCY, keepalive_timeout=3.0)
        ) as verify_session,
    ):
        handlers = IntakeHandlers(
            db,
            deployment,
            paystack=PaystackClient.from_settings(
                resources.settings.rails, http=resources.http, session=verify_session
            ),
            sme=SmePaymentsClient.from_settings(resources.settings.rails, http=resources.http),
            metrics=metrics or notices.NoticeMetrics(),
        )
        await run_consumer(
            resources,
            stop,
            group="repayment.intake",
            topics=INTAKE_TOPICS,
            handler=handlers.handle,
            concurrency=CONCURRENCY,
            batch_handler=handlers.handle_batch,
        )


def _recovery_id(args: dict[str, Any]) -> str:
    return f"recovery:{str(args.get('payment_ref') or '').lower()}"


async def _recorded(session: AsyncSession, run: list[chain_events.Recorded]) -> None:
    await chain_events.on_repayments_recorded(session, run)
    # recoveries on written-off loans: one query for the run when there are none
    await recoveries.true_up(
        session, [(str(item.args.get("loan_id") or ""), _recovery_id(item.args)) for item in run]
    )


class ChainHandlers:
    """The chain consumer's handlers: the LoanBook's answers to the payments, in order."""

    def __init__(self, db: Database, deployment: Deployment) -> None:
        self.db, self.deployment = db, deployment

    async def apply(self, session: AsyncSession, event: Event) -> None:
        payload = event.payload or {}
        args = payload.get("args") or {}
        loan = str(payload.get("loan_id") or "").lower()
        match event.topic:
            case "chain.RepaymentRecorded":
                await chain_events.on_repayment_recorded(session, args, tx_hash=payload.get("tx_hash"))
                await recoveries.true_up(session, [(loan, _recovery_id(args))])
            case "chain.RepaymentReversed":
                await chain_events.on_repayment_reversed(session, args)
                await recoveries.true_up(session, [(loan, _recovery_id(args) + ":reversed")])
            case "chain.LateFeeAssessed":
                await chain_events.on_late_fee(session, loan, args)
            case "chain.LoanWrittenOff":
                await chain_events.on_written_off(session, loan)
            case "chain.LoanRepaid" | "chain.LoanDefaulted":
                topic = (
                    chain_events.LOAN_REPAID
                    if event.topic.endswith("Repaid")
                    else chain_events.LOAN_DEFAULTED
                )
                # a loan can repay, reopen (reversal) and repay again: one notice per block event
                if await claim_event(
                    session,
                    consumer=f"repayment.{topic}",
                    event_id=f"{loan}:{payload.get('block_number')}",
                ):
                    await chain_events.notify_loan_closed(
                        session, loan, topic, {"tx_hash": payload.get("tx_hash")}
                    )
            case "chain.LoanDisbursed" | "chain.LoanCancelled":
                await early_money.settle_loan_events(session, [loan], deployment=self.deployment)
            case "tx.reverted" | "tx.failed":
                key = str(payload.get("idempotency_key") or "")
                if key.startswith(("repay:", "reverse:")):
                    await chain_events.on_intent_refused(session, key, payload.get("revert_reason"))

    async def handle(self, event: Event) -> None:
        async with self.db.worker_session() as session:
            await self.apply(session, event)

    def span_of(self, event: Event) -> Any:
        return consumer_span(
            topic=event.topic,
            headers=event.headers,
            group="repayment.chain",
            message_id=event.stream_id,
            event_id=event.id,
        )

    def recorded(self, event: Event) -> chain_events.Recorded:
        payload = event.payload or {}
        headers: dict[str, Any] = {}
        with self.span_of(event):
            inject_context(headers)  # the partner event continues the chain event's trace
        if event.headers.get("request_id"):
            headers["request_id"] = event.headers["request_id"]
        return chain_events.Recorded(payload.get("args") or {}, payload.get("tx_hash"), headers)

    async def handle_batch(self, events: list[Event]) -> None:
        # one transaction; runs of RepaymentRecorded (the bulk of a busy day) in a few
        # statements, anything else through `apply`, all in the batch's order
        async with self.db.worker_session() as session:
            # the loans whose held money these events settle, locked first and in the one
            # order intake locks them (taken one by one, as events come, they could deadlock)
            await early_money.settle_loan_events(
                session,
                [
                    str((event.payload or {}).get("loan_id") or "")
                    for event in events
                    if event.topic in ("chain.LoanDisbursed", "chain.LoanCancelled")
                ],
                deployment=self.deployment,
            )
            run: list[chain_events.Recorded] = []
            for event in events:
                if event.topic == "chain.RepaymentRecorded":
                    run.append(self.recorded(event))
                    continue
                if run:
                    await _recorded(session, run)
                    run = []
                with self.span_of(event):
                    await self.apply(session, event)
            if run:
                await _recorded(session, run)


async def chain_worker(resources: AppResources, stop: asyncio.Event) -> None:
    async with _requirements(resources) as (db, deployment):
        handlers = ChainHandlers(db, deployment)
        await run_consumer(
            resources,
            stop,
            group="repayment.chain",
            topics=CHAIN_TOPICS,
            handler=handlers.handle,
            concurrency=CONCURRENCY,
            batch_handler=handlers.handle_batch,
        )


async def held_sweeper(resources: AppResources, stop: asyncio.Event) -> None:
    async with _requirements(resources) as (db, deployment):
        every = resources.settings.money.held_sweep_s
        while not stop.is_set():
            async with db.worker_session() as session:
                await early_money.sweep(
                    session,
                    deployment=deployment,
                    max_held=timedelta(days=resources.settings.money.held_max_days),
                )
            await wait_or_stop(stop, every)
