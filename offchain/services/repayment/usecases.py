"""What the payment routes do: suspense and matching by hand, chargebacks, payment references and
virtual accounts, in the caller's scope (a partner's own money and loans; any for operators).

Unmatched money belongs to no partner yet (suspense.py): a partner sees and matches only the
unmatched money attributable to it, and only to its own loans. Money held for a loan that is not
repayable yet (`held`) and money under review (`review`) belong to the loan's partner; money under
review is moved only to another loan of that same partner.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import ChainClient
from offchain.chain.contracts import Deployment
from offchain.persistence.models import Loan
from offchain.persistence.money import Payment, PaymentNotice
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.db import Database
from offchain.platform.problems import NOT_FOUND, Problem, not_found
from offchain.platform.settings import Settings
from offchain.rails.paystack.client import PaystackClient, PaystackError
from offchain.rails.sme.http import SmeRefused, SmeUnavailable
from offchain.rails.sme.payments import SmePaymentsClient
from offchain.services.repayment import early_money, intake, locks, matching, notices, receiving, references
from offchain.services.repayment.schemas import PaymentNoticeOut
from offchain.services.repayment.suspense import attributable_to, visible_to_partner


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


def deployment_of(settings: Settings, chain: ChainClient) -> Deployment:
    """The app's deployment (loaded once, offchain.chain.client); 503 when none is configured."""
    if not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    return chain.deployment


def _no_loan(loan_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        NOT_FOUND,
        title="Loan not found",
        detail=f"no loan {loan_id}",
        errors=[{"field": "loan_id", "reason": "unknown loan"}],
    )


async def _own_loan(db: Database, principal: Principal, loan_id: uuid.UUID) -> Loan:
    async with db.partner_session(principal.partner_id) as session:
        loan = await session.get(Loan, loan_id)
    if loan is None:
        raise _no_loan(loan_id)
    return loan


async def _loan_for(db: Database, actor: auth.Actor, loan_id: uuid.UUID) -> Loan:
    """A partner's own loan; any loan for an operator."""
    if not isinstance(actor, auth.Operator):
        return await _own_loan(db, actor, loan_id)
    async with db.worker_session() as session:
        loan = await session.get(Loan, loan_id)
    if loan is None:
        raise _no_loan(loan_id)
    return loan


async def list_payments(db: Database, actor: auth.Actor, status: str | None, limit: int) -> dict[str, Any]:
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


async def get_payment(db: Database, actor: auth.Actor, payment_id: uuid.UUID) -> dict[str, Any]:
    query = select(Payment).where(Payment.id == payment_id)
    if not isinstance(actor, auth.Operator):
        query = query.where(visible_to_partner(actor.partner_id))
    async with db.worker_session() as session:
        row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise not_found("payment", payment_id, detail=f"no payment {payment_id}")
    return payment_view(row)


async def match_payment(
    db: Database,
    actor: auth.Actor,
    payment_id: uuid.UUID,
    loan_id: uuid.UUID,
    *,
    settings: Settings,
    chain: ChainClient,
) -> dict[str, Any]:
    loan = await _loan_for(db, actor, loan_id)
    deployment = deployment_of(settings, chain)
    query = select(Payment).where(Payment.id == payment_id).with_for_update()
    if not isinstance(actor, auth.Operator):
        # another partner's money is not found, whatever its status
        query = query.where(visible_to_partner(actor.partner_id))
    async with db.worker_session() as session:
        target = await locks.lock_loan(session, loan.id)  # before the row: intake's order
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise not_found("payment", payment_id, detail=f"no payment {payment_id}")
        before = payment_view(row)
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
        elif row.status != "unmatched":
            raise Problem(
                409,
                "urn:caas:problem:payment-not-in-suspense",
                title="Payment not in suspense",
                detail=f"the payment is {row.status}",
                errors=[{"field": "payment_id", "reason": f"status is {row.status}"}],
            )
        else:
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


async def reverse_payment(
    db: Database,
    principal: Principal,
    payment_id: uuid.UUID,
    reason: str,
    *,
    settings: Settings,
    chain: ChainClient,
) -> dict[str, Any]:
    deployment = deployment_of(settings, chain)
    async with db.partner_session(principal.partner_id) as session:
        visible = await session.get(Payment, payment_id)
    if visible is None:
        raise not_found("payment", payment_id, detail=f"no payment {payment_id}")
    async with db.worker_session() as session:
        row = (
            await session.execute(select(Payment).where(Payment.id == payment_id).with_for_update())
        ).scalar_one()
        before = payment_view(row)
        try:
            await matching.request_reversal(session, row, reason=reason, deployment=deployment)
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
            reason=reason,
        )
        return payment_view(row)


async def issue_payment_reference(db: Database, principal: Principal, loan_id: uuid.UUID) -> dict[str, Any]:
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


async def virtual_account(
    db: Database,
    principal: Principal,
    loan_id: uuid.UUID,
    *,
    settings: Settings,
    http: httpx.AsyncClient,
) -> dict[str, Any]:
    loan = await _own_loan(db, principal, loan_id)
    async with db.worker_session() as session:
        await locks.lock_loan(session, loan.id)
        existing = await references.virtual_account_of(session, loan.id)
        if existing is not None:
            return existing
        try:
            paystack = PaystackClient.from_settings(settings.rails, http=http)
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


# --- payment notices the provider did not confirm (operators) ------------------------------------


async def _notice(session: AsyncSession, notice_id: uuid.UUID, *, lock: bool = False) -> PaymentNotice:
    query = select(PaymentNotice).where(PaymentNotice.id == notice_id)
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if row is None:
        raise Problem(
            404,
            NOT_FOUND,
            title="Notice not found",
            detail=f"no payment notice {notice_id}",
            errors=[{"field": "notice_id", "reason": "unknown notice"}],
        )
    return row


async def get_notice(db: Database, notice_id: uuid.UUID) -> dict[str, Any]:
    async with db.worker_session() as session:
        return notices.notice_view(await _notice(session, notice_id))


async def reverify_notice(
    db: Database,
    operator: auth.Operator,
    notice_id: uuid.UUID,
    *,
    settings: Settings,
    http: httpx.AsyncClient,
    chain: ChainClient,
) -> dict[str, Any]:
    """Ask the provider again; a payment it confirms now is taken in (status confirmed)."""
    deployment = deployment_of(settings, chain)
    async with db.worker_session() as session:
        row = await _notice(session, notice_id, lock=True)
        if row.status != "not_confirmed":
            raise Problem(
                409,
                "urn:caas:problem:notice-confirmed",
                title="Notice already confirmed",
                detail=f"payment {row.payment_id} was taken in",
                errors=[{"field": "notice_id", "reason": "status is confirmed"}],
            )
        before = PaymentNoticeOut(**notices.notice_view(row)).model_dump(mode="json")
        data = {**row.claimed, "reference": row.reference}
        try:
            if row.provider == "paystack":
                found = await intake.verified_paystack_charge(
                    PaystackClient.from_settings(settings.rails, http=http), data
                )
            else:
                found = await intake.verified_sme_payment(
                    SmePaymentsClient.from_settings(settings.rails, http=http), data
                )
        except intake.NotConfirmed as refusal:
            row.reason, row.detail, row.provider_status = (
                refusal.reason,
                str(refusal),
                refusal.provider_status,
            )
            return notices.notice_view(row)
        except (PaystackError, SmeUnavailable, SmeRefused) as error:
            raise Problem(
                503,
                "urn:caas:problem:dependency-unavailable",
                title="Payment provider unavailable",
                detail=str(error)[:300],
                headers={"Retry-After": "30"},
            ) from error
        payment, record, channel, paid_at = found
        (taken,) = await receiving.receive_many(
            session, [receiving.Verified(payment, record, channel, paid_at)], deployment=deployment
        )
        await notices.mark_confirmed(session, row, taken.payment_id)
        await record_action(
            session,
            actor=operator.actor,
            action="payment_notice.reverify",
            subject_type="payment_notice",
            subject_id=notice_id,
            partner_id=None,
            before=before,
            after={"status": row.status, "payment_id": str(taken.payment_id)},
        )
        return notices.notice_view(row)
