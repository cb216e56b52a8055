"""Operators' view of payment notices the provider did not confirm (notices.py).

Operators only (`caas:operations:read` to look, `caas:operations:manage` to reverify): a notice
carries no payer identity and belongs to no partner.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from offchain.chain.contracts import Deployment
from offchain.persistence.money import PaymentNotice
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import Page
from offchain.platform.problems import Problem
from offchain.rails.paystack.client import PaystackClient, PaystackError
from offchain.rails.sme.http import SmeRefused, SmeUnavailable
from offchain.rails.sme.payments import SmePaymentsClient
from offchain.services.repayment import intake, notices, receiving

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
router = APIRouter(
    prefix="/v1",
    tags=["payments"],
    responses={
        401: {"description": "missing or invalid bearer token", **_PROBLEM},
        403: {"description": "the token lacks the permission this call needs", **_PROBLEM},
        422: {"description": "a field failed validation (errors: [{field, reason}])", **_PROBLEM},
    },
)
OperatorRead = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_READ))]
OperatorManage = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such notice", **_PROBLEM}}


class PaymentNoticeOut(BaseModel):
    """A notice ("charge X succeeded") the provider's own verify did not confirm."""

    id: uuid.UUID
    provider: str
    reference: str
    topic: str
    status: Literal["not_confirmed", "confirmed"]
    reason: Literal["not_found", "not_successful", "unusable_reference"]
    provider_status: str | None = None
    detail: str | None = None
    claimed: dict[str, Any]
    notices: int
    payment_id: uuid.UUID | None = None
    first_seen_at: datetime
    last_seen_at: datetime


@router.get(
    "/payment-notices",
    response_model=Page[PaymentNoticeOut],
    summary="Payment notices the provider did not confirm (operators), newest first",
)
async def list_payment_notices(
    operator: OperatorRead,
    db: DatabaseDep,
    status: Literal["not_confirmed", "confirmed"] | None = "not_confirmed",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[PaymentNoticeOut]:
    async with db.worker_session() as session:
        rows = await notices.list_notices(session, status=status, limit=limit)
        return Page[PaymentNoticeOut](data=[PaymentNoticeOut(**notices.notice_view(r)) for r in rows])


async def _notice(session: Any, notice_id: uuid.UUID, *, lock: bool = False) -> PaymentNotice:
    query = select(PaymentNotice).where(PaymentNotice.id == notice_id)
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if row is None:
        raise Problem(
            404,
            "urn:caas:problem:not-found",
            title="Notice not found",
            detail=f"no payment notice {notice_id}",
            errors=[{"field": "notice_id", "reason": "unknown notice"}],
        )
    return row


@router.get(
    "/payment-notices/{notice_id}",
    response_model=PaymentNoticeOut,
    responses=NOT_FOUND,
    summary="One payment notice the provider did not confirm",
)
async def get_payment_notice(
    notice_id: uuid.UUID, operator: OperatorRead, db: DatabaseDep
) -> PaymentNoticeOut:
    async with db.worker_session() as session:
        return PaymentNoticeOut(**notices.notice_view(await _notice(session, notice_id)))


@router.post(
    "/payment-notices/{notice_id}/reverify",
    response_model=PaymentNoticeOut,
    responses={
        **NOT_FOUND,
        409: {"description": "the notice was confirmed already", **_PROBLEM},
        503: {"description": "the provider (or the chain) is unavailable", **_PROBLEM},
    },
    summary="Ask the provider again; a payment it confirms now is taken in (status confirmed)",
)
async def reverify_payment_notice(
    notice_id: uuid.UUID, operator: OperatorManage, db: DatabaseDep, request: Request
) -> PaymentNoticeOut:
    settings = request.app.state.settings
    if not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    deployment = Deployment.load(settings.chain.deployment_file)
    http = request.app.state.resources.http
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
            return PaymentNoticeOut(**notices.notice_view(row))
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
        return PaymentNoticeOut(**notices.notice_view(row))
