"""The committee approval routes of the partner API: the typed data to sign, and the signatures."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.chain.client import chain_for_request, chain_unavailable_as_503
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.idempotency import run_idempotent
from offchain.platform.limits import limited
from offchain.platform.openapi_client import IdempotencyKey
from offchain.platform.partner_errors import (
    BAD_BODY,
    CHAIN_UNAVAILABLE,
    COMMON_ERRORS,
    LOAN_NOT_FOUND,
    PROBLEM,
)
from offchain.services.gateway.committee import approvals, schemas

router = APIRouter(prefix="/v1")

ApproveLoans = Annotated[Principal, Depends(limited(auth.APPLICATION_APPROVE, "write"))]
ReadApprovals = Annotated[Principal, Depends(limited(auth.LOAN_READ, "read"))]


@router.get(
    "/loans/{loan_id}/approval-request",
    response_model=schemas.ApprovalRequestOut,
    responses={
        **LOAN_NOT_FOUND,
        409: {
            "description": "the loan is not awaiting approval (`state` says where it is), or its "
            "approve_with_signatures is being mined (`tx_intent`, `tx_status`)",
            **PROBLEM,
        },
        **CHAIN_UNAVAILABLE,
        **COMMON_ERRORS,
    },
    summary="The EIP-712 typed data committee signers sign (as eth_account / wallets sign it)",
    description=(
        "`typed_data` binds every economic term of the loan as LoanBook stores it, the committee "
        "epoch and the loan's fixed approval deadline (accepted at + 7 days; the same for every "
        "signer, also given as `deadline`). Sign it with eth_signTypedData_v4 or eth_account and "
        "POST the signature to /approvals."
    ),
)
async def approval_request(
    request: Request, loan_id: uuid.UUID, principal: ReadApprovals, db: DatabaseDep
) -> schemas.ApprovalRequestOut:
    deployment, rpc = chain_for_request(request)
    async with db.partner_session(principal.partner_id) as session:
        with chain_unavailable_as_503():
            return await approvals.approval_request(
                session=session, rpc=rpc, deployment=deployment, loan_id=loan_id
            )


@router.post(
    "/loans/{loan_id}/approvals",
    response_model=schemas.ApprovalOut,
    responses={
        **BAD_BODY,
        **LOAN_NOT_FOUND,
        409: {
            "description": "the loan is not awaiting approval (`state`), its approve_with_signatures "
            "is being mined (`tx_intent`, `tx_status`), or an Idempotency-Key conflict",
            **PROBLEM,
        },
        **CHAIN_UNAVAILABLE,
        **COMMON_ERRORS,
    },
    summary="Add a signer's EIP-712 approval; at the threshold one approve_with_signatures is sent",
    description=(
        "Signature forms accepted: 65 bytes (r, s, v) with v 27/28 as eth_signTypedData_v4 gives "
        "it, v 0/1 (y parity) or 35/36, and EIP-2098 compact 64 bytes; s must be low. Anything "
        "else, a signer outside the current committee epoch, a wrong deadline or a signature that "
        "does not recover to `signer` is a 422 naming the field. Posts for one loan are serialized: "
        "the one reaching the requirement simulates approve_with_signatures (eth_call) and submits "
        "it once; a kept signature that would make it revert is dropped and listed in `dropped`. "
        "A submission that fails leaves the loan approvable (the next is a new attempt); posting "
        "an already kept signature again re-checks the threshold."
    ),
)
async def add_approval(
    request: Request,
    loan_id: uuid.UUID,
    body: schemas.ApprovalIn,
    principal: ApproveLoans,
    db: DatabaseDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    deployment, rpc = chain_for_request(request)

    async def handle() -> tuple[int, Any]:
        async with db.partner_session(principal.partner_id) as session:
            with chain_unavailable_as_503():
                result = await approvals.add_approval(
                    session=session,
                    rpc=rpc,
                    deployment=deployment,
                    partner_id=principal.partner_id,
                    loan_id=loan_id,
                    body=body,
                )
            await record_action(
                session,
                actor=principal.subject,
                action="loan.approval",
                subject_type="loan",
                subject_id=loan_id,
                partner_id=principal.partner_id,
                after=result,
                signer=body.signer,
            )
        return 200, result

    return await run_idempotent(request, db=db, partner_id=principal.partner_id, handler=handle)
