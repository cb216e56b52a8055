"""The assess use case: policy, affordability and scorecard composed into one decision."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.domain.underwriting.bank_statement import StatementAnalysis, Transaction, analyze
from offchain.domain.underwriting.decision import Application, DecisionStatus
from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.policy import Exposures, KycStatus, KycSummary, PartnerClaims, PolicyConfig
from offchain.services.underwriting.model_store import load_current
from offchain.services.underwriting.usecases import assess

MODEL = load_current()
NAIRA = 100
VERIFIED = KycSummary(KycStatus.VERIFIED, risk_score=10, years_in_business=Decimal(5), credit_score=700)


def healthy(months: int = 6, *, nsf: bool = False) -> StatementAnalysis:
    rows = []
    balance = 1_500_000 * NAIRA
    for month in range(1, months + 1):
        for day, amount, text in (
            (3, 2_000_000, "POS SETTLEMENT"),
            (5, -600_000, "SUPPLIER"),
            (10, -100_000, "CARBON LOAN REPAYMENT"),
            (15, -400_000, "SALARIES"),
            (21, -300_000, "RENT"),
        ):
            balance += amount * NAIRA
            rows.append(Transaction(date(2025, month, day), amount * NAIRA, balance, text))
    if nsf:
        rows.append(Transaction(date(2025, months, 25), -2_500, balance - 2_500, "NSF charge"))
    return analyze(rows)


def decide(**overrides: Any):
    kwargs: dict[str, Any] = {
        "application": Application(2_000_000 * NAIRA, "NGN", 12, "working capital"),
        "kyc": VERIFIED,
        "statement": healthy(),
        "chain_history": ChainHistory(),
        "exposures": Exposures(),
        "partner_claims": PartnerClaims("partner-1"),
        "model": MODEL,
    }
    return assess(**{**kwargs, **overrides})


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def test_healthy_applicant__approved_for_the_requested_amount() -> None:
    d = decide()

    assert d.status is DecisionStatus.APPROVED
    assert d.approved_amount == d.requested_amount == 2_000_000 * NAIRA
    assert d.risk_rating == "A" and d.pd < Decimal("0.10")
    # net cash flow N600k: 50 % is N300k; DSCR floor allows (700k / 1.25) - 100k = N460k
    assert d.max_monthly_installment == 300_000 * NAIRA
    assert d.max_amount > d.requested_amount
    assert all(r.source in ("scorecard", "onchain") for r in d.reasons)
    assert d.model_version == MODEL.version and d.policy_version == PolicyConfig().version
    assert d.features["affordability"]["dscr_bps"] > 12_500
    json.dumps(d.to_dict())  # JSON-ready: the caller stores it as is


def test_amount_above_affordability__approved_for_less_with_the_reason() -> None:
    d = decide(application=Application(20_000_000 * NAIRA, "NGN", 12))
    assert d.status is DecisionStatus.APPROVED
    assert codes(d)[0] == "AFFORDABILITY_CAP"
    assert d.approved_amount == d.max_amount < 20_000_000 * NAIRA
    assert d.max_amount == d.features["affordability"]["max_principal_at_tenor"]


def test_partner_credit_limit_binds() -> None:
    d = decide(
        partner_claims=PartnerClaims("partner-1", credit_limit=10_000_000 * NAIRA),
        exposures=Exposures(partner_outstanding=9_000_000 * NAIRA),
    )
    assert d.status is DecisionStatus.APPROVED
    assert codes(d)[0] == "PARTNER_CREDIT_LIMIT"
    assert d.max_amount == d.approved_amount == 1_000_000 * NAIRA


def test_thin_file__referred_without_affordability() -> None:
    d = decide(statement=None)
    assert d.status is DecisionStatus.REFER
    assert codes(d)[0] == "THIN_FILE"
    assert d.max_monthly_installment is None and d.approved_amount == 0
    assert d.features["statement"] is None


@pytest.mark.parametrize(
    ("overrides", "first"),
    [
        ({"kyc": KycSummary(KycStatus.REJECTED, risk_score=10)}, "KYC_REJECTED"),
        ({"kyc": KycSummary(KycStatus.VERIFIED, risk_score=95)}, "SANCTIONS_MATCH"),
        ({"chain_history": ChainHistory(defaulted_loans=1, defaults_ever=1)}, "ACTIVE_DEFAULT_ON_CHAIN"),
        ({"exposures": Exposures(borrower_outstanding=50_000_000 * NAIRA)}, "BORROWER_EXPOSURE_CAP"),
    ],
)
def test_declines_carry_their_reason_first(overrides: dict[str, Any], first: str) -> None:
    d = decide(**overrides)
    assert d.status is DecisionStatus.DECLINED
    assert codes(d)[0] == first
    assert d.max_amount == d.approved_amount == 0


def test_decline_outranks_refer() -> None:
    d = decide(
        kyc=KycSummary(KycStatus.PENDING, risk_score=10), chain_history=ChainHistory(written_off_loans=1)
    )
    assert d.status is DecisionStatus.DECLINED
    assert codes(d)[:2] == ["WRITTEN_OFF_ON_CHAIN", "KYC_PENDING"]


def test_poor_score__declined_with_adverse_factors() -> None:
    d = decide(
        application=Application(15_000_000 * NAIRA, "NGN", 48),
        kyc=KycSummary(KycStatus.VERIFIED, risk_score=10),
        statement=healthy(nsf=True),
        chain_history=ChainHistory(repaid_loans=1, max_days_past_due=70),
    )
    assert d.status is DecisionStatus.DECLINED and d.risk_rating == "E"
    assert "SCORE_BELOW_CUTOFF" in codes(d)
    adverse = [r for r in d.reasons if r.source in ("scorecard", "onchain")]
    assert 1 <= len(adverse) <= 4
    assert "SC_TENOR" in codes(d) and "SC_ACCOUNT_CONDUCT" in codes(d)


def test_repaid_history_on_chain_raises_the_score() -> None:
    plain = decide()
    seasoned = decide(chain_history=ChainHistory(repaid_loans=3))
    assert seasoned.score == plain.score + 45
    assert seasoned.pd < plain.pd


@settings(max_examples=25, deadline=None)
@given(
    amount=st.integers(50_000 * NAIRA, 50_000_000 * NAIRA),
    tenor=st.integers(1, 60),
    repaid=st.integers(0, 5),
    dpd=st.integers(0, 120),
    risk=st.integers(0, 100),
)
def test_decisions_are_deterministic_for_a_model_version(
    amount: int, tenor: int, repaid: int, dpd: int, risk: int
) -> None:
    kwargs = {
        "application": Application(amount, "NGN", tenor),
        "kyc": KycSummary(KycStatus.VERIFIED, risk_score=risk, years_in_business=Decimal(2)),
        "chain_history": ChainHistory(repaid_loans=repaid, max_days_past_due=dpd),
    }
    first, second = decide(**kwargs), decide(**kwargs)
    assert first == second
    assert first.to_dict() == second.to_dict()
    assert first.approved_amount <= first.max_amount
    if first.status is DecisionStatus.APPROVED:
        assert 0 < first.approved_amount <= amount
