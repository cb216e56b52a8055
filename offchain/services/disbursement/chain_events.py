"""The chain's answers to a payout: LoanDisbursed tells the partner, a refused record_disbursement
sends the payout to review (the money left; the chain does not say so)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.eventbus.outbox import publish
from offchain.persistence.money import Payout
from offchain.platform.logging import get_logger
from offchain.services.disbursement.payouts import lock_payout

log = get_logger(__name__)

DISBURSEMENT_COMPLETED = "credit.disbursement.completed"


async def on_loan_disbursed(session: AsyncSession, *, chain_loan_id: str, tx_hash: str | None) -> None:
    """LoanDisbursed indexed: tell the partner (once: the caller is an idempotent consumer)."""
    payout = (
        await session.execute(
            select(Payout).where(Payout.chain_loan_id == chain_loan_id.lower()).with_for_update()
        )
    ).scalar_one_or_none()
    if payout is None:
        return
    payout.disbursed_tx = tx_hash
    await publish(
        session,
        DISBURSEMENT_COMPLETED,
        {
            "loan_id": str(payout.loan_id),
            "chain_loan_id": payout.chain_loan_id,
            "amount": {"value": payout.amount, "currency": payout.currency},
            "method": payout.method,
            "reference": payout.reference,
            "tx_hash": tx_hash,
        },
        key=str(payout.loan_id),
        partner_id=payout.partner_id,
    )


async def on_chain_refused(session: AsyncSession, *, loan_id: uuid.UUID, reason: str | None) -> None:
    """record_disbursement reverted or could not be sent: money left, the chain does not say so."""
    payout = await lock_payout(session, loan_id)
    if payout is None:
        return
    payout.status = "review"
    payout.last_error = f"record_disbursement refused by the chain: {reason}"
    log.error("payout.chain_refused", loan_id=str(loan_id), reason=reason)
