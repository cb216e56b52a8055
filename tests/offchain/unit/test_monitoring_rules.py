"""Transaction-monitoring rules at their boundaries."""

from __future__ import annotations

from offchain.domain.monitoring import (
    MonitoringPolicy,
    PaymentFacts,
    PayoutFacts,
    payment_flags,
    payout_flags,
)

POLICY = MonitoringPolicy()


def _payout(**overrides: object) -> PayoutFacts:
    facts = {
        "amount": 100_000,
        "borrowers_on_account": 1,
        "borrower_payouts_in_window": 1,
        "partner_recent_amounts": [],
    }
    return PayoutFacts(**{**facts, **overrides})  # type: ignore[arg-type]


def _payment(**overrides: object) -> PaymentFacts:
    facts = {
        "amount": 10_000,
        "loan_total_due": 100_000,
        "payments_into_loan_last_hour": 1,
        "payer_user_id": None,
        "borrower_user_id": "acme",
    }
    return PaymentFacts(**{**facts, **overrides})  # type: ignore[arg-type]


def test_ordinary_payout__no_flags() -> None:
    assert payout_flags(_payout(), POLICY) == []


def test_payout_account_of_two_borrowers__flagged() -> None:
    assert [f.rule for f in payout_flags(_payout(borrowers_on_account=2), POLICY)] == [
        "shared_payout_account"
    ]


def test_payout_velocity__at_the_limit_passes_one_more_is_flagged() -> None:
    limit = POLICY.max_payouts_per_borrower
    assert payout_flags(_payout(borrower_payouts_in_window=limit), POLICY) == []
    assert [f.rule for f in payout_flags(_payout(borrower_payouts_in_window=limit + 1), POLICY)] == [
        "payout_velocity"
    ]


def test_payout_amount_anomaly__needs_history_then_compares_with_the_median() -> None:
    history = [100_000] * (POLICY.amount_anomaly_min_history - 1)
    assert payout_flags(_payout(amount=10**9, partner_recent_amounts=history), POLICY) == []
    history.append(100_000)
    assert payout_flags(_payout(amount=500_000, partner_recent_amounts=history), POLICY) == []
    flags = payout_flags(_payout(amount=500_001, partner_recent_amounts=history), POLICY)
    assert [f.rule for f in flags] == ["payout_amount_anomaly"]


def test_payments__velocity_amount_and_payer() -> None:
    assert payment_flags(_payment(), POLICY) == []
    assert payment_flags(_payment(payer_user_id="acme"), POLICY) == []
    rules = [
        f.rule
        for f in payment_flags(
            _payment(payments_into_loan_last_hour=21, amount=200_001, payer_user_id="someone-else"), POLICY
        )
    ]
    assert rules == ["payment_velocity", "payment_amount_anomaly", "payer_mismatch"]
