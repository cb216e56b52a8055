"""Transaction monitoring of the money services: gather the facts, apply the rules, keep the flags.

The rules live in offchain.domain.monitoring; this module reads what they need from the
database (in the caller's transaction) and records every flag once per subject and rule.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.monitoring import (
    Flag,
    MonitoringPolicy,
    PaymentFacts,
    PayoutFacts,
    payment_flags,
    payout_flags,
)
from offchain.persistence.credit import Application, Origination
from offchain.persistence.models import Loan
from offchain.persistence.money import MonitoringFlag, Payment, Payout
from offchain.platform.logging import get_logger

log = get_logger(__name__)
FLAGS_RAISED = Counter(
    "caas_monitoring_flags_total", "Transaction-monitoring flags raised", ["subject", "rule"]
)


async def check_payout(session: AsyncSession, payout: Payout, policy: MonitoringPolicy) -> list[Flag]:
    borrower = (
        await session.execute(select(Loan.borrower_ref).where(Loan.id == payout.loan_id))
    ).scalar_one()
    same_account = (
        select(func.count(func.distinct(Loan.borrower_ref)))
        .select_from(Payout)
        .join(Loan, Loan.id == Payout.loan_id)
        .where(Payout.account_number == payout.account_number, Payout.bank_code == payout.bank_code)
    )
    since = datetime.now(UTC) - timedelta(days=policy.payout_window_days)
    borrower_payouts = (
        select(func.count())
        .select_from(Payout)
        .join(Loan, Loan.id == Payout.loan_id)
        .where(Loan.borrower_ref == borrower, Payout.created_at >= since)
    )
    recent = (
        select(Payout.amount)
        .where(Payout.partner_id == payout.partner_id, Payout.loan_id != payout.loan_id)
        .order_by(Payout.created_at.desc())
        .limit(100)
    )
    facts = PayoutFacts(
        amount=payout.amount,
        borrowers_on_account=int((await session.execute(same_account)).scalar_one()),
        borrower_payouts_in_window=int((await session.execute(borrower_payouts)).scalar_one()),
        partner_recent_amounts=[int(a) for a in (await session.execute(recent)).scalars()],
    )
    flags = payout_flags(facts, policy)
    await record(
        session,
        flags,
        kind="payout",
        subject=str(payout.loan_id),
        loan_id=payout.loan_id,
        partner_id=payout.partner_id,
    )
    return flags


async def check_payment(
    session: AsyncSession, row: Payment, loan: Loan, policy: MonitoringPolicy
) -> list[Flag]:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    recent = (
        await session.execute(
            select(func.count())
            .select_from(Payment)
            .where(Payment.loan_id == loan.id, Payment.created_at >= hour_ago)
        )
    ).scalar_one()
    borrower_user = (
        await session.execute(
            select(Application.sme_user_id)
            .join(Origination, Origination.application_id == Application.id)
            .where(Origination.loan_id == loan.id)
        )
    ).scalar_one_or_none()
    record_ = row.provider_record or {}
    payer = record_.get("user_id") or (record_.get("metadata") or {}).get("user_id")
    facts = PaymentFacts(
        amount=row.amount,
        loan_total_due=int(loan.total_due or 0),
        payments_into_loan_last_hour=int(recent),
        payer_user_id=str(payer) if payer else None,
        borrower_user_id=borrower_user,
    )
    flags = payment_flags(facts, policy)
    await record(
        session, flags, kind="payment", subject=str(row.id), loan_id=loan.id, partner_id=loan.partner_id
    )
    return flags


async def record(
    session: AsyncSession,
    flags: list[Flag],
    *,
    kind: str,
    subject: str,
    loan_id: uuid.UUID | None,
    partner_id: uuid.UUID | None,
) -> None:
    for flag in flags:
        inserted = (
            await session.execute(
                pg_insert(MonitoringFlag)
                .values(
                    subject_kind=kind,
                    subject_id=subject,
                    rule=flag.rule,
                    detail=flag.detail,
                    loan_id=loan_id,
                    partner_id=partner_id,
                )
                .on_conflict_do_nothing()
                .returning(MonitoringFlag.id)
            )
        ).first()
        if inserted is not None:
            FLAGS_RAISED.labels(kind, flag.rule).inc()
            log.warning(
                "monitoring.flag", subject=kind, subject_id=subject, rule=flag.rule, detail=flag.detail
            )


async def record_many(
    session: AsyncSession,
    raised: list[tuple[list[Flag], str, str, uuid.UUID | None, uuid.UUID | None]],
) -> None:
    """`record` for many subjects in one statement: (flags, kind, subject, loan_id, partner_id)."""
    rows = [
        {
            "subject_kind": kind,
            "subject_id": subject,
            "rule": flag.rule,
            "detail": flag.detail,
            "loan_id": loan_id,
            "partner_id": partner_id,
        }
        for flags, kind, subject, loan_id, partner_id in raised
        for flag in flags
    ]
    if not rows:
        return
    inserted = set(
        (
            await session.execute(
                pg_insert(MonitoringFlag)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(MonitoringFlag.subject_kind, MonitoringFlag.subject_id, MonitoringFlag.rule)
            )
        ).all()
    )
    for row in rows:
        if (row["subject_kind"], row["subject_id"], row["rule"]) in inserted:
            FLAGS_RAISED.labels(row["subject_kind"], row["rule"]).inc()
            log.warning(
                "monitoring.flag",
                subject=row["subject_kind"],
                subject_id=row["subject_id"],
                rule=row["rule"],
                detail=row["detail"],
            )


async def clear(session: AsyncSession, *, kind: str, subject: str, by: str) -> int:
    rows = (
        await session.execute(
            select(MonitoringFlag).where(
                MonitoringFlag.subject_kind == kind,
                MonitoringFlag.subject_id == subject,
                MonitoringFlag.status == "open",
            )
        )
    ).scalars()
    count = 0
    for flag in rows:
        flag.status, flag.resolved_by, flag.resolved_at = "cleared", by, datetime.now(UTC)
        count += 1
    return count
