"""Partner REST API routes (DESIGN §4): authenticate, rate-limit, then call a use case."""

# No `from __future__ import annotations`: FastAPI must see the closures in the dependencies.

import contextlib
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import aiohttp
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import chain_of
from offchain.chain.jsonrpc import RpcError
from offchain.persistence.models import AuditLogEntry, Loan
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep, SettingsDep
from offchain.platform.idempotency import run_idempotent
from offchain.platform.inputs import Cursor
from offchain.platform.openapi_client import IdempotencyKey
from offchain.platform.problems import Problem
from offchain.services.gateway import approvals, schemas, usecases
from offchain.services.gateway.audit import audit_report
from offchain.services.gateway.pagination import MAX_LIMIT

router = APIRouter(prefix="/v1")

PROBLEM = {"content": {"application/problem+json": {}}}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks the permission this call needs", **PROBLEM},
    # its shape (ValidationProblem) comes with every error's from offchain.platform.openapi
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
    429: {"description": "rate limit exceeded (see RateLimit-* and Retry-After)", **PROBLEM},
}
# Answers beyond COMMON_ERRORS, declared on the operations that give them.
BAD_BODY = {400: {"description": "the body is not JSON (or not UTF-8), or a bad Idempotency-Key", **PROBLEM}}
BAD_CURSOR = {400: {"description": "a cursor this API did not issue", **PROBLEM}}
LOAN_NOT_FOUND = {404: {"description": "no such loan for this partner", **PROBLEM}}
CHAIN_UNAVAILABLE = {503: {"description": "the chain (node or deployment) is not reachable", **PROBLEM}}


def limited(permission: str, route_class: str):
    """Dependency: the partner principal holding `permission`, counted against its partner's
    quota in `route_class` (auth.require, which every partner route goes through)."""
    return auth.require(permission, route_class=route_class)


CreateApplication = Annotated[Principal, Depends(limited(auth.APPLICATION_CREATE, "write"))]
ReadApplications = Annotated[Principal, Depends(limited(auth.APPLICATION_READ, "read"))]
ReadLoans = Annotated[Principal, Depends(limited(auth.LOAN_READ, "read"))]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


# The busiest partner route, first: routes are matched one by one in the order they are declared.
@router.get("/loans/{loan_id}", response_model=schemas.LoanOut, responses={**LOAN_NOT_FOUND, **COMMON_ERRORS})
async def get_loan(loan_id: uuid.UUID, principal: ReadLoans, db: DatabaseDep) -> Response:
    view = await usecases.read_loan(db, partner_id=principal.partner_id, loan_id=loan_id)
    # serialized once, by the model that built it (FastAPI would validate it a second time)
    return Response(view.model_dump_json(), media_type="application/json")


@router.post(
    "/applications",
    status_code=201,
    response_model=schemas.ApplicationOut,
    responses={
        **BAD_BODY,
        409: {"description": "external_id already used, or Idempotency-Key conflict", **PROBLEM},
        **COMMON_ERRORS,
    },
    summary="Submit a credit application (Idempotency-Key supported)",
)
async def submit_application(
    request: Request,
    body: schemas.ApplicationIn,
    principal: CreateApplication,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def handle(session: AsyncSession) -> tuple[int, Any]:
        view = await usecases.submit_application(
            session=session,
            principal=principal,
            body=body,
            ref_secret=settings.auth.ref_secret.get_secret_value(),
        )
        return 201, view.model_dump(mode="json")

    return await run_idempotent(request, db=db, partner_id=principal.partner_id, in_transaction=handle)


@router.get(
    "/applications/{application_id}",
    response_model=schemas.ApplicationOut,
    responses={404: {"description": "no such application for this partner", **PROBLEM}, **COMMON_ERRORS},
)
async def get_application(
    application_id: uuid.UUID, principal: ReadApplications, db: DatabaseDep
) -> schemas.ApplicationOut:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.get_application(session=session, application_id=application_id)


@router.get(
    "/applications",
    response_model=schemas.Page[schemas.ApplicationOut],
    responses={**BAD_CURSOR, **COMMON_ERRORS},
)
async def list_applications(
    principal: ReadApplications,
    db: DatabaseDep,
    limit: Limit = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
    status: schemas.ApplicationStatus | None = None,
) -> schemas.Page:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.list_applications(session=session, limit=limit, cursor=cursor, status=status)


@router.get("/loans", response_model=schemas.Page[schemas.LoanOut], responses={**BAD_CURSOR, **COMMON_ERRORS})
async def list_loans(
    principal: ReadLoans,
    db: DatabaseDep,
    limit: Limit = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
    status: schemas.LoanStatus | None = None,
) -> schemas.Page:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.list_loans(session=session, limit=limit, cursor=cursor, status=status)


@router.get(
    "/loans/{loan_id}/schedule",
    response_model=list[schemas.ScheduleItem],
    responses={**LOAN_NOT_FOUND, **COMMON_ERRORS},
)
async def get_loan_schedule(
    loan_id: uuid.UUID, principal: ReadLoans, db: DatabaseDep
) -> list[schemas.ScheduleItem]:
    async with db.partner_session(principal.partner_id) as session:
        return (await usecases.get_loan(session=session, loan_id=loan_id, with_transactions=False)).schedule


@router.get(
    "/loans/{loan_id}/repayments",
    response_model=list[schemas.LoanTransaction],
    responses={**LOAN_NOT_FOUND, **COMMON_ERRORS},
)
async def get_loan_repayments(
    loan_id: uuid.UUID, principal: ReadLoans, db: DatabaseDep
) -> list[schemas.LoanTransaction]:
    async with db.partner_session(principal.partner_id) as session:
        loan = await usecases.get_loan(session=session, loan_id=loan_id)
    return [t for t in loan.transactions if t.event in ("RepaymentRecorded", "RepaymentReversed")]


AuditLoans = Annotated[Principal, Depends(limited(auth.AUDIT_READ, "read"))]


@router.get(
    "/audit/loans/{loan_id}",
    response_model=schemas.AuditReportOut,
    responses={**LOAN_NOT_FOUND, **CHAIN_UNAVAILABLE, **COMMON_ERRORS},
    summary="On-chain state beside the backend's copy, with every mismatch and the event chain recomputed",
)
async def audit_loan(
    loan_id: uuid.UUID, principal: AuditLoans, db: DatabaseDep, settings: SettingsDep, request: Request
) -> dict:
    async with db.partner_session(principal.partner_id) as session:
        loan = await session.get(Loan, loan_id)
        if loan is None:
            raise usecases.not_found("loan", loan_id)
    with chain_unavailable_as_503():
        return await audit_report(settings, loan, chain_of(request.app.state.resources))


AuditLog = Annotated[auth.Actor, Depends(auth.partner_or_operator(auth.AUDIT_READ, auth.OPERATIONS_READ))]


@router.get(
    "/audit/log",
    response_model=schemas.Page[schemas.AuditLogEntryOut],
    responses={**COMMON_ERRORS},
    summary="Privileged actions, newest first (a partner's own; every partner's for an operator)",
)
async def audit_log(
    actor: AuditLog,
    db: DatabaseDep,
    subject_type: Annotated[str | None, Query(pattern=r"^[a-z_]{1,100}$")] = None,
    subject_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9:_.-]{1,200}$")] = None,
    partner_id: Annotated[uuid.UUID | None, Query(description="operators: one partner's entries")] = None,
    limit: Limit = 50,
) -> dict:
    query = select(AuditLogEntry).order_by(AuditLogEntry.id.desc()).limit(limit)
    if subject_type:
        query = query.where(AuditLogEntry.subject_type == subject_type)
    if subject_id:
        query = query.where(AuditLogEntry.subject_id == subject_id)
    if isinstance(actor, auth.Operator):
        # platform-wide: the operator's own actions and every partner's
        if partner_id is not None:
            query = query.where(AuditLogEntry.partner_id == partner_id)
        async with db.worker_session() as session:
            rows = (await session.execute(query)).scalars().all()
    else:
        # the partner's own entries only (row-level security; platform entries are not theirs)
        async with db.partner_session(actor.partner_id) as session:
            rows = (
                (await session.execute(query.where(AuditLogEntry.partner_id == actor.partner_id)))
                .scalars()
                .all()
            )
    return {
        "data": [
            {
                "id": row.id,
                "occurred_at": row.occurred_at.isoformat(),
                "actor": row.actor,
                "action": row.action,
                "partner_id": str(row.partner_id) if row.partner_id else None,
                "subject_type": row.subject_type,
                "subject_id": row.subject_id,
                "request_id": row.request_id,
                "details": row.details,
            }
            for row in rows
        ]
    }


AcceptOffers = Annotated[Principal, Depends(limited(auth.APPLICATION_CREATE, "write"))]
ApproveLoans = Annotated[Principal, Depends(limited(auth.APPLICATION_APPROVE, "write"))]
ReadApprovals = Annotated[Principal, Depends(limited(auth.LOAN_READ, "read"))]


@contextlib.contextmanager
def chain_unavailable_as_503() -> Iterator[None]:
    """A node that refuses or times out is the 503 these operations declare, not a 500."""
    try:
        yield
    except RpcError as error:
        if error.code is not None:  # the node answered: an error of the call, not of the node
            raise
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Chain unavailable",
            detail=f"the chain node did not answer: {type(error.__cause__ or error).__name__}",
            headers={"Retry-After": "5"},
        ) from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Chain unavailable",
            detail=f"the chain node did not answer: {type(error).__name__}",
            headers={"Retry-After": "5"},
        ) from error


def _chain(request: Request):
    """The app's deployment (loaded once) and JSON-RPC client (offchain.chain.client)."""
    settings = request.app.state.settings
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    chain = chain_of(request.app.state.resources)
    return chain.deployment, chain.rpc


@router.post(
    "/offers/{offer_id}/accept",
    status_code=201,
    response_model=schemas.AcceptOfferOut,
    responses={
        **BAD_BODY,
        404: {"description": "no such offer for this partner", **PROBLEM},
        409: {"description": "the offer is no longer open, or expired", **PROBLEM},
        **CHAIN_UNAVAILABLE,
        **COMMON_ERRORS,
    },
    summary="Accept an offer: agreement hashed, loan created on chain (Idempotency-Key supported)",
)
async def accept_offer(
    request: Request,
    offer_id: uuid.UUID,
    body: schemas.AcceptOfferIn,
    principal: AcceptOffers,
    db: DatabaseDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    deployment, _ = _chain(request)
    settings = request.app.state.settings

    async def handle(session: AsyncSession) -> tuple[int, Any]:
        accepted = await usecases.accept_offer(
            session=session,
            principal=principal,
            offer_id=offer_id,
            body=body,
            ref_secret=settings.auth.ref_secret.get_secret_value(),
            deployment=deployment,
        )
        body_out = accepted.model_dump(mode="json")
        await record_action(
            session,
            actor=principal.subject,
            action="offer.accept",
            subject_type="offer",
            subject_id=offer_id,
            partner_id=principal.partner_id,
            before={"offer_status": "open"},
            after=body_out,
        )
        return 201, body_out

    return await run_idempotent(request, db=db, partner_id=principal.partner_id, in_transaction=handle)


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
    deployment, rpc = _chain(request)
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
    deployment, rpc = _chain(request)

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
