"""From a provider's notice to a verified IncomingPayment: the webhook says, the provider confirms.

Amount, currency and status come from the provider's verify answer, never from the notice:
a notice whose figures disagree with the provider's record is logged and the record wins. For
a Paystack charge the borrower's repayment is `requested_amount` bounded by `amount`, and
Paystack's fee is apart from it (domain.money_movement.paystack_charge_figures).

A provider that answers definitely -- "no such payment" or "not successful" -- ends the
notice as not confirmed (`NotConfirmed`): the caller records it for operators, it is not a
fault to retry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from offchain.domain import money_movement as mm
from offchain.platform.logging import get_logger
from offchain.rails.paystack import wire
from offchain.rails.paystack.client import PaystackClient, PaystackNotFound
from offchain.rails.sme.payments import SmePaymentNotFound, SmePaymentsClient

log = get_logger(__name__)


class NotConfirmed(Exception):
    """The provider answered, definitely, that there is no successful payment under this reference."""

    def __init__(self, message: str, *, reason: str, provider_status: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # "not_found" | "not_successful" | "unusable_reference"
        self.provider_status = provider_status


NotPaid = NotConfirmed  # the earlier name


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
    unusable = wire.reference_problem(reference)
    if unusable is not None:
        raise NotConfirmed(f"not verifiable: {unusable}", reason="unusable_reference")
    try:
        transaction = await paystack.verify_transaction(reference)
    except PaystackNotFound as missing:
        raise NotConfirmed(
            f"Paystack has no transaction {reference}: {missing.message}", reason="not_found"
        ) from None
    if not transaction.succeeded:
        raise NotConfirmed(
            f"Paystack says transaction {reference} is {transaction.status}",
            reason="not_successful",
            provider_status=transaction.status,
        )
    figures = mm.paystack_charge_figures(transaction.amount, transaction.requested_amount, transaction.fees)
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
        amount=figures.repayment,
        currency=transaction.currency,
        metadata_loan_id=transaction.loan_id,
        receiver_account=transaction.receiver_account_number,
        provider_fee=figures.provider_fee,
        payer_fee=figures.payer_fee,
    )
    if figures.payer_fee:
        log.info(
            "payment.payer_bore_fees",
            reference=reference,
            charged=figures.charged,
            repayment=figures.repayment,
            fees=figures.provider_fee,
        )
    record = {
        "id": transaction.id,
        "amount": transaction.amount,
        "requested_amount": transaction.requested_amount,
        "fees": transaction.fees,
        "repayment": figures.repayment,
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
    try:
        verified = await sme.verify(reference)
    except SmePaymentNotFound as missing:
        raise NotConfirmed(
            f"SME payments has no payment {reference}: {missing}", reason="not_found"
        ) from None
    if not verified.succeeded:
        raise NotConfirmed(
            f"SME payments says {reference} is {verified.status}",
            reason="not_successful",
            provider_status=verified.status,
        )
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
