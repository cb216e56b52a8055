"""Money that arrives for a loan that cannot take it: held until it can, or handed to an operator.

LoanBook's `record_repayment` accepts a loan only while it is ACTIVE or DEFAULTED (or, as a
recovery, WRITTEN_OFF: offchain.services.repayment.recoveries). A charge that
arrives before (the loan PENDING or APPROVED, or not yet created on chain, or APPROVED in the
backend's copy while the chain already says ACTIVE) is **held**: Dr rail clearing, Cr the loan's
held account (`loan:<id>:held`), payment status `held`. It is applied, under its own payment_ref,
when the loan becomes ACTIVE: `settle_held` runs on the indexer's `chain.LoanDisbursed` (and on
`chain.LoanCancelled`), and a sweep catches any loan whose event was handled before the money
was in. Each application is one transaction (the loan locked, the payment row locked and checked
`held`, a ledger hold Dr held / Cr receivable, and the record_repayment intent keyed by the
payment_ref), so a redelivered event, the sweep and a crash mid-way all end in one effect.

Money for a loan that will never take it again -- REPAID, CANCELLED, or a repayable
loan whose every naira is already spoken for -- goes to **operator review**: status `review`,
still in the loan's held account, listed by `GET /v1/payments?status=review`, until an operator
matches it to a repayable loan (`POST /v1/payments/{id}/match`) or refunds it (at the rail, by
hand: the platform has no refund call yet). It is never applied by itself
and never silently kept as the borrower's credit (what the backend did before). The part of a
payment beyond what the loan owes when it is applied stays the borrower's credit, as before.
Money held longer than MONEY__HELD_MAX_DAYS (30) on a loan still not repayable (one left
PENDING) goes to review too: no money waits on a loan that may never move.

Why the race with ACTIVE cannot strand money: the indexer commits the loan's new state and the
`chain.LoanDisbursed` event in one transaction; intake and `settle_held` both take the loan's
advisory lock and read its state after it. Intake that read APPROVED holds the lock until its
held row commits, and `settle_held` (which can only run after the indexer's commit) waits for it
and sees the row; intake that runs after `settle_held` reads ACTIVE and applies directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import IntentCall, submit_many
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment
from offchain.platform.logging import get_logger
from offchain.services.repayment.locks import lock_loans

log = get_logger(__name__)

HELD = "held"
REVIEW = "review"
STATE_NAMES = {
    0: "not yet created on chain",
    1: "PENDING",
    2: "APPROVED",
    3: "ACTIVE",
    4: "REPAID",
    5: "DEFAULTED",
    6: "WRITTEN_OFF",
    7: "CANCELLED",
}


def keep(
    row: Payment,
    loan: Loan,
    *,
    method: mm.MatchMethod,
    posting_id: str,
    source: str | None = None,
    reason: str | None = None,
) -> accounts.Posting:
    """Mark a new payment held (the loan may still become ACTIVE) or under review (it never
    will, or owes nothing); returns the posting that puts the money in the loan's held account,
    for the caller to post with the rest of its batch."""
    held = mm.disposition(loan.chain_state) is mm.Disposition.HOLD
    row.loan_id, row.partner_id, row.match_method = loan.id, loan.partner_id, method.value
    row.applied, row.excess = 0, 0
    row.status = HELD if held else REVIEW
    row.held_posting = posting_id
    state = STATE_NAMES.get(loan.chain_state, str(loan.chain_state))
    row.detail = reason or (
        f"held: the loan is {state}; applied when it becomes ACTIVE"
        if held
        else f"for review: the loan is {state}; match it to a repayable loan, or refund it at the rail"
    )
    log.info("payment.kept", payment_id=str(row.id), loan_id=str(loan.id), status=row.status, state=state)
    return mm.held_posting(
        posting_id=posting_id,
        loan_id=loan.id,
        amount=row.amount,
        currency=row.currency,
        reference=row.provider_reference,
        source=source or accounts.rail_clearing(row.provider),
    )


def nothing_owed(loan: Loan) -> str | None:
    """Why money for a repayable loan is not applied: everything it owes is already paid or on
    its way to the chain (None for a loan that is not repayable: `keep` says why)."""
    if mm.disposition(loan.chain_state) is mm.Disposition.APPLY:
        return "for review: the loan owes nothing more (paid, or payments on their way to the chain)"
    return None


def applied_posting_id(payment_ref: str, attempt: str = "") -> str:
    return f"payment:{payment_ref}:applied" + (f":{attempt}" if attempt else "")


def intent_key(payment_ref: str, attempt: str = "") -> str:
    """The record_repayment intent of an application: `repay:<ref>` (what every payment's first
    record is keyed by), `repay:<ref>:<attempt>` for an operator's later one."""
    return f"repay:{payment_ref}" + (f":{attempt}" if attempt else "")


def current_intent_key(row: Payment) -> str | None:
    """The intent key of the row's latest application (None: not applied from held money)."""
    if not row.applied_posting:
        return None
    attempt = row.applied_posting.removeprefix(applied_posting_id(row.payment_ref)).removeprefix(":")
    return intent_key(row.payment_ref, attempt)


def _application(
    row: Payment, loan: Loan, owed: int, *, source_loan: uuid.UUID, attempt: str, deployment: Deployment
) -> tuple[accounts.Posting, IntentCall] | None:
    """Apply a kept payment to `loan` (repayable, locked): the ledger hold and the chain call,
    or None when the loan owes nothing."""
    allocation = mm.allocate(row.amount, owed)
    if allocation.applied == 0:
        return None
    posting_id = applied_posting_id(row.payment_ref, attempt)
    posting = mm.repayment_posting(
        posting_id=posting_id,
        rail=row.provider,
        loan_id=loan.id,
        borrower=loan.borrower_ref or str(loan.id),
        amount=row.amount,
        allocation=allocation,
        currency=row.currency,
        reference=row.provider_reference,
        source=accounts.loan_held(str(source_loan)),
    )
    call = IntentCall(
        idempotency_key=intent_key(row.payment_ref, attempt),
        to=deployment.loan_book_address,
        data=deployment.loan_book_contract.record_repayment(
            bytes.fromhex(loan.chain_loan_id[2:]), allocation.applied, bytes.fromhex(row.payment_ref[2:])
        ),
    )
    row.loan_id, row.partner_id = loan.id, loan.partner_id
    row.applied, row.excess = allocation.applied, allocation.excess
    row.applied_posting = posting_id
    row.status = "pending_chain"
    row.detail = None
    return posting, call


async def _held_rows(session: AsyncSession, loan_id: uuid.UUID) -> list[Payment]:
    return list(
        (
            await session.execute(
                select(Payment)
                .where(Payment.loan_id == loan_id, Payment.status == HELD)
                .order_by(Payment.created_at, Payment.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    )


async def settle_held(session: AsyncSession, loan: Loan, *, deployment: Deployment) -> int:
    """The loan's held payments, once it can take them (the loan locked by the caller, its state
    read after the lock): applied in the order they arrived while it is ACTIVE or DEFAULTED,
    to review once it is closed, left held while it is not yet repayable. Returns how many
    payments changed. Safe to run again: only rows still `held` are touched."""
    disposition = mm.disposition(loan.chain_state)
    if disposition is mm.Disposition.HOLD:
        return 0
    rows = await _held_rows(session, loan.id)
    if not rows:
        return 0
    state = STATE_NAMES.get(loan.chain_state, str(loan.chain_state))
    if disposition is mm.Disposition.REVIEW or loan.currency is None:
        for row in rows:
            row.status = REVIEW
            row.detail = f"for review: the loan became {state} before the money could be applied"
        log.info("payment.held_to_review", loan_id=str(loan.id), payments=len(rows), state=state)
        return len(rows)
    currency = from_iso_numeric(loan.currency)
    balance = await journal.balance(session, accounts.loan_receivable(str(loan.id)), currency)
    owed = max(0, balance.posted - balance.pending_credits)
    postings: list[accounts.Posting] = []
    calls: list[IntentCall] = []
    for row in rows:
        applied = (
            _application(row, loan, owed, source_loan=loan.id, attempt="", deployment=deployment)
            if row.currency == currency
            else None
        )
        if applied is None:
            row.status = REVIEW
            row.detail = (
                f"for review: payment in {row.currency}, loan in {currency}"
                if row.currency != currency
                else "for review: the loan owed nothing more when it became repayable"
            )
            continue
        postings.append(applied[0])
        calls.append(applied[1])
        owed -= row.applied
    await journal.hold_many(session, postings)
    await submit_many(session, calls, caller="repayment", deployment=deployment)
    log.info("payment.held_applied", loan_id=str(loan.id), applied=len(calls), review=len(rows) - len(calls))
    return len(rows)


async def settle_loan_events(
    session: AsyncSession, chain_loan_ids: Sequence[str], *, deployment: Deployment
) -> int:
    """`settle_held` for the loans of chain events (LoanDisbursed, LoanCancelled), locked in the
    one order every caller uses."""
    wanted = sorted({value.lower() for value in chain_loan_ids if value})
    if not wanted:
        return 0
    ids = list((await session.execute(select(Loan.id).where(Loan.chain_loan_id.in_(wanted)))).scalars())
    loans = await lock_loans(session, sorted(ids))
    changed = 0
    for loan_id in sorted(loans):
        changed += await settle_held(session, loans[loan_id], deployment=deployment)
    return changed


async def loans_to_settle(session: AsyncSession, *, limit: int = 100) -> list[uuid.UUID]:
    """Loans with held money that could be settled now (a missed or early-handled event)."""
    return [
        loan_id
        for loan_id in (
            await session.execute(
                select(Payment.loan_id)
                .join(Loan, Loan.id == Payment.loan_id)
                .where(Payment.status == HELD, Loan.chain_state.not_in((0, 1, 2)))
                .group_by(Payment.loan_id)
                .order_by(func.min(Payment.created_at))
                .limit(limit)
            )
        ).scalars()
        if loan_id is not None
    ]


async def _expire(session: AsyncSession, *, older_than: timedelta, limit: int) -> int:
    """Held money whose loan has stayed not repayable for `older_than` (a loan left PENDING):
    to review, so no money waits on a loan that may never be approved or cancelled."""
    cutoff = datetime.now(UTC) - older_than
    loan_ids = [
        loan_id
        for loan_id in (
            await session.execute(
                select(Payment.loan_id)
                .where(Payment.status == HELD, Payment.created_at < cutoff)
                .group_by(Payment.loan_id)
                .limit(limit)
            )
        ).scalars()
        if loan_id is not None
    ]
    if not loan_ids:
        return 0
    loans = await lock_loans(session, sorted(loan_ids))
    expired = 0
    for loan_id in sorted(loans):
        if mm.disposition(loans[loan_id].chain_state) is not mm.Disposition.HOLD:
            continue  # settled by settle_held instead
        for row in await _held_rows(session, loan_id):
            if row.created_at < cutoff:
                row.status = REVIEW
                row.detail = f"for review: held {older_than.days} days and the loan is still not ACTIVE"
                expired += 1
    if expired:
        log.info("payment.held_expired", payments=expired)
    return expired


async def sweep(
    session: AsyncSession,
    *,
    deployment: Deployment,
    limit: int = 100,
    max_held: timedelta = timedelta(days=30),
) -> int:
    """Settle the held money of loans that can take it, whatever happened to their events; hand
    money held longer than `max_held` to review."""
    changed = 0
    loan_ids = await loans_to_settle(session, limit=limit)
    if loan_ids:
        loans = await lock_loans(session, sorted(loan_ids))
        for loan_id in sorted(loans):
            changed += await settle_held(session, loans[loan_id], deployment=deployment)
    changed += await _expire(session, older_than=max_held, limit=limit)
    if changed:
        log.info("payment.held_swept", payments=changed)
    return changed


async def match_reviewed(session: AsyncSession, row: Payment, loan: Loan, *, deployment: Deployment) -> None:
    """An operator applies money under review to a repayable loan (row and loan locked by the
    caller): from the held account of the loan it was paid for, under a fresh intent key (an
    earlier attempt of this payment may have been refused)."""
    if row.status != REVIEW or row.loan_id is None:
        raise ValueError(f"payment is {row.status}, not under review")
    if mm.disposition(loan.chain_state) is not mm.Disposition.APPLY or loan.currency is None:
        raise ValueError(
            f"loan {loan.id} is {STATE_NAMES.get(loan.chain_state, loan.chain_state)}: not repayable"
        )
    currency = from_iso_numeric(loan.currency)
    if currency != row.currency:
        raise ValueError(f"payment in {row.currency}, loan in {currency}")
    # its own intent key and posting: an earlier attempt of this payment may have been refused
    attempt = f"m{uuid.uuid4().hex[:12]}"
    balance = await journal.balance(session, accounts.loan_receivable(str(loan.id)), currency)
    owed = max(0, balance.posted - balance.pending_credits)
    source_loan = row.loan_id
    applied = _application(row, loan, owed, source_loan=source_loan, attempt=attempt, deployment=deployment)
    if applied is None:
        raise ValueError(f"loan {loan.id} owes nothing")
    row.match_method = mm.MatchMethod.MANUAL.value
    await journal.hold(session, applied[0])
    await submit_many(session, [applied[1]], caller="repayment", deployment=deployment)


async def on_refused(session: AsyncSession, row: Payment, key: str, reason: str | None) -> None:
    """The chain refused the record_repayment of an application of held money (row locked): the
    hold is voided, so the money is back in the held account, and an operator decides."""
    if row.status != "pending_chain" or key != current_intent_key(row) or not row.applied_posting:
        return  # settled already, or an earlier attempt's answer
    await journal.void_pending(session, row.applied_posting)
    row.status, row.detail = REVIEW, f"for review: the chain refused the repayment: {reason}"


async def on_reversed(session: AsyncSession, row: Payment) -> None:
    """A chargeback of a payment applied from held money (its application already reversed):
    the money leaves the held account too, back to where it came from."""
    if row.held_posting:
        await journal.reverse(
            session,
            row.held_posting,
            reversal_id=f"{row.held_posting}:reversed",
            description=f"chargeback of {row.provider_reference}",
        )
