"""Payout routes: a loan's payout as the rail and the ledger see it (its partner, or an operator),
and what only operators do: release a payout held by transaction monitoring, retry an abandoned
one, finalize a transfer with its OTP, read the monitoring flags."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from offchain.chain.client import chain_of
from offchain.platform import auth
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import Page
from offchain.services.disbursement import usecases
from offchain.services.disbursement.schemas import MonitoringFlagOut, OtpIn, PayoutOut

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
router = APIRouter(
    prefix="/v1",
    tags=["payouts"],
    responses={
        400: {"description": "the body could not be decoded", **_PROBLEM},
        401: {"description": "missing or invalid bearer token", **_PROBLEM},
        403: {"description": "the token lacks the permission this call needs", **_PROBLEM},
        422: {"description": "a field failed validation (errors: [{field, reason}])", **_PROBLEM},
        503: {"description": "a dependency (database, chain, rail) is unavailable", **_PROBLEM},
    },
)
PayoutReader = Annotated[
    auth.Actor, Depends(auth.partner_or_operator(auth.DISBURSEMENT_EXECUTE, auth.OPERATIONS_READ))
]
OperatorManage = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
OperatorRead = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_READ))]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.get(
    "/payouts/{loan_id}",
    response_model=PayoutOut,
    responses={404: {"description": "no payout for this loan (yet)", **PROBLEM}},
    summary="A loan's payout: status, attempts, rail reference, chain record",
)
async def get_payout(loan_id: uuid.UUID, actor: PayoutReader, db: DatabaseDep) -> dict[str, Any]:
    return await usecases.get_payout(db, actor, loan_id)


@router.post(
    "/payouts/{loan_id}/retry",
    response_model=PayoutOut,
    responses={
        404: {"description": "no payout for this loan", **PROBLEM},
        409: {"description": "the payout is not abandoned: nothing to retry", **PROBLEM},
    },
    summary="Send an abandoned payout again (same reference; a fresh set of attempts)",
)
async def retry_payout(loan_id: uuid.UUID, operator: OperatorManage, db: DatabaseDep) -> dict[str, Any]:
    return await usecases.retry_payout(db, operator, loan_id)


@router.post(
    "/payouts/{loan_id}/release",
    response_model=PayoutOut,
    responses={
        404: {"description": "no payout for this loan", **PROBLEM},
        409: {"description": "the payout is not held for review", **PROBLEM},
    },
    summary="Release a payout held by transaction monitoring (its flags are cleared by the caller)",
)
async def release_payout(loan_id: uuid.UUID, operator: OperatorManage, db: DatabaseDep) -> dict[str, Any]:
    return await usecases.release_payout(db, operator, loan_id)


@router.get(
    "/monitoring/flags",
    response_model=Page[MonitoringFlagOut],
    summary="Transaction-monitoring flags on payouts and payments (operators)",
)
async def list_flags(
    operator: OperatorRead,
    db: DatabaseDep,
    status: Annotated[str, Query(pattern="^(open|cleared)$")] = "open",
) -> dict[str, Any]:
    return await usecases.flags(db, status)


@router.post(
    "/payouts/{loan_id}/finalize",
    response_model=PayoutOut,
    responses={
        404: {"description": "no payout for this loan", **PROBLEM},
        409: {"description": "the transfer is not waiting for an OTP", **PROBLEM},
        422: {"description": "the OTP was refused", **PROBLEM},
    },
    summary="Finalize a transfer waiting for the OTP Paystack sent to the business (OTP integrations)",
)
async def finalize_payout(
    loan_id: uuid.UUID, body: OtpIn, operator: OperatorManage, db: DatabaseDep, request: Request
) -> dict[str, Any]:
    return await usecases.finalize_payout(
        db,
        operator,
        loan_id,
        body.otp,
        settings=request.app.state.settings,
        http=request.app.state.resources.http,
        chain=chain_of(request.app.state.resources),
    )
