"""Partner REST API routes (DESIGN §4): authenticate, rate-limit, then call a use case."""

# No `from __future__ import annotations`: FastAPI must see the closures in the dependencies.

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import chain_of, chain_unavailable_as_503
from offchain.persistence.models import AuditLogEntry, Loan
from offchain.platform import auth
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep, SettingsDep
from offchain.platform.idempotency import run_idempotent
from offchain.platform.inputs import Cursor
from offchain.platform.limits import limited
from offchain.platform.openapi_client import IdempotencyKey
from offchain.platform.pagination import MAX_LIMIT
from offchain.platform.partner_errors import (
    BAD_BODY,
    BAD_CURSOR,
    CHAIN_UNAVAILABLE,
    COMMON_ERRORS,
    LOAN_NOT_FOUND,
    PROBLEM,
)
from offchain.platform.problems import not_found
from offchain.services.gateway import schemas, usecases
from offchain.services.gateway.audit import audit_report

router = APIRouter(prefix="/v1")

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
    request: Request, loan_id: uuid.UUID, principal: AuditLoans, db: DatabaseDep, settings: SettingsDep
) -> dict:
    async with db.partner_session(principal.partner_id) as session:
        loan = await session.get(Loan, loan_id)
        if loan is None:
            raise not_found("loan", loan_id)
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
