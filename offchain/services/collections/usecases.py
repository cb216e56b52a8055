"""Collections use cases: what partners read (a COB run, a loan's collections, write-off
proposals) and promises to pay. The close of business itself: cob.py."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import collections as rules
from offchain.domain.loan_book import LoanState
from offchain.domain.money import from_iso_numeric
from offchain.persistence.collections import (
    CobRun,
    CollectionAction,
    CollectionDay,
    PromiseToPay,
    WriteOffProposal,
)
from offchain.persistence.models import Loan
from offchain.platform.logging import get_logger
from offchain.platform.problems import NOT_FOUND, Problem, not_found
from offchain.services.collections.cob import cob_view
from offchain.services.collections.context import IN_REPAYMENT

log = get_logger(__name__)

NOT_IN_REPAYMENT = "urn:caas:problem:loan-not-in-repayment"
PROMISE_OPEN = "urn:caas:problem:promise-already-open"
INVALID_PROMISE = "urn:caas:problem:invalid-promise"

# -- what partners read --------------------------------------------------------------------------


async def get_cob_run(*, session: AsyncSession, business_date: date) -> dict[str, Any]:
    """The run (platform-wide) with this partner's results for the date (row-level security)."""
    run = await session.get(CobRun, business_date)
    if run is None:
        raise Problem(
            404, NOT_FOUND, title="COB run not found", detail=f"no close of business for {business_date}"
        )
    days = (
        await session.execute(select(CollectionDay).where(CollectionDay.business_date == business_date))
    ).scalars()
    actions = (
        await session.execute(
            select(CollectionAction.kind, func.count())
            .where(CollectionAction.business_date == business_date)
            .group_by(CollectionAction.kind)
        )
    ).all()
    buckets: Counter[str] = Counter()
    loans = []
    for day in days:
        buckets[day.bucket] += 1
        loans.append(_day_view(day))
    return {
        **cob_view(run),
        "partner": {
            "loans": loans,
            "buckets": dict(buckets),
            "actions": {kind: count for kind, count in actions},
        },
    }


def _money(value: int, currency: int | str) -> dict[str, Any]:
    code = currency if isinstance(currency, str) else from_iso_numeric(currency)
    return {"value": int(value), "currency": code}


def _day_view(day: CollectionDay) -> dict[str, Any]:
    return {
        "loan_id": str(day.loan_id),
        "business_date": day.business_date.isoformat(),
        "chain_state": LoanState(day.chain_state).name,
        "days_past_due": day.days_past_due,
        "bucket": day.bucket,
        "cbn_class": day.cbn_class,
        "provision_bps": rules.PROVISION_BPS[rules.CbnClass(day.cbn_class)],
        "provision": _money(day.provision, day.currency),
        "outstanding": _money(day.outstanding, day.currency),
        "amount_due": _money(day.amount_due, day.currency),
        "dunning_paused": day.dunning_paused,
    }


def _promise_view(promise: PromiseToPay) -> dict[str, Any]:
    return {
        "id": str(promise.id),
        "amount": _money(promise.amount, promise.currency),
        "promised_date": promise.promised_date.isoformat(),
        "status": promise.status,
        "resolved_on": promise.resolved_on.isoformat() if promise.resolved_on else None,
        "created_at": promise.created_at.isoformat() if promise.created_at else None,
    }


def _proposal_view(proposal: WriteOffProposal, chain_state: int | None) -> dict[str, Any]:
    executed = chain_state == int(LoanState.WRITTEN_OFF)
    return {
        "loan_id": str(proposal.loan_id),
        "chain_loan_id": proposal.chain_loan_id,
        "status": "executed" if executed else proposal.status,
        "committee": proposal.committee,
        # what a signer sends: DisbursementCommittee.propose(action, target, arg, value, expires_at)
        "propose": {
            "action": proposal.action,
            "action_name": "WRITE_OFF",
            "target": "0x" + "00" * 20,
            "arg": proposal.chain_loan_id,
            "value": 0,
            "expires_at": proposal.expires_at,
        },
        "calldata": proposal.calldata,
        "outstanding": _money(proposal.outstanding, proposal.currency),
        "days_past_due": proposal.days_past_due,
        "business_date": proposal.business_date.isoformat(),
        "tx_idempotency_key": proposal.tx_idempotency_key,
        "created_at": proposal.created_at.isoformat() if proposal.created_at else None,
    }


async def find_loan(session: AsyncSession, loan_id: uuid.UUID) -> Loan:
    loan = await session.get(Loan, loan_id)
    if loan is None:
        raise not_found("loan", loan_id)
    return loan


async def loan_collections(*, session: AsyncSession, loan_id: uuid.UUID) -> dict[str, Any]:
    loan = await find_loan(session, loan_id)
    latest = (
        await session.execute(
            select(CollectionDay)
            .where(CollectionDay.loan_id == loan_id)
            .order_by(CollectionDay.business_date.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    actions = (
        await session.execute(
            select(CollectionAction)
            .where(CollectionAction.loan_id == loan_id)
            .order_by(CollectionAction.business_date, CollectionAction.id)
        )
    ).scalars()
    promises = (
        await session.execute(
            select(PromiseToPay).where(PromiseToPay.loan_id == loan_id).order_by(PromiseToPay.created_at)
        )
    ).scalars()
    proposal = await session.get(WriteOffProposal, loan_id)
    history = [
        {
            "business_date": a.business_date.isoformat(),
            "kind": a.kind,
            "key": a.action_key,
            "topic": a.topic,
            "channel": a.channel,
            "template": a.template,
            "notification_id": a.notification_id,
            "tx_idempotency_key": a.tx_idempotency_key,
            "details": a.details,
        }
        for a in actions
    ]
    return {
        "loan_id": str(loan.id),
        "chain_loan_id": loan.chain_loan_id,
        "chain_state": LoanState(loan.chain_state).name,
        "latest": _day_view(latest) if latest else None,
        "bucket": latest.bucket if latest else None,
        "cbn_class": latest.cbn_class if latest else None,
        "days_past_due": latest.days_past_due if latest else None,
        "dunning": [h for h in history if h["channel"] is not None],
        "history": history,
        "promises": [_promise_view(p) for p in promises],
        "write_off_proposal": _proposal_view(proposal, loan.chain_state) if proposal else None,
    }


async def add_promise(
    *,
    session: AsyncSession,
    loan_id: uuid.UUID,
    amount: int,
    currency: str,
    promised_date: date,
    today: date,
    created_by: str,
    repaid_now: int | None,
) -> dict[str, Any]:
    """Record a promise to pay; dunning pauses until `promised_date` (resumes if it is missed)."""
    loan = await find_loan(session, loan_id)
    if loan.chain_state not in IN_REPAYMENT:
        raise Problem(
            409,
            NOT_IN_REPAYMENT,
            title="Loan is not in repayment",
            detail=f"the loan is {LoanState(loan.chain_state).name}",
        )
    loan_currency = from_iso_numeric(loan.currency) if loan.currency else "NGN"
    errors = []
    if currency != loan_currency:
        errors.append({"field": "amount.currency", "reason": f"the loan is in {loan_currency}"})
    if promised_date < today:
        errors.append({"field": "promised_date", "reason": "in the past"})
    if errors:
        raise Problem(422, INVALID_PROMISE, title="Invalid promise to pay", errors=errors)
    existing = await session.scalar(
        select(PromiseToPay.id).where(PromiseToPay.loan_id == loan_id, PromiseToPay.status == "open")
    )
    if existing is not None:
        raise Problem(
            409,
            PROMISE_OPEN,
            title="A promise to pay is already open",
            detail=f"promise {existing} is still open",
            existing_id=str(existing),
        )
    promise = PromiseToPay(
        loan_id=loan_id,
        partner_id=loan.partner_id,
        amount=amount,
        currency=currency,
        promised_date=promised_date,
        repaid_baseline=loan.repaid if repaid_now is None else repaid_now,
        created_by=created_by,
    )
    session.add(promise)
    await session.flush()
    await session.refresh(promise)
    return _promise_view(promise)


async def write_off_proposals(*, session: AsyncSession) -> list[dict[str, Any]]:
    rows = (
        await session.execute(
            select(WriteOffProposal, Loan.chain_state)
            .join(Loan, Loan.id == WriteOffProposal.loan_id)
            .order_by(WriteOffProposal.created_at.desc())
        )
    ).all()
    return [_proposal_view(proposal, state) for proposal, state in rows]
