"""Collections rules: what a close of business does to one loan on one business date (the DPD
buckets, CBN classes, provisions and business dates are in offchain.domain.delinquency).

Pure: the caller reads the loan from the chain, the actions already taken and the borrower's
promises from the database, and carries out the plan (outbox events, transaction intents, rows)
in one transaction. Every action has a key unique per loan (`missed:2`, `dunning:2:7`, ...), so a
plan made twice for the same facts is carried out once.

Dates: a business date is a calendar day in the lender's timezone (Africa/Lagos); its close of
business looks at the book as of the last second of that day. An installment is "due" on the
local date of its due timestamp and "missed" from the next business date on while unpaid; days
past due (the contract's `days_past_due`) count only once the grace period has passed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from offchain.domain.delinquency import (
    PROVISION_BPS,
    CbnClass,
    DpdBucket,
    cbn_class,
    close_of_business,
    dates_between,
    dpd_bucket,
    local_date,
    provision,
)
from offchain.domain.loan_book import SECONDS_PER_DAY, LoanState

Channel = Literal["sms", "email", "log"]
Template = Literal["repayment_due", "repayment_missed", "collection_initiated"]

# -- the loan as the chain shows it --------------------------------------------------------------


@dataclass(frozen=True)
class LoanSnapshot:
    """`LoanBook.loans(id)` plus `amount_due` / `days_past_due` at the evaluation time."""

    state: LoanState
    currency: int
    principal: int
    total_due: int
    installment_count: int
    installment_interval: int
    grace_period: int
    max_late_fees: int
    disbursed_at: int
    scheduled_repaid: int
    late_fees_assessed: int
    late_fees_paid: int
    outstanding: int
    amount_due: int
    days_past_due: int
    at: int  # unix time amount_due and days_past_due were evaluated at

    @property
    def repaid(self) -> int:
        return self.scheduled_repaid + self.late_fees_paid

    @property
    def late_fee_room(self) -> int:
        return max(0, self.max_late_fees - self.late_fees_assessed)


@dataclass(frozen=True)
class Installment:
    index: int  # 1-based
    due_at: int  # unix seconds
    amount: int
    unpaid: int


def installments(loan: LoanSnapshot) -> list[Installment]:
    """The schedule LoanBook enforces, with what is still unpaid of each installment (the
    scheduled part of repayments fills installments in order)."""
    count = loan.installment_count
    if count <= 0 or loan.installment_interval <= 0:
        return []
    base = loan.total_due // count
    paid = loan.scheduled_repaid
    items = []
    for index in range(1, count + 1):
        amount = base if index < count else loan.total_due - base * (count - 1)
        covered = min(amount, paid)
        paid -= covered
        items.append(
            Installment(
                index=index,
                due_at=loan.disbursed_at + index * loan.installment_interval,
                amount=amount,
                unpaid=amount - covered,
            )
        )
    return items


# -- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DunningStep:
    dpd: int
    channel: Channel
    template: Template


@dataclass(frozen=True)
class CollectionsPolicy:
    due_reminders: Mapping[int, Channel] = field(default_factory=lambda: {7: "email", 3: "sms", 0: "sms"})
    missed_channel: Channel = "sms"
    collection_after_dpd: int = 1
    dunning: Sequence[DunningStep] = ()
    late_fee_bps: int = 500
    late_fee_min: int = 0
    write_off_after_dpd: int = 0


def late_fee_amount(policy: CollectionsPolicy, unpaid: int, room: int) -> int:
    """The fee for one late installment: bps of its unpaid part, at least the minimum, never more
    than the room left under the loan's cap."""
    fee = max(-(-unpaid * policy.late_fee_bps // 10_000), policy.late_fee_min)
    return max(0, min(fee, room))


# -- promises to pay -----------------------------------------------------------------------------


class PromiseStatus(StrEnum):
    OPEN = "open"
    KEPT = "kept"
    BROKEN = "broken"


@dataclass(frozen=True)
class Promise:
    id: str
    amount: int
    promised_date: date
    repaid_baseline: int  # the loan's `repaid` when the promise was made
    status: PromiseStatus = PromiseStatus.OPEN


def promise_outcome(promise: Promise, *, repaid_now: int, business_date: date) -> PromiseStatus:
    """Kept once the borrower has paid the promised amount since the promise; broken when the
    promised date has passed without it; open otherwise."""
    if promise.status is not PromiseStatus.OPEN:
        return promise.status
    if repaid_now - promise.repaid_baseline >= promise.amount:
        return PromiseStatus.KEPT
    if business_date > promise.promised_date:
        return PromiseStatus.BROKEN
    return PromiseStatus.OPEN


# -- the plan of one loan on one business date ---------------------------------------------------


@dataclass(frozen=True)
class Notification:
    channel: Channel
    template: Template
    data: dict[str, Any]


@dataclass(frozen=True)
class Action:
    key: str  # unique per loan: carried out once, whatever the number of runs
    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None  # partner event to publish
    notification: Notification | None = None
    # a LoanBook call to send: ("assess_late_fee", amount, fee_ref) or ("mark_default",)
    chain_call: tuple[Any, ...] | None = None


@dataclass
class DayPlan:
    bucket: DpdBucket
    klass: CbnClass
    provision: int
    paused: bool
    actions: list[Action]
    promise_updates: dict[str, PromiseStatus]


def fee_ref(chain_loan_id: str, business_date: date) -> bytes:
    """keccak256("late_fee:<chain loan id>:<date>"): one fee per loan and date, however often
    the date is re-run (the contract refuses a reference twice)."""
    from eth_utils import keccak  # pure function; eth_utils has no I/O

    return keccak(text=f"late_fee:{chain_loan_id}:{business_date.isoformat()}")


def notification_id(loan_id: str, action_key: str) -> str:
    """A stable id per (loan, action): the notifications consumer dedupes on it."""
    digest = hashlib.sha256(f"caas.collections:{loan_id}:{action_key}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _money(value: int, currency: str) -> dict[str, Any]:
    return {"value": value, "currency": currency}


def plan_day(
    *,
    loan: LoanSnapshot,
    business_date: date,
    tz: ZoneInfo,
    policy: CollectionsPolicy,
    default_after_days: int,
    done: Collection[str],
    fee_charged: Collection[int] = (),
    promises: Iterable[Promise] = (),
    chain_loan_id: str = "",
    currency: str = "NGN",
) -> DayPlan:
    """What the close of business of `business_date` does to one loan.

    `done`: keys of actions already taken for this loan; `fee_charged`: installments a late fee
    was already assessed for. Only ACTIVE and DEFAULTED loans get actions.
    """
    dpd = loan.days_past_due
    klass = cbn_class(dpd)
    plan = DayPlan(
        bucket=dpd_bucket(dpd),
        klass=klass,
        provision=provision(loan.outstanding, klass),
        paused=False,
        actions=[],
        promise_updates={},
    )
    if loan.state not in (LoanState.ACTIVE, LoanState.DEFAULTED):
        return plan

    # promises first: a broken one lets dunning resume today
    open_promises = []
    for promise in promises:
        outcome = promise_outcome(promise, repaid_now=loan.repaid, business_date=business_date)
        if outcome is not promise.status:
            plan.promise_updates[promise.id] = outcome
            plan.actions.append(
                Action(
                    key=f"promise_{outcome.value}:{promise.id}",
                    kind=f"promise_{outcome.value}",
                    details={"promise_id": promise.id, "amount": _money(promise.amount, currency)},
                )
            )
        if outcome is PromiseStatus.OPEN:
            open_promises.append(promise)
    plan.paused = paused = bool(open_promises)

    schedule = [item for item in installments(loan) if item.unpaid > 0]
    base = {"chain_loan_id": chain_loan_id, "business_date": business_date.isoformat()}

    # reminders before (and on) due dates
    for item in schedule:
        days_before = (local_date(item.due_at, tz) - business_date).days
        channel = policy.due_reminders.get(days_before)
        key = f"due:{item.index}:T-{days_before}"
        if channel is None or key in done:
            continue
        data = {
            **base,
            "installment": item.index,
            "due_date": local_date(item.due_at, tz).isoformat(),
            "days_before": days_before,
            "amount_due": _money(item.unpaid, currency),
        }
        plan.actions.append(
            Action(
                key=key,
                kind="due_reminder",
                details=data,
                topic="credit.repayment.due",
                notification=Notification(channel, "repayment_due", data),
            )
        )

    # missed installments: from the business date after their due date on
    for item in schedule:
        due_date = local_date(item.due_at, tz)
        key = f"missed:{item.index}"
        if due_date >= business_date or key in done:
            continue
        data = {
            **base,
            "installment": item.index,
            "due_date": due_date.isoformat(),
            "amount_missed": _money(item.unpaid, currency),
            "amount_due": _money(loan.amount_due, currency),
        }
        plan.actions.append(
            Action(
                key=key,
                kind="missed",
                details=data,
                topic="credit.repayment.missed",
                notification=None
                if paused
                else Notification(policy.missed_channel, "repayment_missed", data),
            )
        )

    if dpd == 0 or not schedule:
        return plan

    # one delinquency episode per oldest unpaid installment: it ends when that one is paid
    episode = schedule[0].index
    delinquency = {
        **base,
        "installment": episode,
        "days_past_due": dpd,
        "bucket": plan.bucket.value,
        "amount_due": _money(loan.amount_due, currency),
        "outstanding": _money(loan.outstanding, currency),
    }
    if dpd >= policy.collection_after_dpd and f"collection:{episode}" not in done:
        plan.actions.append(
            Action(
                key=f"collection:{episode}",
                kind="collection_initiated",
                details=delinquency,
                topic="credit.collection.initiated",
            )
        )

    # dunning: the highest step reached, unless it (or a later one) was sent in this episode
    reached = [step for step in policy.dunning if step.dpd <= dpd]
    if reached and not paused:
        step = max(reached, key=lambda s: s.dpd)
        sent = {int(key.rsplit(":", 1)[1]) for key in done if key.startswith(f"dunning:{episode}:")}
        if not any(previous >= step.dpd for previous in sent):
            plan.actions.append(
                Action(
                    key=f"dunning:{episode}:{step.dpd}",
                    kind="dunning",
                    details={**delinquency, "step_dpd": step.dpd},
                    notification=Notification(step.channel, step.template, delinquency),
                )
            )

    defaulting = loan.state == LoanState.ACTIVE and dpd >= default_after_days
    if defaulting and "mark_default" not in done:
        plan.actions.append(
            Action(
                key="mark_default",
                kind="mark_default",
                details={**delinquency, "default_after_days": default_after_days},
                chain_call=("mark_default",),
            )
        )
    elif loan.state == LoanState.ACTIVE:
        # one fee per installment past its grace period, within what the cap has left
        at_grace_end = [
            item
            for item in schedule
            if item.index not in fee_charged and item.due_at + loan.grace_period < loan.at
        ]
        room, charged, total = loan.late_fee_room, [], 0
        for item in at_grace_end:
            fee = late_fee_amount(policy, item.unpaid, room - total)
            if fee == 0:
                break
            charged.append(item.index)
            total += fee
        key = f"late_fee:{business_date.isoformat()}"
        if total and key not in done:
            ref = fee_ref(chain_loan_id, business_date)
            plan.actions.append(
                Action(
                    key=key,
                    kind="late_fee",
                    details={
                        **base,
                        "installments": charged,
                        "amount": _money(total, currency),
                        "fee_ref": "0x" + ref.hex(),
                        "cap": _money(loan.max_late_fees, currency),
                        "assessed_before": _money(loan.late_fees_assessed, currency),
                    },
                    chain_call=("assess_late_fee", total, ref),
                )
            )

    if (
        loan.state == LoanState.DEFAULTED
        and dpd >= policy.write_off_after_dpd
        and "write_off_proposal" not in done
    ):
        plan.actions.append(Action(key="write_off_proposal", kind="write_off_proposal", details=delinquency))
    return plan


__all__ = [
    "PROVISION_BPS",
    "SECONDS_PER_DAY",
    "Action",
    "CbnClass",
    "CollectionsPolicy",
    "DayPlan",
    "DpdBucket",
    "DunningStep",
    "Installment",
    "LoanSnapshot",
    "Notification",
    "Promise",
    "PromiseStatus",
    "cbn_class",
    "close_of_business",
    "dates_between",
    "dpd_bucket",
    "fee_ref",
    "installments",
    "late_fee_amount",
    "local_date",
    "notification_id",
    "plan_day",
    "promise_outcome",
    "provision",
]
