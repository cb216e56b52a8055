"""Collections API, served by collections:8005 and the gateway: a partner's loans in collection
(`credit:collection:manage`); the close of business itself runs over every partner's loans, so
only operators run it (`caas:operations:manage`)."""

# No `from __future__ import annotations`: FastAPI must see the dependency types.

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.chain.client import chain_of
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.inputs import IsoDate
from offchain.platform.pages import Page
from offchain.services.collections import cob, usecases
from offchain.services.collections.chain import ChainReadError
from offchain.services.collections.context import Collections
from offchain.services.collections.schemas import (
    CobRunDetail,
    CobRunIn,
    CobRunResult,
    LoanCollectionsOut,
    PromiseToPayIn,
    PromiseToPayOut,
    WriteOffProposalOut,
)

router = APIRouter(prefix="/v1", tags=["collections"])

Manage = Annotated[Principal, Depends(auth.require(auth.COLLECTION_MANAGE))]
RunCob = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
ReadCob = Annotated[
    auth.Actor, Depends(auth.partner_or_operator(auth.COLLECTION_MANAGE, auth.OPERATIONS_READ))
]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks credit:collection:manage", **PROBLEM},
    404: {"description": "not found for this partner", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
}


async def get_collections(request: Request, db: DatabaseDep) -> AsyncIterator[Collections]:
    resources = request.app.state.resources
    deployment = chain_of(resources).deployment if resources.settings.chain.deployment_file else None
    collections = Collections.from_settings(resources.settings, db, deployment)
    try:
        yield collections
    finally:
        await collections.aclose()


CollectionsDep = Annotated[Collections, Depends(get_collections)]


@router.post(
    "/collections/cob-runs",
    status_code=200,
    response_model=CobRunResult,
    responses={409: {"description": "the business date has not begun", **PROBLEM}, **ERRORS},
    summary="Run the close of business now, over every partner's loans (operators; idempotent)",
)
async def run_cob(
    body: CobRunIn, operator: RunCob, collections: CollectionsDep, db: DatabaseDep
) -> JSONResponse:
    business_date = body.business_date or collections.today()
    try:
        if body.catch_up:
            runs = await cob.catch_up(collections, business_date)
            result = {"runs": runs, **runs[-1]}
        else:
            result = await cob.run_cob(collections, business_date)
    except ChainReadError as error:  # pragma: no cover - the node failed between calls
        from offchain.platform.problems import Problem

        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain read failed") from error
    async with db.worker_session() as session:
        await record_action(
            session,
            actor=operator.actor,
            action="collections.cob_run",
            subject_type="business_date",
            subject_id=business_date.isoformat(),
            partner_id=None,  # platform-wide: in the operators' audit log, no partner's
            catch_up=body.catch_up,
        )
    return JSONResponse(result)


@router.get(
    "/collections/cob-runs/{business_date}",
    response_model=CobRunDetail,
    responses=ERRORS,
    summary="A close of business: the run, and the partner's loans in it (every partner's for operators)",
)
async def get_cob_run(business_date: IsoDate, actor: ReadCob, db: DatabaseDep) -> dict[str, Any]:
    scope = db.worker_session() if isinstance(actor, auth.Operator) else db.partner_session(actor.partner_id)
    async with scope as session:
        return await usecases.get_cob_run(session=session, business_date=business_date)


@router.get(
    "/loans/{loan_id}/collections",
    response_model=LoanCollectionsOut,
    responses=ERRORS,
    summary="DPD bucket, CBN class and provision, dunning history, promises to pay, write-off proposal",
)
async def loan_collections(loan_id: uuid.UUID, principal: Manage, db: DatabaseDep) -> dict[str, Any]:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.loan_collections(session=session, loan_id=loan_id)


@router.post(
    "/loans/{loan_id}/promises-to-pay",
    status_code=201,
    response_model=PromiseToPayOut,
    responses={409: {"description": "not in repayment, or a promise is already open", **PROBLEM}, **ERRORS},
    summary="Record a promise to pay: dunning pauses until the promised date, resumes if it is missed",
)
async def add_promise(
    loan_id: uuid.UUID, body: PromiseToPayIn, principal: Manage, db: DatabaseDep, collections: CollectionsDep
) -> JSONResponse:
    async with db.partner_session(principal.partner_id) as session:
        loan = await usecases.find_loan(session, loan_id)
    # payments after this moment count towards the promise: read `repaid` from the chain itself
    head = await collections.chain.head_timestamp()
    snapshots = await collections.chain.snapshots([loan.chain_loan_id], head)
    snapshot = snapshots[loan.chain_loan_id]
    repaid_now = None if isinstance(snapshot, ChainReadError) else snapshot.repaid
    async with db.partner_session(principal.partner_id) as session:
        view = await usecases.add_promise(
            session=session,
            loan_id=loan_id,
            amount=body.amount.value,
            currency=body.amount.currency,
            promised_date=body.promised_date,
            today=collections.today(),
            created_by=principal.subject,
            repaid_now=repaid_now,
        )
        await record_action(
            session,
            actor=principal.subject,
            action="collections.promise_to_pay",
            subject_type="loan",
            subject_id=loan_id,
            partner_id=principal.partner_id,
            after=view,
        )
    return JSONResponse(view, status_code=201)


@router.get("/collections/write-off-proposals", response_model=Page[WriteOffProposalOut], responses=ERRORS)
async def write_off_proposals(principal: Manage, db: DatabaseDep) -> dict[str, Any]:
    async with db.partner_session(principal.partner_id) as session:
        return {"data": await usecases.write_off_proposals(session=session)}
