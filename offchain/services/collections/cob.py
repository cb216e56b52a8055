"""The close of business.

A close of business (COB) of a business date reads every loan in repayment from the chain in
batches, then settles each loan in its own transaction, under a per-loan advisory lock (replicas
running the same date skip a loan another one holds). In that transaction it records the day's
result (`caas_collection_days`, whose presence marks the loan done for the date), the actions
(`caas_collection_actions`, unique per loan and action key), their outbox events and transaction
intents. Re-running a date therefore changes nothing, and a crash leaves each loan either done or
untouched.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.sender import submit
from offchain.domain import collections as rules
from offchain.domain.money import from_iso_numeric
from offchain.eventbus.outbox import publish
from offchain.persistence.collections import (
    CobRun,
    CollectionAction,
    CollectionDay,
    PromiseToPay,
    WriteOffProposal,
)
from offchain.persistence.credit import Application, Origination
from offchain.persistence.models import Loan
from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem
from offchain.services.collections.chain import ChainReadError
from offchain.services.collections.context import (
    IN_REPAYMENT,
    NOTIFICATION_TOPIC,
    Collections,
    LoanRow,
    lock_key,
    policy_of,
)

log = get_logger(__name__)

FUTURE_DATE = "urn:caas:problem:business-date-in-future"


async def run_cob(collections: Collections, business_date: date) -> dict[str, Any]:
    """The close of business of one date; safe to repeat (and to run on several replicas)."""
    tz = collections.tz
    head = await collections.chain.head_timestamp()
    # The chain's clock, or the wall clock when an idle dev chain has not made a block lately.
    now = max(head, int(datetime.now(UTC).timestamp()))
    starts_at = int(datetime.combine(business_date, time.min, tzinfo=tz).timestamp())
    if starts_at > now:
        raise Problem(
            409,
            FUTURE_DATE,
            title="Business date has not started",
            detail=f"{business_date} has not begun in {collections.settings.timezone}",
            errors=[{"field": "business_date", "reason": "in the future"}],
        )
    at = min(rules.close_of_business(business_date, tz), now)

    async with collections.db.worker_session() as session:
        await session.execute(
            insert(CobRun).values(business_date=business_date, evaluated_at=at).on_conflict_do_nothing()
        )
        loans = await _loans_in_repayment(session)

    after_days = await collections.chain.default_after_days()
    counts: Counter[str] = Counter()
    processed = 0
    batch = max(1, collections.settings.rpc_batch_size // 3)
    for start in range(0, len(loans), batch):
        chunk = loans[start : start + batch]
        snapshots = await collections.chain.snapshots([loan.chain_loan_id for loan in chunk], at)
        for loan in chunk:
            snapshot = snapshots[loan.chain_loan_id]
            if isinstance(snapshot, ChainReadError):
                counts["chain_read_failed"] += 1
                log.warning("cob.chain_read_failed", loan_id=str(loan.id), error=str(snapshot))
                continue
            outcome = await _settle_loan(
                collections, loan, snapshot, business_date=business_date, default_after_days=after_days
            )
            counts.update(outcome)
            processed += 1 if "settled" in outcome else 0

    async with collections.db.worker_session() as session:
        run = await session.get(CobRun, business_date, with_for_update=True)
        assert run is not None
        summary = dict(run.summary or {})
        for name, value in counts.items():
            summary[name] = summary.get(name, 0) + value
        run.summary = summary
        run.loans_processed = (run.loans_processed or 0) + processed
        run.status = "completed"
        run.finished_at = datetime.now(UTC)
        run.evaluated_at = at
        result = cob_view(run)
    log.info("cob.completed", business_date=business_date.isoformat(), **{k: v for k, v in counts.items()})
    return result


async def catch_up(collections: Collections, until: date) -> list[dict[str, Any]]:
    """Run every business date after the last completed one up to `until` (at most
    max_catch_up_days of them; older gaps need an explicit run)."""
    async with collections.db.worker_session() as session:
        last = await session.scalar(
            select(func.max(CobRun.business_date)).where(CobRun.status == "completed")
        )
    if last is None or last >= until:
        dates = [until]
    else:
        dates = rules.dates_between(last + timedelta(days=1), until)
    dates = dates[-(collections.settings.max_catch_up_days + 1) :]
    return [await run_cob(collections, business_date) for business_date in dates]


async def _loans_in_repayment(session: AsyncSession) -> list[LoanRow]:
    rows = await session.execute(
        select(Loan.id, Loan.partner_id, Loan.chain_loan_id, Application.sme_user_id)
        .outerjoin(Origination, Origination.loan_id == Loan.id)
        .outerjoin(Application, Application.id == Origination.application_id)
        .where(Loan.partner_id.is_not(None), Loan.chain_state.in_(IN_REPAYMENT))
        .order_by(Loan.id)
    )
    return [LoanRow(r.id, r.partner_id, r.chain_loan_id, r.sme_user_id) for r in rows]


async def _settle_loan(
    collections: Collections,
    loan: LoanRow,
    snapshot: rules.LoanSnapshot,
    *,
    business_date: date,
    default_after_days: int,
) -> Counter[str]:
    outcome: Counter[str] = Counter()
    async with collections.db.worker_session() as session:
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(lock_key(loan.id))))
        if not locked:
            outcome["busy"] += 1  # another replica is on it
            return outcome
        done_today = await session.get(CollectionDay, (business_date, loan.id))
        if done_today is not None:
            outcome["already_done"] += 1
            return outcome
        actions = (
            await session.execute(
                select(CollectionAction.action_key, CollectionAction.kind, CollectionAction.details).where(
                    CollectionAction.loan_id == loan.id
                )
            )
        ).all()
        fee_charged = {
            int(i) for a in actions if a.kind == "late_fee" for i in (a.details or {}).get("installments", [])
        }
        promises = (
            await session.execute(
                select(PromiseToPay).where(PromiseToPay.loan_id == loan.id, PromiseToPay.status == "open")
            )
        ).scalars()
        open_promises = {str(p.id): p for p in promises}
        currency = from_iso_numeric(snapshot.currency) if snapshot.currency else "NGN"
        plan = rules.plan_day(
            loan=snapshot,
            business_date=business_date,
            tz=collections.tz,
            policy=policy_of(collections.settings),
            default_after_days=default_after_days,
            done={a.action_key for a in actions},
            fee_charged=fee_charged,
            promises=[
                rules.Promise(str(p.id), p.amount, p.promised_date, p.repaid_baseline)
                for p in open_promises.values()
            ],
            chain_loan_id=loan.chain_loan_id,
            currency=currency,
        )
        for action in plan.actions:
            if await _carry_out(collections, session, loan, action, snapshot, business_date):
                outcome[action.kind] += 1
        for promise_id, status in plan.promise_updates.items():
            promise = open_promises[promise_id]
            promise.status = status.value
            promise.resolved_on = business_date
        session.add(
            CollectionDay(
                business_date=business_date,
                loan_id=loan.id,
                partner_id=loan.partner_id,
                chain_state=int(snapshot.state),
                days_past_due=snapshot.days_past_due,
                bucket=plan.bucket.value,
                cbn_class=plan.klass.value,
                currency=snapshot.currency,
                outstanding=snapshot.outstanding,
                amount_due=snapshot.amount_due,
                provision=plan.provision,
                dunning_paused=plan.paused,
            )
        )
        outcome["settled"] += 1
    return outcome


async def _carry_out(
    collections: Collections,
    session: AsyncSession,
    loan: LoanRow,
    action: rules.Action,
    snapshot: rules.LoanSnapshot,
    business_date: date,
) -> bool:
    """Record the action once; only the call that inserted its row publishes and submits."""
    notification = action.notification
    tx_key = None
    if action.chain_call is not None:
        tx_key = f"{action.chain_call[0]}:{loan.chain_loan_id}"
        if action.kind == "late_fee":
            tx_key += f":{business_date.isoformat()}"
    note_id = rules.notification_id(str(loan.id), action.key) if notification else None
    inserted = await session.scalar(
        insert(CollectionAction)
        .values(
            loan_id=loan.id,
            partner_id=loan.partner_id,
            business_date=business_date,
            action_key=action.key,
            kind=action.kind,
            topic=action.topic,
            channel=notification.channel if notification else None,
            template=notification.template if notification else None,
            notification_id=note_id,
            tx_idempotency_key=tx_key,
            details=action.details,
        )
        .on_conflict_do_nothing(index_elements=["loan_id", "action_key"])
        .returning(CollectionAction.id)
    )
    if inserted is None:
        return False
    partner = str(loan.partner_id)
    if action.topic:
        await publish(
            session,
            action.topic,
            {"loan_id": str(loan.id), **action.details},
            key=str(loan.id),
            partner_id=loan.partner_id,
        )
    if notification is not None:
        await publish(
            session,
            NOTIFICATION_TOPIC,
            {
                "notification_id": note_id,
                "partner_id": partner,
                "loan_id": str(loan.id),
                "sme_user_id": loan.sme_user_id,
                "channel": notification.channel,
                "template": notification.template,
                "data": notification.data,
            },
            key=note_id,
            partner_id=loan.partner_id,
        )
    chain = collections.chain
    if action.chain_call is not None and tx_key is not None:
        if action.chain_call[0] == "assess_late_fee":
            _, amount, ref = action.chain_call
            data = chain.assess_late_fee(loan.chain_loan_id, amount, ref)
        else:
            data = chain.mark_default(loan.chain_loan_id)
        await submit(
            session,
            caller="collections",
            deployment=chain.deployment,
            idempotency_key=tx_key,
            to=chain.deployment.loan_book_address,
            data=data,
        )
    if action.kind == "write_off_proposal":
        await _open_write_off(collections, session, loan, snapshot, business_date)
    return True


async def _open_write_off(
    collections: Collections,
    session: AsyncSession,
    loan: LoanRow,
    snapshot: rules.LoanSnapshot,
    business_date: date,
) -> None:
    expires_at = snapshot.at + collections.settings.write_off_proposal_ttl_s
    calldata = collections.chain.propose_write_off(loan.chain_loan_id, expires_at)
    committee = collections.chain.deployment.committee_address
    tx_key = None
    if await collections.backend_may_propose():
        tx_key = f"propose_write_off:{loan.chain_loan_id}"
        await submit(
            session,
            caller="collections",
            deployment=collections.chain.deployment,
            idempotency_key=tx_key,
            to=committee,
            data=calldata,
        )
    await session.execute(
        insert(WriteOffProposal)
        .values(
            loan_id=loan.id,
            partner_id=loan.partner_id,
            chain_loan_id=loan.chain_loan_id,
            committee=committee.lower(),
            action=5,
            expires_at=expires_at,
            calldata=calldata,
            outstanding=snapshot.outstanding,
            currency=snapshot.currency,
            days_past_due=snapshot.days_past_due,
            status="submitted" if tx_key else "awaiting_signers",
            tx_idempotency_key=tx_key,
            business_date=business_date,
        )
        .on_conflict_do_nothing()
    )


def cob_view(run: CobRun) -> dict[str, Any]:
    return {
        "business_date": run.business_date.isoformat(),
        "status": run.status,
        "evaluated_at": (
            datetime.fromtimestamp(run.evaluated_at, UTC).isoformat() if run.evaluated_at else None
        ),
        "loans_processed": run.loans_processed,
        "summary": run.summary or {},
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
