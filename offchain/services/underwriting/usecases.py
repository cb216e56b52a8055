"""Underwriting use cases.

`assess` is the decision itself: pure, keyword-only, deterministic for a model version and policy
version — the caller fetches the inputs and persists the returned `Decision`. `assess_applicant`
gathers the inputs the underwriting service owns (the SME platform's KYC record, AML screen and bank
statement) and calls it.

How a decision is made:
1. the application, KYC, screening, on-chain history and data-sufficiency rules (policy.py);
2. the scorecard on the mapped applicant attributes plus the on-chain adjustment (scorecard.py),
   whose rating may decline or refer — unless the file is thin, when the score is reported but the
   thin-file rule decides;
3. the principal caps: exposure per borrower and partner, the partner's credit limit and
   affordability from the statement at the rating's APR over the requested tenor;
4. decline beats refer beats approve; `max_amount` is the smallest cap, `approved_amount` the
   requested amount within it. Reasons list the policy outcomes (declines, refers, binding caps)
   and then the scorecard's largest adverse factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from offchain.domain.underwriting.bank_statement import (
    StatementAnalysis,
    Transaction,
    analyze,
    annuity_installment,
)
from offchain.domain.underwriting.decision import Application, Decision, DecisionStatus
from offchain.domain.underwriting.features import ApplicantProfile, model_inputs
from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.policy import (
    Effect,
    Exposures,
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
from offchain.domain.underwriting.scorecard import ScorecardModel
from offchain.rails.sme.kyc import KycNotFound, SmeKycClient

DEFAULT_POLICY = PolicyConfig()
_EFFECT_ORDER = {Effect.DECLINE: 0, Effect.REFER: 1, Effect.CAP: 2}


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, int | str | bool) else str(value)


def assess(
    *,
    application: Application,
    kyc: KycSummary | None,
    statement: StatementAnalysis | None,
    chain_history: ChainHistory,
    exposures: Exposures,
    partner_claims: PartnerClaims,
    model: ScorecardModel,
    policy: PolicyConfig = DEFAULT_POLICY,
) -> Decision:
    profile = ApplicantProfile(
        amount=application.amount,
        currency=application.currency,
        tenor_months=application.tenor_months,
        statement=statement,
        years_in_business=kyc.years_in_business if kyc else None,
    )
    inputs = model_inputs(profile, model.feature_mapping)
    score = model.score(inputs, chain_history)

    thin_file = data_rules(statement, policy)
    outcomes: list[RuleOutcome] = [
        *application_rules(amount=application.amount, currency=application.currency, config=policy),
        *kyc_rules(kyc, policy),
        *chain_rules(chain_history),
        *thin_file,
        # A score on too little data is mostly its missing-value bins: reported, but the thin-file
        # rule (refer or decline, as configured) decides instead of the cutoff.
        *([] if thin_file else score_rules(score.rating, policy)),
    ]
    capped, exposure_room = exposure_rules(
        amount=application.amount, exposures=exposures, claims=partner_claims, config=policy
    )
    outcomes += capped
    limit = exposure_room
    affordability: dict[str, Any] = {"exposure_room": exposure_room}
    max_installment = None
    if statement is not None:
        unaffordable, found = affordability_rules(
            amount=application.amount,
            tenor_months=application.tenor_months,
            rating=score.rating,
            statement=statement,
            config=policy,
        )
        outcomes += unaffordable
        max_installment = found.max_installment
        requested_installment = None
        if found.max_principal is not None and found.apr_bps is not None:
            limit = min(limit, found.max_principal)
            requested_installment = annuity_installment(
                application.amount, application.tenor_months, found.apr_bps
            )
        affordability |= {
            "max_monthly_installment": found.max_installment,
            "max_principal_at_tenor": found.max_principal,
            "apr_bps": found.apr_bps,
            "requested_installment": requested_installment,
            "dscr_bps": statement.dscr_bps(requested_installment)
            if requested_installment is not None
            else None,
        }

    status, max_amount = resolve(outcomes, limit=limit, config=policy)
    ordered = sorted(outcomes, key=lambda o: _EFFECT_ORDER[o.effect])  # stable within an effect
    reasons = tuple(o.reason for o in ordered) + score.reasons
    return Decision(
        status=DecisionStatus(status),
        score=score.points,
        risk_rating=score.rating,
        pd=score.pd,
        currency=application.currency,
        requested_amount=application.amount,
        max_amount=max_amount,
        approved_amount=min(application.amount, max_amount) if status == DecisionStatus.APPROVED else 0,
        max_monthly_installment=max_installment,
        tenor_months=application.tenor_months,
        reasons=reasons,
        model_version=model.version,
        policy_version=policy.version,
        features={
            "model_inputs": {name: _jsonable(value) for name, value in inputs.items()},
            "scorecard": {
                key: value
                for key, value in score.to_dict().items()
                if key not in ("reasons", "model_version")
            },
            "affordability": affordability,
            "statement": statement.to_dict() if statement else None,
            "chain_history": chain_history.to_dict(),
            "kyc": {
                "status": kyc.status.value,
                "risk_score": kyc.risk_score,
                "sanctions_hit": kyc.sanctions_hit,
                "credit_score": kyc.credit_score,
                "years_in_business": _jsonable(kyc.years_in_business),
            }
            if kyc
            else None,
            "partner": {"partner_id": partner_claims.partner_id, "risk_rating": partner_claims.risk_rating},
        },
    )


async def assess_applicant(
    *,
    kyc_client: SmeKycClient,
    sme_user_id: str,
    application: Application,
    transactions: Sequence[Transaction] | None,
    chain_history: ChainHistory,
    exposures: Exposures,
    partner_claims: PartnerClaims,
    model: ScorecardModel,
    as_of: date,
    policy: PolicyConfig = DEFAULT_POLICY,
) -> Decision:
    """Fetch KYC (and the statement unless one was uploaded), then decide.

    Raises `KycUnavailable` when the SME platform cannot be reached: an outage is retried by the
    caller, not turned into a referral someone must work by hand.
    """
    try:
        record = await kyc_client.get_kyc(sme_user_id)
    except KycNotFound:
        record = None
    screen = None
    if record is not None:
        screen = await kyc_client.get_aml_screen(sme_user_id)
        if transactions is None:
            transactions = await kyc_client.get_bank_statement(sme_user_id)
    return assess(
        application=application,
        kyc=record.summary(as_of, screen) if record else None,
        statement=analyze(transactions) if transactions else None,
        chain_history=chain_history,
        exposures=exposures,
        partner_claims=partner_claims,
        model=model,
        policy=policy,
    )


def analyze_statement(
    *,
    transactions: Sequence[Transaction],
    proposed_installment: int | None,
    policy: PolicyConfig = DEFAULT_POLICY,
) -> dict[str, Any]:
    analysis = analyze(transactions)
    return {
        **analysis.to_dict(),
        "max_monthly_installment": analysis.max_installment(
            share_bps=policy.affordability_share_bps, min_dscr_bps=policy.min_dscr_bps
        ),
        "proposed_installment": proposed_installment,
        "dscr_bps": analysis.dscr_bps(proposed_installment) if proposed_installment is not None else None,
    }
