"""The rail's fee on a charge, posted when the payment is taken in.

Paystack keeps its fee out of what it settles whatever becomes of the money (applied to a loan,
kept as the borrower's credit, put in suspense, refused by the chain), so the fee posting is
independent of the payment's own (held) posting and never reversed with it.
"""

from __future__ import annotations

from offchain.domain import money_movement as mm
from offchain.domain.ledger import Posting
from offchain.persistence.money import Payment


def fee_posting_id(payment_ref: str) -> str:
    return f"rail-fee:{payment_ref}"


def fee_posting(row: Payment) -> Posting | None:
    return mm.rail_fee_posting(
        posting_id=fee_posting_id(row.payment_ref),
        rail=row.provider,
        provider_fee=int(row.provider_fee or 0),
        payer_fee=int(row.payer_fee or 0),
        currency=row.currency,
        reference=row.provider_reference,
    )
