"""From a provider's notice to a verified IncomingPayment: the webhook says, the provider confirms.

Amount, currency and status come from the provider's verify answer, never from the notice:
a notice whose figures disagree with the provider's record is logged and the record wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from offchain.domain import money_movement as mm
from offchain.platform.logging import get_logger
from offchain.rails.paystack.client import PaystackClient
from offchain.rails.sme.payments import SmePaymentsClient

log = get_logger(__name__)


class NotPaid(Exception):
    """The provider does not confirm a successful payment under this reference."""


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def verified_paystack_charge(
    paystack: PaystackClient, data: dict[str, Any]
) -> tuple[mm.IncomingPayment, dict[str, Any], str | None, datetime | None]:
    reference = str(data.get("reference") or "")
    transaction = await paystack.verify_transaction(reference)
    if not transaction.succeeded:
        raise NotPaid(f"Paystack says transaction {reference} is {transaction.status}")
    if (data.get("amount"), data.get("currency")) != (transaction.amount, transaction.currency):
        log.warning(
            "payment.notice_differs",
            reference=reference,
            notice=(data.get("amount"), data.get("currency")),
            verified=(transaction.amount, transaction.currency),
        )
    payment = mm.IncomingPayment(
        provider=mm.PAYSTACK,
        reference=transaction.reference,
        amount=transaction.amount,
        currency=transaction.currency,
        metadata_loan_id=transaction.loan_id,
        receiver_account=transaction.receiver_account_number,
    )
    record = {
        "id": transaction.id,
        "amount": transaction.amount,
        "currency": transaction.currency,
        "status": transaction.status,
        "channel": transaction.channel,
        "paid_at": transaction.paid_at,
        "metadata": transaction.metadata,
        # which account it was paid into: what places unmatched money with a partner
        "receiver_account": transaction.receiver_account_number,
    }
    return payment, record, transaction.channel, _timestamp(transaction.paid_at)


async def verified_sme_payment(
    sme: SmePaymentsClient, data: dict[str, Any]
) -> tuple[mm.IncomingPayment, dict[str, Any], str | None, datetime | None]:
    reference = str(data.get("reference") or "")
    verified = await sme.verify(reference)
    if not verified.succeeded:
        raise NotPaid(f"SME payments says {reference} is {verified.status}")
    if (data.get("amount"), data.get("currency")) != (verified.amount, verified.currency):
        log.warning("payment.notice_differs", reference=reference, provider="sme")
    payment = mm.IncomingPayment(
        provider=mm.SME,
        reference=verified.reference,
        amount=verified.amount,
        currency=verified.currency,
        metadata_loan_id=verified.loan_id,
        receiver_account=verified.account_number,
    )
    return payment, verified.model_dump(), verified.method, _timestamp(verified.paid_at)
