"""Payment routes: suspense (unmatched money) and matching it by hand, chargebacks, payment references.

Unmatched money belongs to no partner yet (offchain.services.repayment.suspense): a partner
(`credit:collection:manage`) sees and matches only the unmatched money attributable to it, and
only to its own loans; operators (`caas:operations:*`) see all of it and match it to any loan.
Money held for a loan that is not repayable yet (`held`) and money under review (`review`: its
loan is closed) belong to the loan's partner: listed with `?status=held|review`, and money under
review is moved (by its partner, or an operator) only to another loan of that same partner.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from offchain.chain.contracts import Deployment
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import MoneyOut, Page
from offchain.platform.problems import Problem
from offchain.rails.paystack.client import PaystackClient, PaystackError
from offchain.services.repayment import early_money, locks, matching, references
from offchain.services.repayment.suspense import attributable_to, visible_to_partner

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
router = APIRouter(
    prefix="/v1",
    tags=["payments"],
    responses={
        400: {"description": "the body could not be decoded", **_PROBLEM},
        401: {"description": "missing or invalid bearer token", **_PROBLEM},
        403: {"description": "the token lacks the permission this call needs", **_PROBLEM},
        422: {"description": "a field failed validation (errors: [{field, reason}])", **_PROBLEM},
        503: {"description": "a dependency (database, chain, rail) is unavailable", **_PROBLEM},
    },
)
Collector = Annotated[Principal, Depends(auth.require(auth.COLLECTION_MANAGE))]
PaymentReader = Annotated[
    auth.Actor, Depends(auth.partner_or_operator(auth.COLLECTION_MANAGE, auth.OPERATIONS_READ))
]
PaymentMatcher = Annotated[
    auth.Actor, Depends(auth.partner_or_operator(auth.COLLECTION_MANAGE, auth.OPERATIONS_MANAGE))
]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND = "urn:caas:problem:not-found"


class MatchIn(BaseModel):
    loan_id: uuid.UUID


class ReverseIn(BaseModel):
    reason: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")


class PaymentOut(BaseModel):
    """Money a borrower paid, as its provider confirmed it, and where it went."""

    id: uuid.UUID
    provider: str
    reference: str
    payment_ref: str = Field(description='keccak256("<provider>:<reference>"), as LoanBook records it')
    status: str = Field(
        description="received | unmatched | pending_chain | recorded | credited | reversal_pending | reversed"
    )
    loan_id: uuid.UUID | None = None
    match_method: str | None = None
    amount: MoneyOut = Field(description="the borrower's repayment (Paystack's fee apart: provider_fee)")
    applied: MoneyOut
    excess: MoneyOut
    provider_fee: MoneyOut = Field(description="the provider's fee on the charge, kept out of its settlement")
    payer_fee: MoneyOut = Field(description="what the payer paid on top of the repayment (fees passed on)")
    detail: str | None = None
    paid_at: datetime | None = None
    recorded_tx: str | None = None
    created_at: datetime | None = None


class PaymentReferenceOut(BaseModel):
    loan_id: uuid.UUID
    reference: str = Field(description="quote it with a payment: money paid under it finds this loan")


class VirtualAccountOut(BaseModel):
    """The loan's dedicated virtual account (a NUBAN at the bank named)."""

    loan_id: uuid.UUID
    account_number: str
    bank: str | None = None
    account_name: str | None = None
    currency: str | None = None


def payment_view(row: Payment) -> dict[str, Any]:
    money = lambda value: {"value": value, "currency": row.currency}  # noqa: E731
    return {
        "id": str(row.id),
        "provider": row.provider,
        "reference": row.provider_reference,
        "payment_ref": row.payment_ref,
        "status": row.status,
        "loan_id": str(row.loan_id) if row.loan_id else None,
        "match_method": row.match_method,
        "amount": money(row.amount),
        "applied": money(row.applied),
        "excess": money(row.excess),
        "provider_fee": money(row.provider_fee or 0),
        "payer_fee": money(row.payer_fee or 0),
        "detail": row.detail,
        "paid_at": row.paid_at.isoformat() if row.paid_at else None,
        "recorded_tx": row.recorded_tx,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def _deployment(request: Request) -> Deployment:
    path = request.app.state.settings.chain.deployment_file
    if not path:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    return Deployment.load(path)


def _no_loan(loan_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        NOT_FOUND,
        title="Loan not found",
        detail=f"no loan {loan_id}",
        errors=[{"field": "loan_id", "reason": "unknown loan"}],
    )


async def _own_loan(db: Any, principal: Principal, loan_id: uuid.UUID) -> Loan:
    async with db.partner_session(principal.partner_id) as session:
        loan = await session.get(Loan, loan_id)
    if loan is None:
        raise _no_loan(loan_id)
    return loan


async def _loan_for(db: Any, actor: auth.Actor, loan_id: uuid.UUID) -> Loan:
    """A partner's own loan; any loan for an operator."""
    if not isinstance(actor, auth.Operator):
        return await _own_loan(db, actor, loan_id)
    async with db.worker_session() as session:
        loan = await session.get(Loan, loan_id)
    if loan is None:
        raise _no_loan(loan_id)
    return loan


@router.get(
    "/payments",
    response_model=Page[PaymentOut],
    summary="Payments: the partner's own (?status=held: early money, ?status=review), or its unmatched "
    "ones (?status=unmatched); every one for operators",
)
async def list_payments(
    actor: PaymentReader,
    db: DatabaseDep,
    status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    query = select(Payment).order_by(Payment.created_at.desc()).limit(limit)
    if status:
        query = query.where(Payment.status == status)
    if isinstance(actor, auth.Operator):
        async with db.worker_session() as session:
            return {"data": [payment_view(r) for r in (await session.execute(query)).scalars()]}
    if status == "unmatched":
        # no partner on these rows yet: the attribution rule scopes them, not row-level security
        async with db.worker_session() as session:
            rows = (await session.execute(query.where(attributable_to(actor.partner_id)))).scalars()
            return {"data": [payment_view(r) for r in rows]}
    async with db.partner_session(actor.partner_id) as session:
        return {"data": [payment_view(r) for r in (await session.execute(query)).scalars()]}


@router.get(
    "/payments/{payment_id}",
    response_model=PaymentOut,
    responses={404: {"description": "unknown payment", **PROBLEM}},
    summary="One payment",
)
async def get_payment(payment_id: uuid.UUID, actor: PaymentReader, db: DatabaseDep) -> dict[str, Any]:
    query = select(Payment).where(Payment.id == payment_id)
    if not isinstance(actor, auth.Operator):
        query = query.where(visible_to_partner(actor.partner_id))
    async with db.worker_session() as session:
        row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise Problem(404, NOT_FOUND, title="Payment not found", detail=f"no payment {payment_id}")
    return payment_view(row)


@router.post(
    "/payments/{payment_id}/match",
    response_model=PaymentOut,
    responses={
        404: {"description": "unknown payment or loan", **PROBLEM},
        409: {
            "description": "the payment is not in suspense or review, or the loan cannot take it",
            **PROBLEM,
        },
    },
    summary="Match money in suspense (or under review) to a loan: a partner its own money to its own "
    "loans, an operator any",
)
async def match_payment(
    payment_id: uuid.UUID, body: MatchIn, actor: PaymentMatcher, db: DatabaseDep, request: Request
) -> dict[str, Any]:
    loan = await _loan_for(db, actor, body.loan_id)
    deployment = _deployment(request)
    query = select(Payment).where(Payment.id == payment_id).with_for_update()
    if not isinstance(actor, auth.Operator):
        # another partner's money is not found, whatever its status
        query = query.where(visible_to_partner(actor.partner_id))
    async with db.worker_session() as session:
        target = await locks.lock_loan(session, loan.id)  # before the row: intake's order
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise Problem(404, NOT_FOUND, title="Payment not found", detail=f"no payment {payment_id}")
        if row.status == "review" and target is not None:
            if row.partner_id is not None and row.partner_id != loan.partner_id:
                # review money was paid for one of that partner's loans: it stays that partner's
                raise Problem(
                    409,
                    "urn:caas:problem:loan-cannot-take-payment",
                    title="Loan cannot take the payment",
                    detail="money under review moves only to another loan of the same partner",
                    errors=[{"field": "loan_id", "reason": "a loan of another partner"}],
                )
            before = payment_view(row)
            try:
                await early_money.match_reviewed(session, row, target, deployment=deployment)
            except ValueError as refusal:
                raise Problem(
                    409,
                    "urn:caas:problem:loan-cannot-take-payment",
                    title="Loan cannot take the payment",
                    detail=str(refusal),
                    errors=[{"field": "loan_id", "reason": str(refusal)}],
                ) from refusal
            await record_action(
                session,
                actor=auth.actor_name(actor),
                action="payment.match",
                subject_type="payment",
                subject_id=payment_id,
                partner_id=loan.partner_id,
                before=before,
                after=payment_view(row),
            )
            return payment_view(row)
        if row.status != "unmatched":
            raise Problem(
                409,
                "urn:caas:problem:payment-not-in-suspense",
                title="Payment not in suspense",
                detail=f"the payment is {row.status}",
                errors=[{"field": "payment_id", "reason": f"status is {row.status}"}],
            )
        before = payment_view(row)
        await matching.match_by_hand(session, row, loan_id=loan.id, deployment=deployment)
        await record_action(
            session,
            actor=auth.actor_name(actor),
            action="payment.match",
            subject_type="payment",
            subject_id=payment_id,
            partner_id=loan.partner_id,
            before=before,
            after=payment_view(row),
        )
        return payment_view(row)


@router.post(
    "/payments/{payment_id}/reverse",
    response_model=PaymentOut,
    status_code=202,
    responses={
        404: {"description": "unknown payment", **PROBLEM},
        409: {"description": "the payment is not recorded on chain", **PROBLEM},
    },
    summary="A chargeback: reverse a recorded payment on chain, then in the ledger",
)
async def reverse_payment(
    payment_id: uuid.UUID, body: ReverseIn, principal: Collector, db: DatabaseDep, request: Request
) -> dict[str, Any]:
    deployment = _deployment(request)
    async with db.partner_session(principal.partner_id) as session:
        visible = await session.get(Payment, payment_id)
    if visible is None:
        raise Problem(404, NOT_FOUND, title="Payment not found", detail=f"no payment {payment_id}")
    async with db.worker_session() as session:
        row = (
            await session.execute(select(Payment).where(Payment.id == payment_id).with_for_update())
        ).scalar_one()
        before = payment_view(row)
        try:
            await matching.request_reversal(session, row, reason=body.reason, deployment=deployment)
        except ValueError as refusal:
            raise Problem(
                409,
                "urn:caas:problem:payment-not-reversible",
                title="Payment not reversible",
                detail=str(refusal),
                errors=[{"field": "payment_id", "reason": str(refusal)}],
            ) from refusal
        await record_action(
            session,
            actor=principal.subject,
            action="payment.reverse",
            subject_type="payment",
            subject_id=payment_id,
            partner_id=principal.partner_id,
            before=before,
            after=payment_view(row),
            reason=body.reason,
        )
        return payment_view(row)


@router.post(
    "/loans/{loan_id}/payment-references",
    response_model=PaymentReferenceOut,
    status_code=201,
    responses={404: {"description": "unknown loan", **PROBLEM}},
    summary="Issue a payment reference for the borrower to quote",
)
async def issue_payment_reference(
    loan_id: uuid.UUID, principal: Collector, db: DatabaseDep
) -> dict[str, Any]:
    loan = await _own_loan(db, principal, loan_id)
    async with db.worker_session() as session:
        await locks.lock_loan(session, loan.id)
        reference = await references.issue_reference(session, loan)
        await record_action(
            session,
            actor=principal.subject,
            action="payment_reference.issue",
            subject_type="loan",
            subject_id=loan_id,
            partner_id=principal.partner_id,
            after={"reference": reference},
        )
    return {"loan_id": str(loan_id), "reference": reference}


@router.post(
    "/loans/{loan_id}/virtual-account",
    response_model=VirtualAccountOut,
    status_code=201,
    responses={
        404: {"description": "unknown loan", **PROBLEM},
        503: {"description": "the payment provider is unavailable", **PROBLEM},
    },
    summary="The loan's dedicated virtual account: money paid into it finds this loan (created once)",
)
async def virtual_account(
    loan_id: uuid.UUID, principal: Collector, db: DatabaseDep, request: Request
) -> dict[str, Any]:
    loan = await _own_loan(db, principal, loan_id)
    settings = request.app.state.settings
    async with db.worker_session() as session:
        await locks.lock_loan(session, loan.id)
        existing = await references.virtual_account_of(session, loan.id)
        if existing is not None:
            return existing
        try:
            paystack = PaystackClient.from_settings(settings.rails, http=request.app.state.resources.http)
            account = await references.open_virtual_account(session, loan, paystack=paystack)
            await record_action(
                session,
                actor=principal.subject,
                action="virtual_account.open",
                subject_type="loan",
                subject_id=loan_id,
                partner_id=principal.partner_id,
                after=account,
            )
        except PaystackError as error:
            raise Problem(
                503,
                "urn:caas:problem:dependency-unavailable",
                title="Payment provider unavailable",
                detail=f"Paystack: {error.message}",
            ) from error
        return account
