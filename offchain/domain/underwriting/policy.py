"""Credit policy: the rules every application passes before and beside the score.

Each rule returns outcomes with a stable reason code and one effect:
- DECLINE: the application cannot be approved (rejected KYC, sanctions hit, default on chain, ...);
- REFER: a person must look (KYC pending, AML review, thin file when so configured);
- CAP: the rule limits the principal (exposure caps, the partner's credit limit, affordability).

Codes (stable; clients may branch on them):

| code                        | effect          | when |
|-----------------------------|-----------------|------|
| KYC_NOT_AVAILABLE           | refer           | no KYC record for the borrower |
| KYC_PENDING                 | refer           | KYC not finished |
| KYC_REJECTED                | decline         | KYC rejected |
| SANCTIONS_MATCH             | decline         | sanctions hit, or risk score >= aml_decline_score |
| AML_REVIEW                  | refer           | risk score >= aml_refer_score, or no screen result |
| ACTIVE_DEFAULT_ON_CHAIN     | decline         | a loan of the borrower is DEFAULTED on the loan book |
| WRITTEN_OFF_ON_CHAIN        | decline         | a loan of the borrower was written off |
| ARREARS_ON_CHAIN            | decline         | a running loan is past due now |
| CURRENCY_NOT_SUPPORTED      | decline         | the application is not in the policy's currency |
| AMOUNT_BELOW_MINIMUM        | decline         | requested below the product minimum |
| THIN_FILE                   | refer / decline | no statement, or under the minimum months/rows |
| BORROWER_EXPOSURE_CAP       | cap             | borrower's outstanding + new > per-borrower cap |
| PARTNER_EXPOSURE_CAP        | cap             | partner's outstanding + new > per-partner cap |
| PARTNER_CREDIT_LIMIT        | cap             | partner's outstanding + new > its `creditLimit` claim |
| AFFORDABILITY_CAP           | cap             | the amount's installment exceeds what cash flow carries |
| NO_REPAYMENT_CAPACITY       | decline         | cash flow carries no new installment at all |
| SCORE_BELOW_CUTOFF          | decline         | the risk rating is in `decline_ratings` |
| SCORE_REFER                 | refer           | the risk rating is in `refer_ratings` |

A cap that leaves less than `min_amount` turns into a decline with the cap's own code, so the
applicant learns which limit bound.

`PolicyConfig.version` is a hash of the configuration: a decision records the policy version beside
the model version, and the two together reproduce it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from offchain.domain.underwriting.bank_statement import StatementAnalysis, max_principal
from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.reasons import Reason, Source

_NAIRA = 100


class KycStatus(StrEnum):
    VERIFIED = "verified"
    PENDING = "pending"
    REJECTED = "rejected"


class Effect(StrEnum):
    DECLINE = "decline"
    REFER = "refer"
    CAP = "cap"


@dataclass(frozen=True, slots=True)
class KycSummary:
    """What policy and scoring read from the SME platform's KYC record."""

    status: KycStatus
    risk_score: int | None = None  # the KYC provider's AML risk score, 0 (low) .. 100 (high)
    sanctions_hit: bool = False
    years_in_business: Decimal | None = None  # verified only
    credit_score: int | None = None


@dataclass(frozen=True, slots=True)
class Exposures:
    """Outstanding principal already committed, in the application's currency (minor units).

    Includes loans approved or pending disbursement, not only what the chain shows as outstanding.
    """

    borrower_outstanding: int = 0
    partner_outstanding: int = 0


@dataclass(frozen=True, slots=True)
class PartnerClaims:
    """The partner's JWT claims that bear on credit (DESIGN §4)."""

    partner_id: str
    credit_limit: int | None = None  # caps the partner's total outstanding, minor units
    risk_rating: str | None = None


@dataclass(frozen=True)
class PolicyConfig:
    currency: str = "NGN"
    min_amount: int = 50_000 * _NAIRA
    max_borrower_exposure: int = 50_000_000 * _NAIRA
    max_partner_exposure: int = 1_000_000_000 * _NAIRA
    aml_refer_score: int = 50
    aml_decline_score: int = 80
    min_statement_months: int = 3
    min_statement_transactions: int = 10
    thin_file_action: Effect = Effect.REFER
    # Affordability: a new installment takes at most this share of net monthly cash flow and keeps
    # DSCR at or above the floor; the principal it carries is priced at the rating's APR.
    affordability_share_bps: int = 5_000
    min_dscr_bps: int = 12_500
    # Keep in line with the offers' pricing table (offchain/domain/offers/pricing.py).
    affordability_apr_bps: Mapping[str, int] = field(
        default_factory=lambda: {"A": 2_400, "B": 3_000, "C": 3_600, "D": 4_800}
    )
    decline_ratings: frozenset[str] = frozenset({"E"})
    refer_ratings: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.thin_file_action not in (Effect.REFER, Effect.DECLINE):
            raise ValueError("thin_file_action must be refer or decline")
        if self.min_dscr_bps <= 0 or not 0 < self.affordability_share_bps <= 10_000:
            raise ValueError("min_dscr_bps must be positive and affordability_share_bps in (0, 10000]")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["affordability_apr_bps"] = dict(sorted(self.affordability_apr_bps.items()))
        data["decline_ratings"] = sorted(self.decline_ratings)
        data["refer_ratings"] = sorted(self.refer_ratings)
        data["thin_file_action"] = self.thin_file_action.value
        return data

    @property
    def version(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "pol-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    reason: Reason
    effect: Effect
    cap: int | None = None  # for CAP: the largest principal this rule allows


def _outcome(code: str, message: str, effect: Effect, cap: int | None = None) -> RuleOutcome:
    source = Source.AFFORDABILITY if code in ("AFFORDABILITY_CAP", "NO_REPAYMENT_CAPACITY") else Source.POLICY
    return RuleOutcome(Reason(code, message, source), effect, cap)


def kyc_rules(kyc: KycSummary | None, config: PolicyConfig) -> list[RuleOutcome]:
    if kyc is None:
        return [_outcome("KYC_NOT_AVAILABLE", "No KYC record found for the borrower", Effect.REFER)]
    out = []
    if kyc.status is KycStatus.REJECTED:
        out.append(_outcome("KYC_REJECTED", "Identity verification (KYC) was rejected", Effect.DECLINE))
    elif kyc.status is KycStatus.PENDING:
        out.append(_outcome("KYC_PENDING", "Identity verification (KYC) is not complete", Effect.REFER))
    if kyc.sanctions_hit or (kyc.risk_score is not None and kyc.risk_score >= config.aml_decline_score):
        out.append(_outcome("SANCTIONS_MATCH", "Sanctions or AML screening did not clear", Effect.DECLINE))
    elif kyc.risk_score is None:
        out.append(_outcome("AML_REVIEW", "No AML screening result is available", Effect.REFER))
    elif kyc.risk_score >= config.aml_refer_score:
        out.append(_outcome("AML_REVIEW", "AML screening needs a manual review", Effect.REFER))
    return out


def chain_rules(history: ChainHistory) -> list[RuleOutcome]:
    out = []
    if history.defaulted_loans:
        out.append(
            _outcome(
                "ACTIVE_DEFAULT_ON_CHAIN",
                "A loan of the borrower is in default on the loan book",
                Effect.DECLINE,
            )
        )
    if history.written_off_loans:
        out.append(_outcome("WRITTEN_OFF_ON_CHAIN", "A loan of the borrower was written off", Effect.DECLINE))
    if history.current_days_past_due > 0:
        out.append(
            _outcome(
                "ARREARS_ON_CHAIN",
                f"A running loan is {history.current_days_past_due} days past due",
                Effect.DECLINE,
            )
        )
    return out


def application_rules(*, amount: int, currency: str, config: PolicyConfig) -> list[RuleOutcome]:
    out = []
    if currency != config.currency:
        out.append(
            _outcome("CURRENCY_NOT_SUPPORTED", f"Loans are offered in {config.currency} only", Effect.DECLINE)
        )
    if amount < config.min_amount:
        out.append(
            _outcome(
                "AMOUNT_BELOW_MINIMUM",
                f"The minimum loan amount is {config.min_amount} minor units",
                Effect.DECLINE,
            )
        )
    return out


def data_rules(statement: StatementAnalysis | None, config: PolicyConfig) -> list[RuleOutcome]:
    if statement is None:
        return [_outcome("THIN_FILE", "No bank statement history is available", config.thin_file_action)]
    if (
        statement.months < config.min_statement_months
        or statement.transaction_count < config.min_statement_transactions
    ):
        return [
            _outcome(
                "THIN_FILE",
                f"Bank statement covers {statement.months} month(s) and {statement.transaction_count} "
                f"transaction(s); at least {config.min_statement_months} months and "
                f"{config.min_statement_transactions} transactions are needed",
                config.thin_file_action,
            )
        ]
    return []


def exposure_rules(
    *, amount: int, exposures: Exposures, claims: PartnerClaims, config: PolicyConfig
) -> tuple[list[RuleOutcome], int]:
    """Outcomes for the caps the requested amount exceeds, and the principal all caps allow."""
    caps = [
        (
            "BORROWER_EXPOSURE_CAP",
            "The borrower's total exposure limit",
            config.max_borrower_exposure,
            exposures.borrower_outstanding,
        ),
        (
            "PARTNER_EXPOSURE_CAP",
            "The partner's exposure limit",
            config.max_partner_exposure,
            exposures.partner_outstanding,
        ),
    ]
    if claims.credit_limit is not None:
        caps.append(
            (
                "PARTNER_CREDIT_LIMIT",
                "The partner's credit limit",
                claims.credit_limit,
                exposures.partner_outstanding,
            )
        )
    out = []
    limit = None
    for code, what, cap, outstanding in caps:
        room = max(0, cap - outstanding)
        limit = room if limit is None else min(limit, room)
        if amount > room:
            out.append(_outcome(code, f"{what} leaves room for {room} minor units", Effect.CAP, room))
    assert limit is not None
    return out, limit


@dataclass(frozen=True, slots=True)
class Affordability:
    max_installment: int  # largest new monthly installment the cash flow carries
    max_principal: int | None  # at the requested tenor and the rating's APR; None if not lent to
    apr_bps: int | None


def affordability_rules(
    *, amount: int, tenor_months: int, rating: str, statement: StatementAnalysis, config: PolicyConfig
) -> tuple[list[RuleOutcome], Affordability]:
    installment = statement.max_installment(
        share_bps=config.affordability_share_bps, min_dscr_bps=config.min_dscr_bps
    )
    apr = config.affordability_apr_bps.get(rating)
    room = max_principal(installment, tenor_months, apr) if apr is not None else None
    found = Affordability(installment, room, apr)
    if installment <= 0:
        message = "Monthly cash flow leaves no room for a new repayment"
        return [_outcome("NO_REPAYMENT_CAPACITY", message, Effect.DECLINE)], found
    if room is not None and amount > room:
        message = f"Cash flow supports a monthly repayment of up to {installment} minor units"
        return [_outcome("AFFORDABILITY_CAP", message, Effect.CAP, room)], found
    return [], found


def score_rules(rating: str, config: PolicyConfig) -> list[RuleOutcome]:
    if rating in config.decline_ratings:
        return [
            _outcome(
                "SCORE_BELOW_CUTOFF", f"Credit score risk rating {rating} is below the cutoff", Effect.DECLINE
            )
        ]
    if rating in config.refer_ratings:
        return [
            _outcome("SCORE_REFER", f"Credit score risk rating {rating} needs a manual review", Effect.REFER)
        ]
    return []


def resolve(outcomes: Sequence[RuleOutcome], *, limit: int, config: PolicyConfig) -> tuple[str, int]:
    """(status, max_amount): decline beats refer beats approve; `limit` is the principal caps allow."""
    if any(o.effect is Effect.DECLINE for o in outcomes) or limit < config.min_amount:
        return "declined", 0
    if any(o.effect is Effect.REFER for o in outcomes):
        return "refer", limit
    return "approved", limit
