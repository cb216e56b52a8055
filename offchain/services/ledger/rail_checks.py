"""The rail leg of reconciliation: our payments and payouts against what the providers say,
and the ledger's cash accounts against our payment records.

Plugged into the ledger's reconciliation run (offchain.services.ledger.reconciliation), whose
ledger <-> chain checks cover the loans; these add:
- payment_vs_rail: a payment we hold as received, but the provider's verify disagrees (status,
  amount or currency);
- payout_vs_rail: a payout we hold as paid that the rail does not show as paid, or one we hold
  as not paid that the rail shows as paid;
- clearing_vs_payments / suspense_vs_payments / held_vs_payments: the ledger's rail clearing,
  suspense and loan held accounts against the sum of the payment records they should hold.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.ledger import Mismatch
from offchain.persistence import ledger as journal
from offchain.persistence.money import Payment, Payout
from offchain.platform.settings import RailsSettings
from offchain.rails.paystack.client import PaystackClient, PaystackError, PaystackNotFound
from offchain.rails.sme.http import SmeRefused
from offchain.rails.sme.payments import (
    SmePaymentNotFound,
    SmePaymentsClient,
    SmePaymentsUnavailable,
    SmeWalletClient,
)
from offchain.services.ledger.reconciliation import ReconContext

# statuses in which the money is ours to account for (a reversed payment went back)
HELD = (
    "received",
    "unmatched",
    "pending_chain",
    "recorded",
    "credited",
    "reversal_pending",
    "held",
    "review",
)
# money still in a loan's held account (`loan:<id>:held`): early money, money under review, and
# an application of it the chain has not recorded yet (its ledger hold is pending)
_IN_HELD_ACCOUNTS = text(
    "SELECT currency, sum(amount) FROM caas_payments WHERE held_posting IS NOT NULL AND "
    "(status IN ('held', 'review') OR (status = 'pending_chain' AND applied_posting IS NOT NULL)) "
    "GROUP BY currency"
)
_HELD_ACCOUNTS = text(
    "SELECT currency, sum(posted_credits) - sum(posted_debits) FROM caas_ledger_balances "
    "WHERE account LIKE :held GROUP BY currency"
).bindparams(held="loan:%:held")


@dataclass(frozen=True)
class RailCheck:
    """A reconciliation check (callable with the run's context); equal configs register once."""

    rails: RailsSettings
    window_days: int = 7
    max_items: int = 500
    concurrency: int = 8

    async def __call__(self, context: ReconContext) -> list[Mismatch]:
        found: list[Mismatch] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0)) as http:
            paystack = PaystackClient.from_settings(self.rails, http=http)
            sme = SmePaymentsClient.from_settings(self.rails, http=http)
            wallet = SmeWalletClient.from_settings(self.rails, http=http)
            since = datetime.now(UTC) - timedelta(days=self.window_days)
            async with context.db.worker_session() as session:
                payments = list(
                    (
                        await session.execute(
                            select(Payment)
                            .where(Payment.updated_at >= since, Payment.status.in_(HELD))
                            .order_by(Payment.updated_at.desc())
                            .limit(self.max_items)
                        )
                    ).scalars()
                )
                payouts = list(
                    (
                        await session.execute(
                            select(Payout).where(Payout.updated_at >= since).limit(self.max_items)
                        )
                    ).scalars()
                )
                found += await self._cash_accounts(session)
            gate = asyncio.Semaphore(self.concurrency)

            async def payment_check(row: Payment) -> Mismatch | None:
                async with gate:
                    return await _check_payment(row, paystack, sme)

            async def payout_check(row: Payout) -> Mismatch | None:
                async with gate:
                    return await _check_payout(row, paystack, wallet)

            results = await asyncio.gather(
                *(payment_check(p) for p in payments), *(payout_check(p) for p in payouts)
            )
        return found + [m for m in results if m is not None]

    async def _cash_accounts(self, session: AsyncSession) -> list[Mismatch]:
        found = []
        # clearing holds what the rail settles: the payments we hold, plus what payers paid on
        # top of them, less the rail's fees (posted at intake for every payment, held or not)
        held = Payment.status.in_(HELD)
        totals = (
            await session.execute(
                select(
                    Payment.provider,
                    Payment.currency,
                    func.sum(Payment.amount).filter(held),
                    func.sum(Payment.payer_fee - Payment.provider_fee),
                ).group_by(Payment.provider, Payment.currency)
            )
        ).all()
        for provider, currency, held_total, fee_net in totals:
            total = int(held_total or 0) + int(fee_net or 0)
            if held_total is None and not total:
                continue
            clearing = await journal.balance(session, accounts.rail_clearing(provider), currency)
            if clearing.posted != int(total):
                found.append(
                    Mismatch(
                        "clearing_vs_payments",
                        f"{accounts.rail_clearing(provider)}/{currency}",
                        int(total),
                        clearing.posted,
                        "the rail clearing account does not hold the payments received",
                    )
                )
        suspended = (
            await session.execute(
                select(Payment.currency, func.sum(Payment.amount))
                .where(Payment.status == "unmatched")
                .group_by(Payment.currency)
            )
        ).all()
        expected = {currency: int(total) for currency, total in suspended}
        for currency in set(expected) | {"NGN"}:
            suspense = await journal.balance(session, accounts.SUSPENSE, currency)
            if suspense.posted != expected.get(currency, 0):
                found.append(
                    Mismatch(
                        "suspense_vs_payments",
                        f"{accounts.SUSPENSE}/{currency}",
                        expected.get(currency, 0),
                        suspense.posted,
                        "suspense does not hold exactly the unmatched payments",
                    )
                )
        in_payments = {c: int(t) for c, t in (await session.execute(_IN_HELD_ACCOUNTS)).all()}
        in_ledger = {c: int(t) for c, t in (await session.execute(_HELD_ACCOUNTS)).all()}
        for currency in set(in_payments) | set(in_ledger):
            if in_payments.get(currency, 0) != in_ledger.get(currency, 0):
                found.append(
                    Mismatch(
                        "held_vs_payments",
                        f"loan:*:held/{currency}",
                        in_payments.get(currency, 0),
                        in_ledger.get(currency, 0),
                        "the loans' held accounts do not hold exactly the held and reviewed payments",
                    )
                )
        return found


async def _check_payment(row: Payment, paystack: PaystackClient, sme: SmePaymentsClient) -> Mismatch | None:
    subject = f"{row.provider}:{row.provider_reference}"
    try:
        if row.provider == mm.PAYSTACK:
            verified = await paystack.verify_transaction(row.provider_reference)
            # our amount is the borrower's repayment: compare like with like
            charge = mm.paystack_charge_figures(verified.amount, verified.requested_amount, verified.fees)
            figures = (verified.succeeded, charge.repayment, verified.currency)
        else:
            sme_payment = await sme.verify(row.provider_reference)
            figures = (sme_payment.succeeded, sme_payment.amount, sme_payment.currency)
    except (PaystackNotFound, SmePaymentNotFound):
        return Mismatch(
            "payment_vs_rail", subject, f"{row.amount} {row.currency}", None, "unknown to the provider"
        )
    except (PaystackError, SmePaymentsUnavailable, SmeRefused, httpx.HTTPError) as error:
        return Mismatch("rail_unavailable", subject, None, None, f"could not verify: {error}")
    if figures != (True, row.amount, row.currency):
        return Mismatch(
            "payment_vs_rail",
            subject,
            f"paid {row.amount} {row.currency}",
            f"{'paid' if figures[0] else 'not paid'} {figures[1]} {figures[2]}",
            "the provider's record differs from ours",
        )
    return None


async def _check_payout(row: Payout, paystack: PaystackClient, wallet: SmeWalletClient) -> Mismatch | None:
    subject = f"payout:{row.reference}"
    try:
        if row.rail == mm.SME:
            sent = await wallet.verify(row.reference)
            paid, status, amount = sent.status == "successful", sent.status, sent.amount
        else:
            transfer = await paystack.verify_transfer(row.reference)
            paid, status, amount = transfer.status.paid_out, transfer.status.value, transfer.amount
    except (PaystackNotFound, SmePaymentNotFound):
        if row.status == "succeeded":
            return Mismatch(
                "payout_vs_rail", subject, "paid", None, "the rail has no transfer under our reference"
            )
        return None
    except (PaystackError, SmePaymentsUnavailable, SmeRefused, httpx.HTTPError) as error:
        return Mismatch("rail_unavailable", subject, None, None, f"could not verify: {error}")
    if row.status == "succeeded" and not (paid and amount == row.amount):
        return Mismatch("payout_vs_rail", subject, f"paid {row.amount}", f"{status} {amount}")
    if row.status in ("abandoned", "review") and paid:
        return Mismatch(
            "payout_vs_rail", subject, f"not paid ({row.status})", f"paid {amount}", "money left unrecorded"
        )
    return None
