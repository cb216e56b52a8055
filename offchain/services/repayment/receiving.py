"""Incoming payments taken in: verified with the provider, matched to a loan, recorded on chain once, posted.

One payment is one row keyed by (provider, provider reference) and one payment_ref on chain
(keccak256("<provider>:<reference>")); the LoanBook refuses a payment_ref twice, the sender
dedupes the intent by key, and the row is created once -- three independent locks on
"exactly once". Intake is one transaction: row + ledger hold + chain intent. The chain's answer
(RepaymentRecorded, or the intent reverted) settles the hold later, in another.

Which loan and how much it takes: matching.py; money no loan takes: suspense.py; the chain's
answers: chain_events.py; the names of a payment and the routes to a loan: references.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import IntentCall, submit_many
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.domain.monitoring import Flag, MonitoringPolicy, PaymentFacts, payment_flags
from offchain.persistence import ledger as journal
from offchain.persistence.credit import Application, Origination
from offchain.persistence.money import Payment
from offchain.platform.logging import get_logger
from offchain.services import monitoring
from offchain.services.repayment import early_money, fees, matching, recoveries, suspense
from offchain.services.repayment.locks import lock_loans
from offchain.services.repayment.references import (
    hex_ref,
    posting_id,
    record_intent_key,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Intake:
    payment_id: uuid.UUID
    status: str
    created: bool


async def receive(
    session: AsyncSession,
    payment: mm.IncomingPayment,
    *,
    deployment: Deployment,
    provider_record: dict[str, Any],
    channel: str | None = None,
    paid_at: Any = None,
) -> Intake:
    """Take a provider-verified payment in, once. Safe to call again with the same payment."""
    ref = hex_ref(mm.payment_ref(payment.provider, payment.reference))
    inserted = (
        await session.execute(
            pg_insert(Payment)
            .values(
                provider=payment.provider,
                provider_reference=payment.reference,
                payment_ref=ref,
                amount=payment.amount,
                currency=payment.currency,
                provider_fee=payment.provider_fee,
                payer_fee=payment.payer_fee,
                channel=channel,
                provider_record=provider_record,
                paid_at=paid_at,
            )
            .on_conflict_do_nothing()
            .returning(Payment.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        existing = (
            await session.execute(
                select(Payment.id, Payment.status).where(
                    Payment.provider == payment.provider, Payment.provider_reference == payment.reference
                )
            )
        ).one()
        return Intake(existing.id, existing.status, created=False)
    row = await session.get(Payment, inserted)
    assert row is not None
    fee = fees.fee_posting(row)
    if fee is not None:
        await journal.post(session, fee)
    matched = await matching.find_match(session, payment)
    if matched is None:
        await suspense.to_suspense(session, row, reason="no loan matches the payment")
    else:
        await matching.apply_to_loan(
            session, row, loan_id=matched.loan_id, method=matched.method, deployment=deployment
        )
    return Intake(row.id, row.status, created=True)


@dataclass(frozen=True)
class Verified:
    """A payment its provider confirmed, as intake hands it to `receive_many`."""

    payment: mm.IncomingPayment
    provider_record: dict[str, Any]
    channel: str | None = None
    paid_at: Any = None
    # the traceparent of the event that brought it: its chain intent continues that trace
    trace_context: str | None = None


async def receive_many(
    session: AsyncSession,
    items: Sequence[Verified],
    *,
    deployment: Deployment,
    policy: MonitoringPolicy = matching.DEFAULT_POLICY,
) -> list[Intake]:
    """`receive` for a batch, in the caller's one transaction: the same rows, postings, flags and
    intents as receiving them one by one in the batch's order, in a few statements.

    The loans are locked first (in lock order) and each loan's balance read once; the payments
    of one loan are then allocated in the batch's order against what is left of it, exactly as
    each would have found it after the holds of those before. A payment already taken in (or
    twice in the batch) is left as it is: created=False.
    """
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        first.setdefault((item.payment.provider, item.payment.reference), i)
    unique = [items[i] for i in sorted(first.values())]
    if not unique:
        return []
    matches = await matching.find_matches(session, [item.payment for item in unique])
    loans = await lock_loans(session, sorted({m.loan_id for m in matches if m is not None}))

    # the rows, inserted in key order (two batches sharing payments cannot deadlock on them)
    values = [
        {
            "provider": item.payment.provider,
            "provider_reference": item.payment.reference,
            "payment_ref": hex_ref(mm.payment_ref(item.payment.provider, item.payment.reference)),
            "amount": item.payment.amount,
            "currency": item.payment.currency,
            "provider_fee": item.payment.provider_fee,
            "payer_fee": item.payment.payer_fee,
            "channel": item.channel,
            "provider_record": item.provider_record,
            "paid_at": item.paid_at,
        }
        for item in unique
    ]
    values.sort(key=lambda row: (row["provider"], row["provider_reference"]))
    inserted = {
        (provider, reference): payment_id
        for payment_id, provider, reference in await session.execute(
            pg_insert(Payment)
            .values(values)
            .on_conflict_do_nothing()
            .returning(Payment.id, Payment.provider, Payment.provider_reference)
        )
    }
    keys = [(item.payment.provider, item.payment.reference) for item in unique]
    existing: dict[tuple[str, str], tuple[uuid.UUID, str]] = {}
    if len(inserted) < len(keys):
        rows = await session.execute(
            select(Payment.provider, Payment.provider_reference, Payment.id, Payment.status).where(
                tuple_(Payment.provider, Payment.provider_reference).in_(
                    [key for key in keys if key not in inserted]
                )
            )
        )
        existing = {(provider, reference): (pid, status) for provider, reference, pid, status in rows}
    new_rows = (
        {
            row.id: row
            for row in (
                await session.execute(select(Payment).where(Payment.id.in_(list(inserted.values()))))
            ).scalars()
        }
        if inserted
        else {}
    )

    # each loan's facts, read once (before any row changes: the counts see only earlier payments)
    applying = [
        (item, match)
        for item, match in zip(unique, matches, strict=True)
        if (item.payment.provider, item.payment.reference) in inserted and match is not None
    ]
    loan_ids = sorted({matched.loan_id for _, matched in applying if matched.loan_id in loans})
    recent: dict[uuid.UUID, int] = {}
    borrower_users: dict[uuid.UUID, str | None] = {}
    if loan_ids:
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        recent = {
            loan_id: count
            for loan_id, count in await session.execute(
                select(Payment.loan_id, func.count())
                .where(Payment.loan_id.in_(loan_ids), Payment.created_at >= hour_ago)
                .group_by(Payment.loan_id)
            )
            if loan_id is not None
        }
        borrower_users = dict(
            (
                await session.execute(
                    select(Origination.loan_id, Application.sme_user_id)
                    .join(Application, Origination.application_id == Application.id)
                    .where(Origination.loan_id.in_(loan_ids))
                )
            ).all()
        )
    owed: dict[tuple[uuid.UUID, str], int] = {}
    wanted: dict[str, set[uuid.UUID]] = {}
    for item, matched in applying:
        loan = loans.get(matched.loan_id)
        if loan is not None and loan.currency is not None and loan.chain_state in matching.REPAYABLE:
            wanted.setdefault(item.payment.currency, set()).add(loan.id)
    for currency, ids in wanted.items():
        found = await journal.balances(
            session, [accounts.loan_receivable(str(loan_id)) for loan_id in sorted(ids)], currency
        )
        for loan_id in ids:
            balance = found[accounts.loan_receivable(str(loan_id))]
            written_off = loans[loan_id].chain_state == matching.WRITTEN_OFF
            owed[(loan_id, currency)] = (
                recoveries.owed_after_write_off(loans[loan_id], balance.pending_credits)
                if written_off
                else max(0, balance.posted - balance.pending_credits)
            )

    posted: list[accounts.Posting] = []
    held: list[accounts.Posting] = []
    calls: list[IntentCall] = []
    raised: list[tuple[list[Flag], str, str, uuid.UUID | None, uuid.UUID | None]] = []
    results: dict[tuple[str, str], Intake] = {}
    for item, match in zip(unique, matches, strict=True):
        key = (item.payment.provider, item.payment.reference)
        if key not in inserted:
            payment_id, status = existing[key]
            results[key] = Intake(payment_id, status, created=False)
            continue
        row = new_rows[inserted[key]]
        if (fee := fees.fee_posting(row)) is not None:
            posted.append(fee)
        loan = loans.get(match.loan_id) if match is not None else None
        if match is None:
            posted.append(suspense.suspense_posting(row, reason="no loan matches the payment"))
        elif loan is None or loan.partner_id is None:
            posted.append(
                suspense.suspense_posting(row, reason=f"loan {match.loan_id} is not known to the backend")
            )
        elif loan.currency is not None and from_iso_numeric(loan.currency) != row.currency:
            posted.append(
                suspense.suspense_posting(
                    row, reason=f"payment in {row.currency}, loan in {from_iso_numeric(loan.currency)}"
                )
            )
        else:
            row.loan_id, row.partner_id, row.match_method = loan.id, loan.partner_id, match.method.value
            left = owed.get((loan.id, row.currency), 0) if loan.chain_state in matching.REPAYABLE else 0
            allocation = mm.allocate(row.amount, left)
            if loan.chain_state in matching.REPAYABLE:
                owed[(loan.id, row.currency)] = left - allocation.applied
            row.applied, row.excess = allocation.applied, allocation.excess
            recent[loan.id] = recent.get(loan.id, 0) + 1  # this payment counts itself
            record_ = row.provider_record or {}
            payer = record_.get("user_id") or (record_.get("metadata") or {}).get("user_id")
            flags = payment_flags(
                PaymentFacts(
                    amount=row.amount,
                    loan_total_due=int(loan.total_due or 0),
                    payments_into_loan_last_hour=recent[loan.id],
                    payer_user_id=str(payer) if payer else None,
                    borrower_user_id=borrower_users.get(loan.id),
                ),
                policy,
            )
            raised.append((flags, "payment", str(row.id), loan.id, loan.partner_id))
            posting = mm.repayment_posting(
                posting_id=posting_id(row.payment_ref),
                rail=row.provider,
                loan_id=loan.id,
                borrower=loan.borrower_ref or str(loan.id),
                amount=row.amount,
                allocation=allocation,
                currency=row.currency,
                reference=row.provider_reference,
            )
            if allocation.applied == 0:
                # not repayable yet (held until ACTIVE) or nothing to apply to (operator review)
                posted.append(
                    early_money.keep(
                        row,
                        loan,
                        method=match.method,
                        posting_id=posting.posting_id,
                        reason=early_money.nothing_owed(loan),
                    )
                )
            else:
                held.append(posting)
                calls.append(
                    IntentCall(
                        idempotency_key=record_intent_key(row.payment_ref),
                        to=deployment.loan_book_address,
                        data=deployment.loan_book_contract.record_repayment(
                            bytes.fromhex(loan.chain_loan_id[2:]),
                            allocation.applied,
                            bytes.fromhex(row.payment_ref[2:]),
                        ),
                        trace_context=item.trace_context,
                    )
                )
                matching.pending_chain(row, loan, allocation, match.method)
        results[key] = Intake(row.id, row.status, created=True)
    await monitoring.record_many(session, raised)
    await journal.post_many(session, posted)
    await journal.hold_many(session, held)
    await submit_many(session, calls, caller="repayment", deployment=deployment)
    outcome = []
    for i, item in enumerate(items):
        result = results[(item.payment.provider, item.payment.reference)]
        if first[(item.payment.provider, item.payment.reference)] != i:
            # the batch's second delivery of a payment finds the first's row, as it would later
            result = Intake(result.payment_id, result.status, created=False)
        outcome.append(result)
    return outcome
