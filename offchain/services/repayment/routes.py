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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from offchain.chain.client import chain_of
from offchain.platform import auth
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import Page
from offchain.services.repayment import usecases
from offchain.services.repayment.schemas import (
    MatchIn,
    PaymentOut,
    PaymentReferenceOut,
    ReverseIn,
    VirtualAccountOut,
)

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
    return await usecases.list_payments(db, actor, status, limit)


@router.get(
    "/payments/{payment_id}",
    response_model=PaymentOut,
    responses={404: {"description": "unknown payment", **PROBLEM}},
    summary="One payment",
)
async def get_payment(payment_id: uuid.UUID, actor: PaymentReader, db: DatabaseDep) -> dict[str, Any]:
    return await usecases.get_payment(db, actor, payment_id)


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
    return await usecases.match_payment(
        db,
        actor,
        payment_id,
        body.loan_id,
        settings=request.app.state.settings,
        chain=chain_of(request.app.state.resources),
    )


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
    return await usecases.reverse_payment(
        db,
        principal,
        payment_id,
        body.reason,
        settings=request.app.state.settings,
        chain=chain_of(request.app.state.resources),
    )


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
    return await usecases.issue_payment_reference(db, principal, loan_id)


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
    return await usecases.virtual_account(
        db,
        principal,
        loan_id,
        settings=request.app.state.settings,
        http=request.app.state.resources.http,
    )
