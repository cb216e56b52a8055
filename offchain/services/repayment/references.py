"""Names of a payment (its posting, its chain intents) and the routes money finds a loan by:
the payment references issued to borrowers and the loans' dedicated virtual accounts.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import money_movement as mm
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.logging import get_logger
from offchain.rails.paystack.client import PaystackClient

log = get_logger(__name__)


def posting_id(payment_ref: str) -> str:
    return f"payment:{payment_ref}"


def record_intent_key(payment_ref: str) -> str:
    return f"repay:{payment_ref}"


def reverse_intent_key(payment_ref: str) -> str:
    return f"reverse:{payment_ref}"


def hex_ref(value: bytes) -> str:
    return "0x" + value.hex()


def held_posting(row: Payment) -> str:
    if row.applied_posting:  # held money, applied from the loan's held account
        return row.applied_posting
    return posting_id(row.payment_ref) + (
        ":matched" if row.match_method == mm.MatchMethod.MANUAL.value else ""
    )


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
