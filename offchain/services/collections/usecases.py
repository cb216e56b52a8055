"""Collections use cases: the close of business, promises to pay, and what partners read.

A close of business (COB) of a business date reads every loan in repayment from the chain in
batches, then settles each loan in its own transaction, under a per-loan advisory lock (replicas
running the same date skip a loan another one holds). In that transaction it records the day's
result (`caas_collection_days`, whose presence marks the loan done for the date), the actions
(`caas_collection_actions`, unique per loan and action key), their outbox events and transaction
intents. Re-running a date therefore changes nothing, and a crash leaves each loan either done or
untouched.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from eth_account import Account
from eth_utils import keccak
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import sending_keys, submit
from offchain.domain import collections as rules
from offchain.domain.loan_book import LoanState
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
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem
from offchain.platform.settings import CollectionsSettings, Settings
from offchain.services.collections.chain import ChainReadError, LoanBookClient

log = get_logger(__name__)

NOTIFICATION_TOPIC = "notification.borrower.requested"
IN_REPAYMENT = (int(LoanState.ACTIVE), int(LoanState.DEFAULTED))

NOT_FOUND = "urn:caas:problem:not-found"
FUTURE_DATE = "urn:caas:problem:business-date-in-future"
NOT_IN_REPAYMENT = "urn:caas:problem:loan-not-in-repayment"
PROMISE_OPEN = "urn:caas:problem:promise-already-open"
INVALID_PROMISE = "urn:caas:problem:invalid-promise"


def policy_of(settings: CollectionsSettings) -> rules.CollectionsPolicy:
    return rules.CollectionsPolicy(
        due_reminders=dict(settings.due_reminders),
        missed_channel=settings.missed_channel,
        collection_after_dpd=settings.collection_after_dpd,
        dunning=tuple(rules.DunningStep(s.dpd, s.channel, s.template) for s in settings.dunning),
        late_fee_bps=settings.late_fee_bps,
        late_fee_min=settings.late_fee_min,
        write_off_after_dpd=settings.write_off_after_dpd,
    )


def lock_key(loan_id: uuid.UUID) -> int:
    """A signed 64-bit advisory lock key per loan, in a namespace of its own."""
    return int.from_bytes(keccak(text=f"caas.collections:{loan_id}")[:8], "big", signed=True)


@dataclass
class Collections:
    """What a close of business needs: database, chain and policy."""

    db: Database
    chain: LoanBookClient
    settings: CollectionsSettings
    sender_address: str | None = None
    _signers: list[str] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Collections:
        if not settings.chain.rpc_url or not settings.chain.deployment_file:
            raise Problem(
                503,
                "urn:caas:problem:dependency-unavailable",
                title="Chain not configured",
                detail="CHAIN_RPC_URL and DEPLOYMENT_FILE are needed for a close of business",
            )
        rpc = JsonRpc(settings.chain.endpoints, timeout_s=settings.chain.rpc_timeout_s)  # failover
        keys = sending_keys(settings)
        return cls(
            db=db,
            chain=LoanBookClient(Deployment.load(settings.chain.deployment_file), rpc),
            settings=settings.collections,
            sender_address=Account.from_key(keys[0]).address.lower() if keys else None,
        )

    async def aclose(self) -> None:
        await self.chain.rpc.aclose()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def today(self) -> date:
        return datetime.now(self.tz).date()

    async def backend_may_propose(self) -> bool:
        if self._signers is None:
            self._signers = await self.chain.committee_signers()
        return self.sender_address is not None and self.sender_address in self._signers


# -- the close of business -----------------------------------------------------------------------


@dataclass
class LoanRow:
    id: uuid.UUID
    partner_id: uuid.UUID
    chain_loan_id: str
    sme_user_id: str | None


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


# -- what partners read --------------------------------------------------------------------------


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
        raise Problem(404, NOT_FOUND, title="loan not found", detail=f"no loan {loan_id} for this partner")
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
