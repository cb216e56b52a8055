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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain import calldata
from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.domain.monitoring import MonitoringPolicy
from offchain.eventbus.outbox import publish
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.logging import get_logger
from offchain.rails.paystack.client import PaystackClient
from offchain.services import monitoring

log = get_logger(__name__)

ACTIVE, REPAID, DEFAULTED = 3, 4, 5
DEFAULT_POLICY = MonitoringPolicy()
REPAYABLE = (ACTIVE, DEFAULTED)
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
    matched = await find_match(session, payment)
    if matched is None:
        await _to_suspense(session, row, reason="no loan matches the payment")
    else:
        await apply_to_loan(
            session, row, loan_id=matched.loan_id, method=matched.method, deployment=deployment
        )
    return Intake(row.id, row.status, created=True)


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


async def lock_loan(session: AsyncSession, loan_id: uuid.UUID) -> Loan | None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"loan:{loan_id}"})
    return (
        await session.execute(
            select(Loan).where(Loan.id == loan_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def available_to_apply(session: AsyncSession, loan_id: uuid.UUID, currency: str) -> int:
    """What the loan still owes net of repayments on their way to the chain (loan locked)."""
    balance = await journal.balance(session, accounts.loan_receivable(str(loan_id)), currency)
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
    if loan is None or loan.partner_id is None or loan.currency is None:
        await _to_suspense(
            session, row, reason=f"loan {loan_id} is not known to the backend", posting_suffix=posting_suffix
        )
        return
    if from_iso_numeric(loan.currency) != row.currency:
        await _to_suspense(
            session,
            row,
            reason=f"payment in {row.currency}, loan in {from_iso_numeric(loan.currency)}",
            posting_suffix=posting_suffix,
        )
        return
    row.loan_id, row.partner_id, row.match_method = loan.id, loan.partner_id, method.value
    owed = await available_to_apply(session, loan.id, row.currency) if loan.chain_state in REPAYABLE else 0
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
        # nothing to record on chain (repaid, not yet disbursed, written off): the borrower's credit
        await journal.post(session, posting)
        row.status = "credited"
        row.detail = f"loan state {loan.chain_state}: kept as the borrower's credit"
        return
    await journal.hold(session, posting)
    data = calldata.record_repayment(
        bytes.fromhex(loan.chain_loan_id[2:]), allocation.applied, bytes.fromhex(row.payment_ref[2:])
    )
    await submit(
        session,
        idempotency_key=record_intent_key(row.payment_ref),
        to=deployment.loan_book_address,
        data=data,
    )
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
    data = calldata.reverse_repayment(
        bytes.fromhex(loan.chain_loan_id[2:]), bytes.fromhex(row.payment_ref[2:]), reason_code
    )
    await submit(
        session,
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
        {
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
        },
        key=str(loan.id),
        partner_id=loan.partner_id,
    )


async def on_repayment_reversed(session: AsyncSession, args: dict[str, Any]) -> None:
    ref = str(args["payment_ref"]).lower()
    row = await payment_by_ref(session, ref)
    if row is None or row.status == "reversed":
        return
    held = _held_posting(row)
    await journal.reverse(
        session, held, reversal_id=f"{held}:reversed", description=f"chargeback of {row.provider_reference}"
    )
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
    kind, ref = key.split(":", 1)
    row = await payment_by_ref(session, ref)
    if row is None:
        return
    if kind == "repay" and row.status == "pending_chain":
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
