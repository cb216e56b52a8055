"""Policy rules: each stable reason code and its effect."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from offchain.domain.underwriting.bank_statement import Transaction, analyze
from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.policy import (
    Effect,
    Exposures,
    KycStatus,
    KycSummary,
    PartnerClaims,
    PolicyConfig,
    RuleOutcome,
    affordability_rules,
    application_rules,
    chain_rules,
    data_rules,
    exposure_rules,
    kyc_rules,
    resolve,
    score_rules,
)

CONFIG = PolicyConfig()
NAIRA = 100


def codes(outcomes: list[RuleOutcome]) -> dict[str, Effect]:
    return {o.reason.code: o.effect for o in outcomes}


def monthly_statement(months: int, inflow: int, outflow: int, per_month: int = 4) -> list[Transaction]:
    rows = []
    balance = 10 * inflow
    for m in range(months):
        for i in range(per_month - 1):
            balance += inflow // (per_month - 1)
            rows.append(Transaction(date(2025, 1 + m, 1 + i), inflow // (per_month - 1), balance, "sales"))
        balance -= outflow
        rows.append(Transaction(date(2025, 1 + m, 20), -outflow, balance, "costs"))
    return rows


@pytest.mark.parametrize(
    ("kyc", "expected"),
    [
        (None, {"KYC_NOT_AVAILABLE": Effect.REFER}),
        (KycSummary(KycStatus.VERIFIED, risk_score=10), {}),
        (KycSummary(KycStatus.PENDING, risk_score=10), {"KYC_PENDING": Effect.REFER}),
        (KycSummary(KycStatus.REJECTED, risk_score=10), {"KYC_REJECTED": Effect.DECLINE}),
        (KycSummary(KycStatus.VERIFIED, risk_score=49), {}),
        (KycSummary(KycStatus.VERIFIED, risk_score=50), {"AML_REVIEW": Effect.REFER}),
        (KycSummary(KycStatus.VERIFIED, risk_score=80), {"SANCTIONS_MATCH": Effect.DECLINE}),
        (
            KycSummary(KycStatus.VERIFIED, risk_score=5, sanctions_hit=True),
            {"SANCTIONS_MATCH": Effect.DECLINE},
        ),
        (KycSummary(KycStatus.VERIFIED, risk_score=None), {"AML_REVIEW": Effect.REFER}),
    ],
)
def test_kyc_and_screening(kyc: KycSummary | None, expected: dict[str, Effect]) -> None:
    assert codes(kyc_rules(kyc, CONFIG)) == expected


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (ChainHistory(), {}),
        (ChainHistory(repaid_loans=3, max_days_past_due=40), {}),  # past lateness: scored, not a rule
        (ChainHistory(defaulted_loans=1, defaults_ever=1), {"ACTIVE_DEFAULT_ON_CHAIN": Effect.DECLINE}),
        (ChainHistory(written_off_loans=1, defaults_ever=1), {"WRITTEN_OFF_ON_CHAIN": Effect.DECLINE}),
        (ChainHistory(active_loans=1, current_days_past_due=3), {"ARREARS_ON_CHAIN": Effect.DECLINE}),
        (ChainHistory(repaid_loans=1, defaults_ever=1), {}),  # defaulted once, then repaid in full
    ],
)
def test_chain_history(history: ChainHistory, expected: dict[str, Effect]) -> None:
    assert codes(chain_rules(history)) == expected


def test_application__currency_and_minimum() -> None:
    assert codes(application_rules(amount=CONFIG.min_amount, currency="NGN", config=CONFIG)) == {}
    assert codes(application_rules(amount=CONFIG.min_amount - 1, currency="USD", config=CONFIG)) == {
        "CURRENCY_NOT_SUPPORTED": Effect.DECLINE,
        "AMOUNT_BELOW_MINIMUM": Effect.DECLINE,
    }


def test_thin_file__refer_by_default_decline_when_configured() -> None:
    short = analyze(monthly_statement(2, 1_000_000, 500_000))
    enough = analyze(monthly_statement(3, 1_000_000, 500_000))
    assert codes(data_rules(None, CONFIG)) == {"THIN_FILE": Effect.REFER}
    assert codes(data_rules(short, CONFIG)) == {"THIN_FILE": Effect.REFER}
    assert codes(data_rules(enough, CONFIG)) == {}
    strict = PolicyConfig(thin_file_action=Effect.DECLINE)
    assert codes(data_rules(None, strict)) == {"THIN_FILE": Effect.DECLINE}
    assert strict.version != CONFIG.version


def test_exposure_caps__binding_ones_are_reasons_and_the_smallest_room_is_the_limit() -> None:
    config = PolicyConfig(max_borrower_exposure=1_000_000 * NAIRA, max_partner_exposure=10_000_000 * NAIRA)
    claims = PartnerClaims("p1", credit_limit=5_000_000 * NAIRA)
    exposures = Exposures(borrower_outstanding=700_000 * NAIRA, partner_outstanding=4_800_000 * NAIRA)

    outcomes, limit = exposure_rules(
        amount=250_000 * NAIRA, exposures=exposures, claims=claims, config=config
    )

    assert codes(outcomes) == {"PARTNER_CREDIT_LIMIT": Effect.CAP}  # 200k room < 250k; borrower has 300k
    assert outcomes[0].cap == limit == 200_000 * NAIRA

    outcomes, limit = exposure_rules(
        amount=400_000 * NAIRA, exposures=exposures, claims=PartnerClaims("p1"), config=config
    )
    assert codes(outcomes) == {"BORROWER_EXPOSURE_CAP": Effect.CAP}
    assert limit == 300_000 * NAIRA

    _, limit = exposure_rules(
        amount=1, exposures=Exposures(borrower_outstanding=2_000_000 * NAIRA), claims=claims, config=config
    )
    assert limit == 0  # over the cap already: no room, never negative


def test_affordability__caps_principal_at_the_rating_apr() -> None:
    # net cash flow 500k/month: 50 % => 250k installment; 12 months at 24 % APR
    statement = analyze(monthly_statement(6, 1_500_000 * NAIRA, 1_000_000 * NAIRA))
    outcomes, found = affordability_rules(
        amount=10_000_000 * NAIRA, tenor_months=12, rating="A", statement=statement, config=CONFIG
    )
    assert found.max_installment == 250_000 * NAIRA and found.apr_bps == 2_400
    assert codes(outcomes) == {"AFFORDABILITY_CAP": Effect.CAP}
    # 25_000_000 * (1 - 1.02 ** -12) / 0.02 = 264_383_530.4: N2.64m carries N250k a month
    assert outcomes[0].cap == found.max_principal == 264_383_530

    outcomes, _ = affordability_rules(
        amount=2_000_000 * NAIRA, tenor_months=12, rating="A", statement=statement, config=CONFIG
    )
    assert outcomes == []


def test_affordability__no_free_cash_flow_declines() -> None:
    statement = analyze(monthly_statement(6, 1_000_000, 1_000_000))
    outcomes, found = affordability_rules(
        amount=CONFIG.min_amount, tenor_months=6, rating="B", statement=statement, config=CONFIG
    )
    assert codes(outcomes) == {"NO_REPAYMENT_CAPACITY": Effect.DECLINE}
    assert found.max_installment == 0


def test_score_cutoffs() -> None:
    assert codes(score_rules("E", CONFIG)) == {"SCORE_BELOW_CUTOFF": Effect.DECLINE}
    assert codes(score_rules("D", CONFIG)) == {}
    assert codes(score_rules("D", PolicyConfig(refer_ratings=frozenset({"D"})))) == {
        "SCORE_REFER": Effect.REFER
    }


def test_resolve__decline_beats_refer_beats_approve() -> None:
    refer = kyc_rules(KycSummary(KycStatus.PENDING, risk_score=1), CONFIG)
    decline = chain_rules(ChainHistory(defaulted_loans=1))
    assert resolve([], limit=10**9, config=CONFIG) == ("approved", 10**9)
    assert resolve(refer, limit=10**9, config=CONFIG) == ("refer", 10**9)
    assert resolve(refer + decline, limit=10**9, config=CONFIG) == ("declined", 0)
    assert resolve([], limit=CONFIG.min_amount - 1, config=CONFIG) == ("declined", 0)


def test_policy_version__stable_and_content_addressed() -> None:
    assert PolicyConfig().version == PolicyConfig().version
    assert PolicyConfig(min_dscr_bps=13_000).version != PolicyConfig().version
    assert PolicyConfig().version.startswith("pol-")


def test_kyc_summary_years_are_decimal() -> None:
    assert KycSummary(KycStatus.VERIFIED, years_in_business=Decimal("2.5")).years_in_business == Decimal(
        "2.5"
    )
