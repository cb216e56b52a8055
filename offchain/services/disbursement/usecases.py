"""What the payout routes do: a loan's payout read in its partner's (or an operator's) scope,
and the operators' actions on it -- retry, release, finalize with the OTP -- each in one worker
transaction with the payout locked and an audit record; the monitoring flags."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import ChainClient
from offchain.persistence.money import MonitoringFlag, Payout
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.db import Database
from offchain.platform.problems import Problem, not_found
from offchain.platform.settings import Settings
from offchain.rails.paystack.client import PaystackClient, PaystackError, PaystackRejected
from offchain.services import monitoring
from offchain.services.disbursement.payouts import (
    PayoutContext,
    apply_transfer,
    hold_id,
    lock_payout,
    place_hold,
)


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
async def payout_locked(db: Database, loan_id: uuid.UUID) -> AsyncIterator[tuple[AsyncSession, Payout]]:
    """The payout, locked in a worker transaction (operators act across partners; the change
    also writes platform tables: ledger holds, audit, monitoring flags)."""
    async with db.worker_session() as session:
        payout = await lock_payout(session, loan_id)
        if payout is None:
            raise not_found("payout", loan_id, detail=f"no payout for loan {loan_id}")
        yield session, payout


async def get_payout(db: Database, actor: auth.Actor, loan_id: uuid.UUID) -> dict[str, Any]:
    scope = db.worker_session() if isinstance(actor, auth.Operator) else db.partner_session(actor.partner_id)
    async with scope as session:
        payout = await session.get(Payout, loan_id)
        if payout is None:
            raise not_found("payout", loan_id, detail=f"no payout for loan {loan_id}")
        return payout_view(payout)


async def retry_payout(db: Database, operator: auth.Operator, loan_id: uuid.UUID) -> dict[str, Any]:
    async with payout_locked(db, loan_id) as (session, payout):
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


async def release_payout(db: Database, operator: auth.Operator, loan_id: uuid.UUID) -> dict[str, Any]:
    async with payout_locked(db, loan_id) as (session, payout):
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


async def flags(db: Database, status: str) -> dict[str, Any]:
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


async def finalize_payout(
    db: Database,
    operator: auth.Operator,
    loan_id: uuid.UUID,
    otp: str,
    *,
    settings: Settings,
    http: httpx.AsyncClient,
    chain: ChainClient,
) -> dict[str, Any]:
    async with payout_locked(db, loan_id) as (session, payout):
        paystack = PaystackClient.from_settings(settings.rails, http=http)
        if payout.status != "initiated" or payout.provider_status != "otp" or not payout.transfer_code:
            raise Problem(
                409,
                "urn:caas:problem:payout-not-awaiting-otp",
                title="No OTP expected",
                detail=f"the payout is {payout.status} / {payout.provider_status}",
                errors=[{"field": "loan_id", "reason": "the transfer is not waiting for an OTP"}],
            )
        try:
            transfer = await paystack.finalize_transfer(transfer_code=payout.transfer_code, otp=otp)
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
        ctx = PayoutContext(
            paystack=paystack,
            settings=settings.money,
            deployment=chain.deployment,  # loaded once per app
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
