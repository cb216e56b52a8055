"""Operators' view of payment notices the provider did not confirm (notices.py).

Operators only (`caas:operations:read` to look, `caas:operations:manage` to reverify): a notice
carries no payer identity and belongs to no partner.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from offchain.chain.client import chain_of
from offchain.platform import auth
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import Page
from offchain.services.repayment import notices, usecases
from offchain.services.repayment.schemas import PaymentNoticeOut

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


@router.get(
    "/payment-notices/{notice_id}",
    response_model=PaymentNoticeOut,
    responses=NOT_FOUND,
    summary="One payment notice the provider did not confirm",
)
async def get_payment_notice(
    notice_id: uuid.UUID, operator: OperatorRead, db: DatabaseDep
) -> PaymentNoticeOut:
    return PaymentNoticeOut(**await usecases.get_notice(db, notice_id))


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
    view = await usecases.reverify_notice(
        db,
        operator,
        notice_id,
        settings=request.app.state.settings,
        http=request.app.state.resources.http,
        chain=chain_of(request.app.state.resources),
    )
    return PaymentNoticeOut(**view)
