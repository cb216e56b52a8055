"""The chain's answers to the payments: RepaymentRecorded settles the hold and earns the
interest, RepaymentReversed undoes it, a refused intent puts the money back; late fees,
write-offs and the closing of a loan.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.domain.money import from_iso_numeric
from offchain.eventbus.outbox import OutgoingEvent, publish, publish_many
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment
from offchain.platform.logging import get_logger
from offchain.services.repayment import early_money, suspense
from offchain.services.repayment.references import (
    held_posting,
)

log = get_logger(__name__)


REPAYMENT_RECEIVED = "credit.repayment.received"
LOAN_REPAID = "credit.loan.repaid"
LOAN_DEFAULTED = "credit.loan.defaulted"


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
    await journal.post_pending(session, held_posting(row))
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
    for pending in rows.values():
        if pending.loan_id is not None and pending.status == "pending_chain":
            wanted.setdefault(pending.currency, set()).add(pending.loan_id)
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
        settle.append(held_posting(row))
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
    held = held_posting(row)
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
        await journal.void_pending(session, held_posting(row))
        detail = f"chain refused the repayment: {reason}"
        if row.match_method == mm.MatchMethod.MANUAL.value:
            # matched by hand from suspense: voiding the hold leaves the money where it was
            row.status, row.detail = "unmatched", detail
        else:
            await suspense.to_suspense(session, row, reason=detail, posting_suffix=":refused")
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
