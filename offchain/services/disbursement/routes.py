"""Payout routes: a loan's payout as the rail and the ledger see it (its partner, or an operator),
and what only operators do: release a payout held by transaction monitoring, retry an abandoned
one, finalize a transfer with its OTP, read the monitoring flags."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.money import MonitoringFlag, Payout
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.deps import DatabaseDep
from offchain.platform.pages import MoneyOut, Page
from offchain.platform.problems import Problem

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
NOT_FOUND = "urn:caas:problem:not-found"


class PayoutOut(BaseModel):
    """A loan's payout as the rail and the ledger see it."""

    loan_id: uuid.UUID
    chain_loan_id: str
    status: str = Field(description="queued | initiated | succeeded | abandoned | review")
    rail: str
    reference: str = Field(description="the one transfer reference of every attempt")
    method: str
    amount: MoneyOut
    attempt: int
    provider_status: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    recorded_on_chain: bool
    disbursed_tx: str | None = None
    hold: str | None = Field(default=None, description="the ledger hold of the new attempt (retry only)")


class MonitoringFlagOut(BaseModel):
    id: uuid.UUID
    subject: str = Field(description="payout | payment")
    subject_id: str
    loan_id: uuid.UUID | None = None
    rule: str
    detail: str
    status: str = Field(description="open | cleared")
    created_at: datetime


def payout_view(payout: Payout) -> dict[str, Any]:
    return {
        "loan_id": str(payout.loan_id),
        "chain_loan_id": payout.chain_loan_id,
        "status": payout.status,
        "rail": payout.rail,
        "reference": payout.reference,
        "method": payout.method,
        "amount": {"value": payout.amount, "currency": payout.currency},
        "attempt": payout.attempt,
        "provider_status": payout.provider_status,
        "last_error": payout.last_error,
        "next_attempt_at": payout.next_attempt_at.isoformat() if payout.next_attempt_at else None,
        "recorded_on_chain": payout.disbursed_tx is not None,
        "disbursed_tx": payout.disbursed_tx,
    }


@asynccontextmanager
async def _payout_locked(db: Any, loan_id: uuid.UUID) -> AsyncIterator[tuple[AsyncSession, Payout]]:
    """The payout, locked in a worker transaction (operators act across partners; the change
    also writes platform tables: ledger holds, audit, monitoring flags)."""
    from offchain.services.disbursement.payouts import lock_payout

    async with db.worker_session() as session:
        payout = await lock_payout(session, loan_id)
        if payout is None:
            raise Problem(404, NOT_FOUND, title="Payout not found", detail=f"no payout for loan {loan_id}")
        yield session, payout


@router.get(
    "/payouts/{loan_id}",
    response_model=PayoutOut,
    responses={404: {"description": "no payout for this loan (yet)", **PROBLEM}},
    summary="A loan's payout: status, attempts, rail reference, chain record",
)
async def get_payout(loan_id: uuid.UUID, actor: PayoutReader, db: DatabaseDep) -> dict[str, Any]:
    scope = db.worker_session() if isinstance(actor, auth.Operator) else db.partner_session(actor.partner_id)
    async with scope as session:
        payout = await session.get(Payout, loan_id)
        if payout is None:
            raise Problem(404, NOT_FOUND, title="Payout not found", detail=f"no payout for loan {loan_id}")
        return payout_view(payout)


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
    from offchain.services.disbursement.payouts import hold_id, place_hold

    async with _payout_locked(db, loan_id) as (session, payout):
        if payout.status != "abandoned":
            raise Problem(
                409,
                "urn:caas:problem:payout-not-retryable",
                title="Payout not retryable",
                detail=f"the payout is {payout.status}; only an abandoned payout is retried by hand",
                errors=[{"field": "loan_id", "reason": f"payout status is {payout.status}"}],
            )
        before = payout_view(payout)
        payout.attempt += 1
        payout.status = "queued"
        payout.next_attempt_at = datetime.now(UTC)
        payout.last_error = f"retried by {operator.actor}"
        await place_hold(session, payout)
        await record_action(
            session,
            actor=operator.actor,
            action="payout.retry",
            subject_type="payout",
            subject_id=loan_id,
            partner_id=payout.partner_id,
            before=before,
            after=payout_view(payout),
        )
        view = payout_view(payout)
        view["hold"] = hold_id(payout.loan_id, payout.attempt)
        return view


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
    from offchain.services import monitoring

    async with _payout_locked(db, loan_id) as (session, payout):
        if payout.status != "review":
            raise Problem(
                409,
                "urn:caas:problem:payout-not-held",
                title="Payout not held",
                detail=f"the payout is {payout.status}; only a payout held for review is released",
                errors=[{"field": "loan_id", "reason": f"payout status is {payout.status}"}],
            )
        before = payout_view(payout)
        cleared = await monitoring.clear(session, kind="payout", subject=str(loan_id), by=operator.actor)
        payout.status = "queued"
        payout.next_attempt_at = datetime.now(UTC)
        payout.last_error = f"released by {operator.actor} ({cleared} flags cleared)"
        await record_action(
            session,
            actor=operator.actor,
            action="payout.release",
            subject_type="payout",
            subject_id=loan_id,
            partner_id=payout.partner_id,
            before=before,
            after=payout_view(payout),
            flags_cleared=cleared,
        )
        return payout_view(payout)


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
    async with db.worker_session() as session:
        rows = (
            await session.execute(
                select(MonitoringFlag)
                .where(MonitoringFlag.status == status)
                .order_by(MonitoringFlag.created_at.desc())
                .limit(200)
            )
        ).scalars()
        return {
            "data": [
                {
                    "id": str(f.id),
                    "subject": f.subject_kind,
                    "subject_id": f.subject_id,
                    "loan_id": str(f.loan_id) if f.loan_id else None,
                    "partner_id": str(f.partner_id) if f.partner_id else None,
                    "rule": f.rule,
                    "detail": f.detail,
                    "status": f.status,
                    "created_at": f.created_at.isoformat(),
                }
                for f in rows
            ]
        }


class OtpIn(BaseModel):
    otp: str = Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")


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
    from offchain.rails.paystack.client import PaystackClient, PaystackError, PaystackRejected
    from offchain.services.disbursement.payouts import PayoutContext, apply_transfer

    settings = request.app.state.settings
    async with _payout_locked(db, loan_id) as (session, payout):
        paystack = PaystackClient.from_settings(settings.rails, http=request.app.state.resources.http)
        if payout.status != "initiated" or payout.provider_status != "otp" or not payout.transfer_code:
            raise Problem(
                409,
                "urn:caas:problem:payout-not-awaiting-otp",
                title="No OTP expected",
                detail=f"the payout is {payout.status} / {payout.provider_status}",
                errors=[{"field": "loan_id", "reason": "the transfer is not waiting for an OTP"}],
            )
        try:
            transfer = await paystack.finalize_transfer(transfer_code=payout.transfer_code, otp=body.otp)
        except PaystackRejected as error:
            raise Problem(
                422,
                "urn:caas:problem:otp-refused",
                title="OTP refused",
                detail=error.message,
                errors=[{"field": "otp", "reason": error.message}],
            ) from error
        except PaystackError as error:
            raise Problem(
                503, "urn:caas:problem:dependency-unavailable", title="Paystack unavailable"
            ) from error
        if settings.chain.deployment_file is None:
            raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
        from offchain.chain.client import chain_of

        ctx = PayoutContext(
            paystack=paystack,
            settings=settings.money,
            deployment=chain_of(request.app.state.resources).deployment,  # loaded once per app
        )
        before = payout_view(payout)
        await apply_transfer(session, payout, transfer, ctx)
        await record_action(
            session,
            actor=operator.actor,
            action="payout.finalize_otp",
            subject_type="payout",
            subject_id=loan_id,
            partner_id=payout.partner_id,
            before=before,
            after=payout_view(payout),
        )
        return payout_view(payout)
