"""Transaction monitoring rules for money movement: pure functions over facts the services gather.

A rule returns the flags it raises (empty when the transaction looks ordinary). A flagged payout
is held for manual review before any money leaves; a flagged repayment is still recorded (the
money has arrived) and the flag goes to review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median


@dataclass(frozen=True)
class MonitoringPolicy:
    # one payout account used by more borrowers than this is a mule/fraud signal
    max_borrowers_per_payout_account: int = 1
    # payouts to one borrower within the velocity window
    max_payouts_per_borrower: int = 5
    payout_window_days: int = 30
    # a payout this many times the partner's median payout (once it has enough history)
    amount_anomaly_ratio: float = 5.0
    amount_anomaly_min_history: int = 10
    # repayments into one loan within the window (card testing, split-payment laundering)
    max_payments_per_loan_per_hour: int = 20
    # a single payment this many times the loan's total due
    payment_anomaly_ratio: float = 2.0


@dataclass(frozen=True)
class Flag:
    rule: str
    detail: str


@dataclass(frozen=True)
class PayoutFacts:
    amount: int
    borrowers_on_account: int  # distinct borrowers whose payouts go to this account, this one included
    borrower_payouts_in_window: int  # this borrower's payouts in the window, this one included
    partner_recent_amounts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PaymentFacts:
    amount: int
    loan_total_due: int
    payments_into_loan_last_hour: int  # this one included
    payer_user_id: str | None  # who the provider says paid (SME user id), when it says
    borrower_user_id: str | None  # the loan's borrower


def payout_flags(facts: PayoutFacts, policy: MonitoringPolicy) -> list[Flag]:
    flags = []
    if facts.borrowers_on_account > policy.max_borrowers_per_payout_account:
        flags.append(
            Flag(
                "shared_payout_account",
                f"the payout account receives payouts of {facts.borrowers_on_account} borrowers "
                f"(limit {policy.max_borrowers_per_payout_account})",
            )
        )
    if facts.borrower_payouts_in_window > policy.max_payouts_per_borrower:
        flags.append(
            Flag(
                "payout_velocity",
                f"{facts.borrower_payouts_in_window} payouts to this borrower in "
                f"{policy.payout_window_days} days "
                f"(limit {policy.max_payouts_per_borrower})",
            )
        )
    history = facts.partner_recent_amounts
    if len(history) >= policy.amount_anomaly_min_history:
        typical = median(history)
        if typical > 0 and facts.amount > policy.amount_anomaly_ratio * typical:
            flags.append(
                Flag(
                    "payout_amount_anomaly",
                    f"{facts.amount} is more than {policy.amount_anomaly_ratio}x "
                    f"the partner's median payout {typical:.0f}",
                )
            )
    return flags


def payment_flags(facts: PaymentFacts, policy: MonitoringPolicy) -> list[Flag]:
    flags = []
    if facts.payments_into_loan_last_hour > policy.max_payments_per_loan_per_hour:
        flags.append(
            Flag(
                "payment_velocity",
                f"{facts.payments_into_loan_last_hour} payments into the loan within an hour "
                f"(limit {policy.max_payments_per_loan_per_hour})",
            )
        )
    if facts.loan_total_due > 0 and facts.amount > policy.payment_anomaly_ratio * facts.loan_total_due:
        flags.append(
            Flag(
                "payment_amount_anomaly",
                f"{facts.amount} is more than {policy.payment_anomaly_ratio}x "
                f"the loan's total due {facts.loan_total_due}",
            )
        )
    if facts.payer_user_id and facts.borrower_user_id and facts.payer_user_id != facts.borrower_user_id:
        flags.append(Flag("payer_mismatch", "the payer is not the loan's borrower"))
    return flags
