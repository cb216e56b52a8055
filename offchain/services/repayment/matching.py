"""Which loan a payment belongs to, and how much of it the loan takes (the allocation).

Allocation never trusts a stale balance: the loan is locked (advisory lock) and its receivable
in the ledger, net of repayments still on their way to the chain, bounds what is applied; the
rest is the borrower's credit. A payment matched by hand from suspense, and a chargeback's
reversal request, go the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.domain.monitoring import MonitoringPolicy
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.logging import get_logger
from offchain.services import monitoring
from offchain.services.repayment import early_money, recoveries, suspense
from offchain.services.repayment.locks import lock_loan
from offchain.services.repayment.references import (
    posting_id,
    record_intent_key,
    reverse_intent_key,
)

log = get_logger(__name__)


ACTIVE, REPAID, DEFAULTED, WRITTEN_OFF = 3, 4, 5, 6
DEFAULT_POLICY = MonitoringPolicy()
# a written-off loan takes recoveries (LoanBook natspec; see recoveries.py)
REPAYABLE = (ACTIVE, DEFAULTED, WRITTEN_OFF)


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
        route_rows = await session.execute(
            select(PaymentRoute.kind, PaymentRoute.value, PaymentRoute.loan_id).where(
                or_(
                    (PaymentRoute.kind == "virtual_account") & PaymentRoute.value.in_(accounts),
                    (PaymentRoute.kind == "reference") & PaymentRoute.value.in_(references),
                )
            )
        )
        routes = {(kind, value): loan_id for kind, value, loan_id in route_rows}
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
        await suspense.to_suspense(
            session, row, reason=f"loan {loan_id} is not known to the backend", posting_suffix=posting_suffix
        )
        return
    if loan.currency is not None and from_iso_numeric(loan.currency) != row.currency:
        await suspense.to_suspense(
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
    pending_chain(row, loan, allocation, method)


def pending_chain(row: Payment, loan: Loan, allocation: mm.Allocation, method: mm.MatchMethod) -> None:
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
