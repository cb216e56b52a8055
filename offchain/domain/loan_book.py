"""The on-chain LoanBook's rules, in plain Python.

This is the reference the contract is tested against (the Hypothesis state
machine drives both) and what the backend uses to reason about a loan without
a node round-trip: the schedule, amount due and days past due follow DESIGN §3
to the kobo.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

SECONDS_PER_DAY = 86_400
MAX_AMOUNT = 2**96 - 1
MAX_LATE_FEES = 2**80 - 1


class LoanState(IntEnum):
    NONE = 0
    PENDING = 1
    APPROVED = 2
    ACTIVE = 3
    REPAID = 4
    DEFAULTED = 5
    WRITTEN_OFF = 6
    CANCELLED = 7


IN_REPAYMENT = frozenset({LoanState.ACTIVE, LoanState.DEFAULTED})
# States that take repayments: a WRITTEN_OFF loan takes recoveries (and stays WRITTEN_OFF).
REPAYABLE = IN_REPAYMENT | {LoanState.WRITTEN_OFF}

# Every transition the contract allows: (from, to).
LEGAL_TRANSITIONS = frozenset(
    {
        (LoanState.NONE, LoanState.PENDING),
        (LoanState.PENDING, LoanState.APPROVED),
        (LoanState.PENDING, LoanState.CANCELLED),
        (LoanState.APPROVED, LoanState.CANCELLED),
        (LoanState.APPROVED, LoanState.ACTIVE),
        (LoanState.ACTIVE, LoanState.REPAID),
        (LoanState.ACTIVE, LoanState.DEFAULTED),
        (LoanState.DEFAULTED, LoanState.REPAID),
        (LoanState.DEFAULTED, LoanState.WRITTEN_OFF),
        # a reversal reopens a repaid loan in the state it closed from
        (LoanState.REPAID, LoanState.ACTIVE),
        (LoanState.REPAID, LoanState.DEFAULTED),
    }
)


@dataclass(frozen=True)
class Allocation:
    """How one repayment splits: late fees first, then the schedule."""

    fee_part: int
    scheduled_part: int


@dataclass
class Loan:
    currency: int
    principal: int
    total_due: int
    installment_count: int
    installment_interval: int
    grace_period: int
    max_late_fees: int
    state: LoanState = LoanState.PENDING
    ever_defaulted: bool = False
    disbursed_at: int = 0
    scheduled_repaid: int = 0
    late_fees_assessed: int = 0
    late_fees_paid: int = 0

    # -- schedule -------------------------------------------------------------

    @property
    def installment_base(self) -> int:
        return self.total_due // self.installment_count

    def installment_amount(self, index: int) -> int:
        """Installment `index` (1-based); the last one takes the remainder."""
        if not 1 <= index <= self.installment_count:
            raise ValueError(f"installment {index} outside 1..{self.installment_count}")
        if index < self.installment_count:
            return self.installment_base
        return self.total_due - self.installment_base * (self.installment_count - 1)

    def due_at(self, index: int) -> int:
        return self.disbursed_at + index * self.installment_interval

    def scheduled_due_by(self, at: int) -> int:
        """Sum of the installments due at or before `at`."""
        if at < self.disbursed_at + self.installment_interval:
            return 0
        due = (at - self.disbursed_at) // self.installment_interval
        if due >= self.installment_count:
            return self.total_due
        return due * self.installment_base

    def oldest_unpaid_due_at(self) -> int | None:
        if self.scheduled_repaid >= self.total_due:
            return None
        index = min(self.scheduled_repaid // self.installment_base + 1, self.installment_count)
        return self.due_at(index)

    # -- figures ---------------------------------------------------------------

    @property
    def repaid(self) -> int:
        return self.scheduled_repaid + self.late_fees_paid

    @property
    def outstanding(self) -> int:
        if self.state == LoanState.NONE:
            return 0
        return self.total_due + self.late_fees_assessed - self.repaid

    @property
    def unpaid_late_fees(self) -> int:
        return self.late_fees_assessed - self.late_fees_paid

    def amount_due(self, at: int) -> int:
        if self.state not in IN_REPAYMENT:
            return 0
        behind = max(0, self.scheduled_due_by(at) - self.scheduled_repaid)
        return self.unpaid_late_fees + behind

    def is_past_due(self, at: int) -> bool:
        due_at = self.oldest_unpaid_due_at()
        return due_at is not None and at > due_at + self.grace_period

    def days_past_due(self, at: int) -> int:
        if self.state not in IN_REPAYMENT or not self.is_past_due(at):
            return 0
        due_at = self.oldest_unpaid_due_at()
        assert due_at is not None
        return (at - due_at) // SECONDS_PER_DAY

    # -- transitions (callers check authorisation; these check the loan) -------

    def allocate(self, amount: int) -> Allocation:
        fee_part = min(amount, self.unpaid_late_fees)
        return Allocation(fee_part=fee_part, scheduled_part=amount - fee_part)

    def approve(self) -> None:
        self._require(self.state == LoanState.PENDING, "not pending")
        self.state = LoanState.APPROVED

    def cancel(self) -> None:
        self._require(self.state in (LoanState.PENDING, LoanState.APPROVED), "not cancellable")
        self.state = LoanState.CANCELLED

    def disburse(self, at: int) -> None:
        self._require(self.state == LoanState.APPROVED, "not approved")
        self.state = LoanState.ACTIVE
        self.disbursed_at = at

    def repay(self, amount: int) -> Allocation:
        """Late fees first, then the schedule; a WRITTEN_OFF loan takes recoveries and stays so."""
        # the contract's check order, so a refusal names the same reason
        self._require(amount != 0, "amount is zero")
        self._require(self.state in REPAYABLE, "not repayable")
        self._require(amount <= self.outstanding, "amount exceeds outstanding")
        allocation = self.allocate(amount)
        self.late_fees_paid += allocation.fee_part
        self.scheduled_repaid += allocation.scheduled_part
        if self.outstanding == 0 and self.state != LoanState.WRITTEN_OFF:
            self.state = LoanState.REPAID
        return allocation

    def reverse(self, amount: int) -> Allocation:
        """Undo a repayment of `amount`: off the scheduled part first, then off late fees paid.

        Fees are paid first, so they become unpaid last; this keeps "unpaid fees imply an unpaid
        installment", so a loan that owes anything falls past due in time (LoanBook natspec).
        Returns what came off each part (what `RepaymentReversed` carries).
        """
        scheduled_part = min(amount, self.scheduled_repaid)
        fee_part = amount - scheduled_part
        if fee_part > self.late_fees_paid:
            raise ValueError("reversal exceeds what was repaid")
        self.scheduled_repaid -= scheduled_part
        self.late_fees_paid -= fee_part
        if self.state == LoanState.REPAID:
            self.state = LoanState.DEFAULTED if self.ever_defaulted else LoanState.ACTIVE
        return Allocation(fee_part=fee_part, scheduled_part=scheduled_part)

    def assess_late_fee(self, amount: int, at: int) -> None:
        self._require(amount != 0, "amount is zero")
        self._require(self.state == LoanState.ACTIVE, "not active")
        self._require(self.is_past_due(at), "not past due")
        self._require(self.late_fees_assessed + amount <= self.max_late_fees, "late fee cap exceeded")
        self.late_fees_assessed += amount

    def mark_default(self, at: int, default_after_days: int) -> None:
        self._require(self.state == LoanState.ACTIVE, "not active")
        self._require(self.days_past_due(at) >= default_after_days, "not in default yet")
        self.state = LoanState.DEFAULTED
        self.ever_defaulted = True

    def write_off(self) -> None:
        self._require(self.state == LoanState.DEFAULTED, "not defaulted")
        self.state = LoanState.WRITTEN_OFF

    @staticmethod
    def _require(condition: bool, reason: str) -> None:
        if not condition:
            raise LoanRuleViolation(f"loan_book: {reason}")


class LoanRuleViolation(Exception):
    """The contract would revert with this reason."""
