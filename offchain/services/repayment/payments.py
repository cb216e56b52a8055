"""Incoming payments: verified with the provider, matched to a loan, recorded on chain once, posted.

One payment is one row keyed by (provider, provider reference) and one payment_ref on chain
(keccak256("<provider>:<reference>")); the LoanBook refuses a payment_ref twice, the sender
dedupes the intent by key, and the row is created once -- three independent locks on
"exactly once". Intake is one transaction: row + ledger hold + chain intent. The chain's answer
(RepaymentRecorded, or the intent reverted) settles the hold later, in another.

Allocation never trusts a stale balance: the loan is locked (advisory lock) and its receivable
in the ledger, net of repayments still on their way to the chain, bounds what is applied; the
rest is the borrower's credit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import IntentCall, submit, submit_many
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.domain.monitoring import Flag, MonitoringPolicy, PaymentFacts, payment_flags
from offchain.eventbus.outbox import OutgoingEvent, publish, publish_many
from offchain.persistence import ledger as journal
from offchain.persistence.credit import Application, Origination
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.logging import get_logger
from offchain.rails.paystack.client import PaystackClient
from offchain.services import monitoring
from offchain.services.repayment import early_money, fees, recoveries
from offchain.services.repayment.locks import lock_loan, lock_loans

log = get_logger(__name__)

ACTIVE, REPAID, DEFAULTED, WRITTEN_OFF = 3, 4, 5, 6
DEFAULT_POLICY = MonitoringPolicy()
# a written-off loan takes recoveries (LoanBook natspec; see recoveries.py)
REPAYABLE = (ACTIVE, DEFAULTED, WRITTEN_OFF)
REPAYMENT_RECEIVED = "credit.repayment.received"
LOAN_REPAID = "credit.loan.repaid"
LOAN_DEFAULTED = "credit.loan.defaulted"


def posting_id(payment_ref: str) -> str:
    return f"payment:{payment_ref}"


def record_intent_key(payment_ref: str) -> str:
    return f"repay:{payment_ref}"


def reverse_intent_key(payment_ref: str) -> str:
    return f"reverse:{payment_ref}"


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass(frozen=True)
class Intake:
    payment_id: uuid.UUID
    status: str
    created: bool


# --- matching ---------------------------------------------------------------------------------


async def _loan_by_any_id(session: AsyncSession, value: str | None) -> Loan | None:
    if not value:
        return None
    text_value = value.strip().lower()
    if text_value.startswith("0x") and len(text_value) == 66:
        return (
            await session.execute(select(Loan).where(Loan.chain_loan_id == text_value))
        ).scalar_one_or_none()
    loan_uuid = mm.parse_loan_id(text_value)
    return await session.get(Loan, loan_uuid) if loan_uuid else None


async def _routed_loan(session: AsyncSession, kind: str, value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    return (
        await session.execute(
            select(PaymentRoute.loan_id).where(PaymentRoute.kind == kind, PaymentRoute.value == value)
        )
    ).scalar_one_or_none()


async def find_match(session: AsyncSession, payment: mm.IncomingPayment) -> mm.Match | None:
    metadata_loan = await _loan_by_any_id(session, payment.metadata_loan_id)
    return mm.match(
        payment,
        metadata_loan=metadata_loan.id if metadata_loan else None,
        account_loan=await _routed_loan(session, "virtual_account", payment.receiver_account),
        reference_loan=await _routed_loan(session, "reference", payment.reference),
    )


# --- intake -----------------------------------------------------------------------------------


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
    ref = _hex(mm.payment_ref(payment.provider, payment.reference))
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
    matched = await find_match(session, payment)
    if matched is None:
        await _to_suspense(session, row, reason="no loan matches the payment")
    else:
        await apply_to_loan(
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


async def find_matches(
    session: AsyncSession, payments: Sequence[mm.IncomingPayment]
) -> list[mm.Match | None]:
    """`find_match` for many payments: three queries, whatever their number."""
    by_uuid: set[uuid.UUID] = set()
    by_chain: set[str] = set()
    for payment in payments:
        value = (payment.metadata_loan_id or "").strip().lower()
        if value.startswith("0x") and len(value) == 66:
            by_chain.add(value)
        elif value and (loan_uuid := mm.parse_loan_id(value)):
            by_uuid.add(loan_uuid)
    known: set[uuid.UUID] = set()
    chain_loans: dict[str, uuid.UUID] = {}
    if by_uuid or by_chain:
        rows = await session.execute(
            select(Loan.id, Loan.chain_loan_id).where(
                or_(Loan.id.in_(by_uuid), Loan.chain_loan_id.in_(by_chain))
            )
        )
        for loan_id, chain_loan_id in rows:
            known.add(loan_id)
            if chain_loan_id:
                chain_loans[chain_loan_id] = loan_id
    accounts = {p.receiver_account for p in payments if p.receiver_account}
    references = {p.reference for p in payments if p.reference}
    routes: dict[tuple[str, str], uuid.UUID] = {}
    if accounts or references:
        rows = await session.execute(
            select(PaymentRoute.kind, PaymentRoute.value, PaymentRoute.loan_id).where(
                or_(
                    (PaymentRoute.kind == "virtual_account") & PaymentRoute.value.in_(accounts),
                    (PaymentRoute.kind == "reference") & PaymentRoute.value.in_(references),
                )
            )
        )
        routes = {(kind, value): loan_id for kind, value, loan_id in rows}
    matches = []
    for payment in payments:
        value = (payment.metadata_loan_id or "").strip().lower()
        if value.startswith("0x") and len(value) == 66:
            metadata_loan = chain_loans.get(value)
        else:
            loan_uuid = mm.parse_loan_id(value) if value else None
            metadata_loan = loan_uuid if loan_uuid in known else None
        matches.append(
            mm.match(
                payment,
                metadata_loan=metadata_loan,
                account_loan=routes.get(("virtual_account", payment.receiver_account or "")),
                reference_loan=routes.get(("reference", payment.reference or "")),
            )
        )
    return matches


async def receive_many(
    session: AsyncSession,
    items: Sequence[Verified],
    *,
    deployment: Deployment,
    policy: MonitoringPolicy = DEFAULT_POLICY,
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
    matches = await find_matches(session, [item.payment for item in unique])
    loans = await lock_loans(session, sorted({m.loan_id for m in matches if m is not None}))

    # the rows, inserted in key order (two batches sharing payments cannot deadlock on them)
    values = [
        {
            "provider": item.payment.provider,
            "provider_reference": item.payment.reference,
            "payment_ref": _hex(mm.payment_ref(item.payment.provider, item.payment.reference)),
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
    loan_ids = sorted({match.loan_id for _, match in applying if match.loan_id in loans})
    recent: dict[uuid.UUID, int] = {}
    borrower_users: dict[uuid.UUID, str | None] = {}
    if loan_ids:
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        recent = dict(
            (
                await session.execute(
                    select(Payment.loan_id, func.count())
                    .where(Payment.loan_id.in_(loan_ids), Payment.created_at >= hour_ago)
                    .group_by(Payment.loan_id)
                )
            ).all()
        )
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
    for item, match in applying:
        loan = loans.get(match.loan_id)
        if loan is not None and loan.currency is not None and loan.chain_state in REPAYABLE:
            wanted.setdefault(item.payment.currency, set()).add(loan.id)
    for currency, ids in wanted.items():
        found = await journal.balances(
            session, [accounts.loan_receivable(str(loan_id)) for loan_id in sorted(ids)], currency
        )
        for loan_id in ids:
            balance = found[accounts.loan_receivable(str(loan_id))]
            written_off = loans[loan_id].chain_state == WRITTEN_OFF
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
            posted.append(_suspense(row, reason="no loan matches the payment"))
        elif loan is None or loan.partner_id is None:
            posted.append(_suspense(row, reason=f"loan {match.loan_id} is not known to the backend"))
        elif loan.currency is not None and from_iso_numeric(loan.currency) != row.currency:
            posted.append(
                _suspense(row, reason=f"payment in {row.currency}, loan in {from_iso_numeric(loan.currency)}")
            )
        else:
            row.loan_id, row.partner_id, row.match_method = loan.id, loan.partner_id, match.method.value
            left = owed.get((loan.id, row.currency), 0) if loan.chain_state in REPAYABLE else 0
            allocation = mm.allocate(row.amount, left)
            if loan.chain_state in REPAYABLE:
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
                _pending_chain(row, loan, allocation, match.method)
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


def _suspense(row: Payment, *, reason: str) -> accounts.Posting:
    """`_to_suspense` for a batch: the row marked, the posting returned for `post_many`."""
    row.status = "unmatched"
    row.detail = reason
    log.info("payment.suspense", payment_id=str(row.id), reason=reason)
    return mm.repayment_posting(
        posting_id=posting_id(row.payment_ref),
        rail=row.provider,
        loan_id=None,
        borrower=None,
        amount=row.amount,
        allocation=None,
        currency=row.currency,
        reference=row.provider_reference,
    )


async def _to_suspense(session: AsyncSession, row: Payment, *, reason: str, posting_suffix: str = "") -> None:
    await journal.post(
        session,
        mm.repayment_posting(
            posting_id=posting_id(row.payment_ref) + posting_suffix,
            rail=row.provider,
            loan_id=None,
            borrower=None,
            amount=row.amount,
            allocation=None,
            currency=row.currency,
            reference=row.provider_reference,
        ),
    )
    row.status = "unmatched"
    row.detail = reason
    log.info("payment.suspense", payment_id=str(row.id), reason=reason)


async def available_to_apply(session: AsyncSession, loan: Loan, currency: str) -> int:
    """What the loan still owes net of repayments on their way to the chain (loan locked)."""
    balance = await journal.balance(session, accounts.loan_receivable(str(loan.id)), currency)
    if loan.chain_state == WRITTEN_OFF:
        return recoveries.owed_after_write_off(loan, balance.pending_credits)
    return max(0, balance.posted - balance.pending_credits)


async def apply_to_loan(
    session: AsyncSession,
    row: Payment,
    *,
    loan_id: uuid.UUID,
    method: mm.MatchMethod,
    deployment: Deployment,
    source: str | None = None,
    posting_suffix: str = "",
    policy: MonitoringPolicy = DEFAULT_POLICY,
) -> None:
    loan = await lock_loan(session, loan_id)
    if loan is None or loan.partner_id is None:
        await _to_suspense(
            session, row, reason=f"loan {loan_id} is not known to the backend", posting_suffix=posting_suffix
        )
        return
    if loan.currency is not None and from_iso_numeric(loan.currency) != row.currency:
        await _to_suspense(
            session,
            row,
            reason=f"payment in {row.currency}, loan in {from_iso_numeric(loan.currency)}",
            posting_suffix=posting_suffix,
        )
        return
    row.loan_id, row.partner_id, row.match_method = loan.id, loan.partner_id, method.value
    owed = await available_to_apply(session, loan, row.currency) if loan.chain_state in REPAYABLE else 0
    allocation = mm.allocate(row.amount, owed)
    row.applied, row.excess = allocation.applied, allocation.excess
    # flags only: the money has arrived, recording it is not in question
    await monitoring.check_payment(session, row, loan, policy)
    posting = mm.repayment_posting(
        posting_id=posting_id(row.payment_ref) + posting_suffix,
        rail=row.provider,
        loan_id=loan.id,
        borrower=loan.borrower_ref or str(loan.id),
        amount=row.amount,
        allocation=allocation,
        currency=row.currency,
        reference=row.provider_reference,
        source=source,
    )
    if allocation.applied == 0:
        # nothing to record on chain: held until the loan is ACTIVE, or for an operator's review
        await journal.post(
            session,
            early_money.keep(
                row,
                loan,
                method=method,
                posting_id=posting.posting_id,
                source=source,
                reason=early_money.nothing_owed(loan),
            ),
        )
        return
    await journal.hold(session, posting)
    data = deployment.loan_book_contract.record_repayment(
        bytes.fromhex(loan.chain_loan_id[2:]), allocation.applied, bytes.fromhex(row.payment_ref[2:])
    )
    await submit(
        session,
        caller="repayment",
        deployment=deployment,
        idempotency_key=record_intent_key(row.payment_ref),
        to=deployment.loan_book_address,
        data=data,
    )
    _pending_chain(row, loan, allocation, method)


def _pending_chain(row: Payment, loan: Loan, allocation: mm.Allocation, method: mm.MatchMethod) -> None:
    """The payment's applied part is on its way to the chain (its intent is submitted)."""
    row.status = "pending_chain"
    row.detail = None
    log.info(
        "payment.applied",
        payment_id=str(row.id),
        loan_id=str(loan.id),
        applied=allocation.applied,
        excess=allocation.excess,
        method=method.value,
    )


# --- manual matching and reversals --------------------------------------------------------------


async def match_by_hand(
    session: AsyncSession, row: Payment, *, loan_id: uuid.UUID, deployment: Deployment
) -> None:
    """Move suspended money to a loan: a new posting from suspense (the suspense posting stays)."""
    if row.status != "unmatched":
        raise ValueError(f"payment is {row.status}, not unmatched")
    await apply_to_loan(
        session,
        row,
        loan_id=loan_id,
        method=mm.MatchMethod.MANUAL,
        deployment=deployment,
        source=accounts.SUSPENSE,
        posting_suffix=":matched",
    )


def _held_posting(row: Payment) -> str:
    if row.applied_posting:  # held money, applied from the loan's held account
        return row.applied_posting
    return posting_id(row.payment_ref) + (
        ":matched" if row.match_method == mm.MatchMethod.MANUAL.value else ""
    )


async def request_reversal(
    session: AsyncSession, row: Payment, *, reason: str, deployment: Deployment
) -> None:
    """A chargeback: reverse_repayment on chain; the postings follow the chain's RepaymentReversed."""
    if row.status != "recorded" or row.loan_id is None:
        raise ValueError(f"payment is {row.status}: only a recorded payment can be reversed")
    loan = await session.get(Loan, row.loan_id)
    assert loan is not None
    reason_code = mm.keccak_reason(reason)
    data = deployment.loan_book_contract.reverse_repayment(
        bytes.fromhex(loan.chain_loan_id[2:]), bytes.fromhex(row.payment_ref[2:]), reason_code
    )
    await submit(
        session,
        caller="repayment",
        deployment=deployment,
        idempotency_key=reverse_intent_key(row.payment_ref),
        to=deployment.loan_book_address,
        data=data,
    )
    row.status = "reversal_pending"
    row.detail = f"reversal requested: {reason}"


# --- the chain's answers ------------------------------------------------------------------------


async def payment_by_ref(session: AsyncSession, payment_ref: str) -> Payment | None:
    return (
        await session.execute(
            select(Payment)
            .where(Payment.payment_ref == payment_ref.lower())
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def on_repayment_recorded(session: AsyncSession, args: dict[str, Any], *, tx_hash: str | None) -> None:
    ref = str(args["payment_ref"]).lower()
    row = await payment_by_ref(session, ref)
    if row is None or row.loan_id is None:
        log.warning("payment.recorded_unknown", payment_ref=ref)
        return
    if row.status != "pending_chain":
        return  # already settled (a re-indexed event)
    await journal.post_pending(session, _held_posting(row))
    row.status = "recorded"
    row.recorded_tx = tx_hash
    loan = await session.get(Loan, row.loan_id)
    assert loan is not None and loan.principal is not None and loan.total_due is not None
    unearned = await journal.balance(session, accounts.loan_unearned_income(str(loan.id)), row.currency)
    earned = mm.earned_interest(
        scheduled_part=int(args["scheduled_part"]),
        principal=int(loan.principal),
        total_due=int(loan.total_due),
        unearned_left=max(0, unearned.posted),
        closes=int(args["outstanding_after"]) == 0,
    )
    if earned > 0:
        await journal.post(
            session,
            mm.interest_posting(
                posting_id=f"interest:{ref}", loan_id=loan.id, amount=earned, currency=row.currency
            ),
        )
    await publish(
        session,
        REPAYMENT_RECEIVED,
        _received_payload(row, loan, ref, args, tx_hash),
        key=str(loan.id),
        partner_id=loan.partner_id,
    )


@dataclass(frozen=True)
class Recorded:
    """One RepaymentRecorded for `on_repayments_recorded`."""

    args: dict[str, Any]
    tx_hash: str | None = None
    # headers of the partner event (trace context, request id of the event that announced it)
    headers: dict[str, Any] | None = None


async def on_repayments_recorded(session: AsyncSession, recorded: Sequence[Recorded]) -> None:
    """`on_repayment_recorded` for a batch, in the caller's one transaction: the same postings,
    rows and partner events as one by one in the batch's order, in a few statements.

    The payments are locked in payment_ref order; each loan's unearned income is read once and
    the interest of its payments earned in the batch's order against what is left of it.
    """
    refs = sorted({str(item.args["payment_ref"]).lower() for item in recorded})
    if not refs:
        return
    rows = {
        row.payment_ref: row
        for row in (
            await session.execute(
                select(Payment)
                .where(Payment.payment_ref.in_(refs))
                .order_by(Payment.payment_ref)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    }
    loan_ids = sorted({row.loan_id for row in rows.values() if row.loan_id is not None})
    loans = (
        {
            loan.id: loan
            for loan in (await session.execute(select(Loan).where(Loan.id.in_(loan_ids)))).scalars()
        }
        if loan_ids
        else {}
    )
    wanted: dict[str, set[uuid.UUID]] = {}
    for row in rows.values():
        if row.loan_id is not None and row.status == "pending_chain":
            wanted.setdefault(row.currency, set()).add(row.loan_id)
    unearned: dict[tuple[uuid.UUID, str], int] = {}
    for currency, ids in wanted.items():
        found = await journal.balances(
            session, [accounts.loan_unearned_income(str(loan_id)) for loan_id in sorted(ids)], currency
        )
        for loan_id in ids:
            unearned[(loan_id, currency)] = found[accounts.loan_unearned_income(str(loan_id))].posted

    settle: list[str] = []
    interest: list[accounts.Posting] = []
    events: list[OutgoingEvent] = []
    for item in recorded:
        args = item.args
        ref = str(args["payment_ref"]).lower()
        row = rows.get(ref)
        if row is None or row.loan_id is None:
            log.warning("payment.recorded_unknown", payment_ref=ref)
            continue
        if row.status != "pending_chain":
            continue  # already settled (a re-indexed event, or twice in the batch)
        settle.append(_held_posting(row))
        row.status = "recorded"
        row.recorded_tx = item.tx_hash
        loan = loans[row.loan_id]
        assert loan.principal is not None and loan.total_due is not None
        left = unearned[(loan.id, row.currency)]
        earned = mm.earned_interest(
            scheduled_part=int(args["scheduled_part"]),
            principal=int(loan.principal),
            total_due=int(loan.total_due),
            unearned_left=max(0, left),
            closes=int(args["outstanding_after"]) == 0,
        )
        if earned > 0:
            interest.append(
                mm.interest_posting(
                    posting_id=f"interest:{ref}", loan_id=loan.id, amount=earned, currency=row.currency
                )
            )
            unearned[(loan.id, row.currency)] = left - earned
        events.append(
            OutgoingEvent(
                REPAYMENT_RECEIVED,
                _received_payload(row, loan, ref, args, item.tx_hash),
                key=str(loan.id),
                partner_id=loan.partner_id,
                headers=dict(item.headers or {}),
            )
        )
    await journal.post_pending_many(session, settle)
    await journal.post_many(session, interest)
    await publish_many(session, events)


def _received_payload(
    row: Payment, loan: Loan, ref: str, args: dict[str, Any], tx_hash: str | None
) -> dict[str, Any]:
    return {
        "loan_id": str(loan.id),
        "chain_loan_id": loan.chain_loan_id,
        "payment_id": str(row.id),
        "provider": row.provider,
        "reference": row.provider_reference,
        "payment_ref": ref,
        "amount": {"value": row.amount, "currency": row.currency},
        "applied": {"value": row.applied, "currency": row.currency},
        "excess": {"value": row.excess, "currency": row.currency},
        "outstanding_after": {"value": int(args["outstanding_after"]), "currency": row.currency},
        "tx_hash": tx_hash,
    }


async def on_repayment_reversed(session: AsyncSession, args: dict[str, Any]) -> None:
    ref = str(args["payment_ref"]).lower()
    row = await payment_by_ref(session, ref)
    if row is None or row.status == "reversed":
        return
    held = _held_posting(row)
    await journal.reverse(
        session, held, reversal_id=f"{held}:reversed", description=f"chargeback of {row.provider_reference}"
    )
    await early_money.on_reversed(session, row)
    if await journal.get_posting(session, f"interest:{ref}") is not None:
        await journal.reverse(
            session,
            f"interest:{ref}",
            reversal_id=f"interest:{ref}:reversed",
            description="interest of a reversed payment",
        )
    row.status = "reversed"


async def on_intent_refused(session: AsyncSession, key: str, reason: str | None) -> None:
    """The chain refused a record_repayment (or reverse_repayment) we asked for."""
    kind, rest = key.split(":", 1)
    row = await payment_by_ref(session, rest.split(":", 1)[0])  # repay:<ref>[:<attempt>]
    if row is None:
        return
    if kind == "repay" and row.applied_posting:
        await early_money.on_refused(session, row, key, reason)  # held money: back to held, review
    elif kind == "repay" and row.status == "pending_chain":
        await journal.void_pending(session, _held_posting(row))
        detail = f"chain refused the repayment: {reason}"
        if row.match_method == mm.MatchMethod.MANUAL.value:
            # matched by hand from suspense: voiding the hold leaves the money where it was
            row.status, row.detail = "unmatched", detail
        else:
            await _to_suspense(session, row, reason=detail, posting_suffix=":refused")
        # the loan stays on the row: the operator sees which loan it was meant for
    elif kind == "reverse" and row.status == "reversal_pending":
        row.status = "recorded"
        row.detail = f"chain refused the reversal: {reason}"


async def on_late_fee(session: AsyncSession, loan_id_hex: str, args: dict[str, Any]) -> None:
    loan = (
        await session.execute(select(Loan).where(Loan.chain_loan_id == loan_id_hex.lower()))
    ).scalar_one_or_none()
    if loan is None or loan.currency is None:
        return
    await journal.post(
        session,
        mm.late_fee_posting(
            posting_id=f"fee:{str(args['fee_ref']).lower()}",
            loan_id=loan.id,
            amount=int(args["amount"]),
            currency=from_iso_numeric(loan.currency),
        ),
    )


async def on_written_off(session: AsyncSession, loan_id_hex: str) -> None:
    loan = (
        await session.execute(select(Loan).where(Loan.chain_loan_id == loan_id_hex.lower()))
    ).scalar_one_or_none()
    if loan is None or loan.currency is None:
        return
    currency = from_iso_numeric(loan.currency)
    receivable = await journal.balance(session, accounts.loan_receivable(str(loan.id)), currency)
    unearned = await journal.balance(session, accounts.loan_unearned_income(str(loan.id)), currency)
    posting = mm.write_off_posting(
        posting_id=f"writeoff:{loan.id}",
        loan_id=loan.id,
        receivable=receivable.posted,
        unearned=max(0, unearned.posted),
        currency=currency,
    )
    if posting is not None:
        await journal.post(session, posting)


async def notify_loan_closed(
    session: AsyncSession, loan_id_hex: str, topic: str, extra: dict[str, Any]
) -> None:
    loan = (
        await session.execute(select(Loan).where(Loan.chain_loan_id == loan_id_hex.lower()))
    ).scalar_one_or_none()
    if loan is None or loan.partner_id is None:
        return
    await publish(
        session,
        topic,
        {"loan_id": str(loan.id), "chain_loan_id": loan.chain_loan_id, **extra},
        key=str(loan.id),
        partner_id=loan.partner_id,
    )


# --- payment routes -----------------------------------------------------------------------------


async def issue_reference(session: AsyncSession, loan: Loan) -> str:
    """A payment reference for the borrower to quote; money paid under it finds this loan."""
    count = (
        await session.execute(
            select(func.count())
            .select_from(PaymentRoute)
            .where(PaymentRoute.loan_id == loan.id, PaymentRoute.kind == "reference")
        )
    ).scalar_one()
    reference = mm.repayment_reference(loan.id, int(count) + 1)
    await session.execute(
        pg_insert(PaymentRoute)
        .values(kind="reference", value=reference, loan_id=loan.id, partner_id=loan.partner_id)
        .on_conflict_do_nothing()
    )
    return reference


async def virtual_account_of(session: AsyncSession, loan_id: uuid.UUID) -> dict[str, Any] | None:
    route = (
        await session.execute(
            select(PaymentRoute).where(
                PaymentRoute.loan_id == loan_id, PaymentRoute.kind == "virtual_account"
            )
        )
    ).scalar_one_or_none()
    return {"loan_id": str(loan_id), "account_number": route.value, **route.detail} if route else None


async def open_virtual_account(
    session: AsyncSession, loan: Loan, *, paystack: PaystackClient
) -> dict[str, Any]:
    """A Paystack dedicated account for the loan (loan locked by the caller); no personal data:
    the customer is named after the loan, not the borrower."""
    customer = await paystack.create_customer(
        email=f"loan-{loan.id.hex}@borrowers.caas.invalid", metadata={"loan_id": str(loan.id)}
    )
    account = await paystack.create_dedicated_account(customer=customer.customer_code)
    detail = {"bank": account.bank.name, "account_name": account.account_name, "currency": account.currency}
    await session.execute(
        pg_insert(PaymentRoute)
        .values(
            kind="virtual_account",
            value=account.account_number,
            loan_id=loan.id,
            partner_id=loan.partner_id,
            detail=detail,
        )
        .on_conflict_do_nothing()
    )
    return {"loan_id": str(loan.id), "account_number": account.account_number, **detail}
