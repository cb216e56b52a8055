"""Money in suspense (unmatched payments) and who may see or match it.

Unmatched money belongs to no partner yet, so row-level security alone cannot scope it: a
partner sees, and may match, only the unmatched payments attributable to it, i.e. whose
provider record points at something of that partner's:
- the payment was once matched to one of its loans (the loan stays on the row when the chain
  refused the repayment), or it carries the partner on the row;
- `metadata.loan_id` names one of its loans (backend id or chain id);
- it was paid into one of its loans' dedicated virtual accounts;
- it quotes a payment reference issued for one of its loans.
Anything else (money nobody can place) is the operators' (caas:operations:*), platform-wide.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.logging import get_logger
from offchain.services.repayment.references import posting_id

log = get_logger(__name__)


def _routes(partner_id: uuid.UUID, kind: str) -> Any:
    return select(PaymentRoute.value).where(PaymentRoute.kind == kind, PaymentRoute.partner_id == partner_id)


def attributable_to(partner_id: uuid.UUID) -> ColumnElement[bool]:
    """SQL condition: this payment row can be placed with `partner_id` (see the module docstring)."""
    loans = select(Loan.id).where(Loan.partner_id == partner_id)
    metadata_loan = func.lower(Payment.provider_record["metadata"]["loan_id"].astext)
    accounts = _routes(partner_id, "virtual_account")
    return or_(
        Payment.partner_id == partner_id,
        Payment.loan_id.in_(loans),
        metadata_loan.in_(select(cast(Loan.id, Text)).where(Loan.partner_id == partner_id)),
        metadata_loan.in_(select(func.lower(Loan.chain_loan_id)).where(Loan.partner_id == partner_id)),
        Payment.provider_record["account_number"].astext.in_(accounts),
        Payment.provider_record["receiver_account"].astext.in_(accounts),
        Payment.provider_reference.in_(_routes(partner_id, "reference")),
    )


def visible_to_partner(partner_id: uuid.UUID) -> ColumnElement[bool]:
    """A partner's own payments, and the unmatched ones attributable to it."""
    return or_(
        Payment.partner_id == partner_id,
        (Payment.status == "unmatched") & attributable_to(partner_id),
    )


def suspense_posting(row: Payment, *, reason: str) -> accounts.Posting:
    """`to_suspense` for a batch: the row marked, the posting returned for `post_many`."""
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


async def to_suspense(session: AsyncSession, row: Payment, *, reason: str, posting_suffix: str = "") -> None:
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
