"""underwriting:8001 routes (internal: called by the gateway's applications flow and its
`sme.kyc.verified` pre-assessment, not by partners directly)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from offchain.domain.underwriting.bank_statement import StatementError, Transaction, parse_transactions
from offchain.domain.underwriting.decision import Application, Decision
from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.policy import Exposures, PartnerClaims, PolicyConfig
from offchain.domain.underwriting.scorecard import ScorecardModel
from offchain.platform.deps import ResourcesDep
from offchain.platform.inputs import MAX_MINOR_UNITS
from offchain.platform.problems import VALIDATION_ERROR, Problem
from offchain.rails.sme.kyc import KycError, KycProtocolError, KycUnavailable, SmeKycClient
from offchain.services.underwriting import usecases
from offchain.services.underwriting.schemas import (
    AssessmentRequest,
    ChainHistoryIn,
    DecisionOut,
    ExposuresIn,
    ModelOut,
    PartnerClaimsIn,
    PreAssessmentRequest,
    StatementAnalysisOut,
    TransactionIn,
)
from offchain.services.underwriting.statements import (
    CSV_TYPES,
    JSON_TYPES,
    MAX_UPLOAD_BYTES,
    UnsupportedMediaType,
    parse_upload,
)

router = APIRouter(prefix="/v1", tags=["underwriting"])

KYC_UNAVAILABLE = "urn:caas:problem:kyc-unavailable"
KYC_BAD_GATEWAY = "urn:caas:problem:kyc-bad-gateway"
RETRY_AFTER_S = 30


def get_model(request: Request) -> ScorecardModel:
    model: ScorecardModel = request.app.state.scorecard
    return model


def get_policy(request: Request) -> PolicyConfig:
    policy: PolicyConfig = request.app.state.policy
    return policy


def get_kyc_client(resources: ResourcesDep) -> SmeKycClient:
    # One client per process: the circuit breaker's state must outlive a request.
    client = resources.extras.get("sme_kyc")
    if client is None:
        try:
            client = SmeKycClient.from_settings(resources.settings.rails, http=resources.http)
        except KycUnavailable as exc:
            raise Problem(503, KYC_UNAVAILABLE, title="SME KYC not configured", detail=str(exc)) from exc
        resources.extras["sme_kyc"] = client
    return client


ModelDep = Annotated[ScorecardModel, Depends(get_model)]
PolicyDep = Annotated[PolicyConfig, Depends(get_policy)]
KycClientDep = Annotated[SmeKycClient, Depends(get_kyc_client)]


def _invalid(exc: StatementError) -> Problem:
    return Problem(
        422,
        VALIDATION_ERROR,
        title="Invalid bank statement",
        detail=f"{len(exc.errors)} field(s) failed validation",
        errors=exc.errors,
    )


async def _decide(
    *,
    kyc_client: SmeKycClient,
    sme_user_id: str,
    application: Application,
    transactions: list[Transaction] | None,
    chain_history: ChainHistoryIn,
    exposures: ExposuresIn,
    partner_claims: PartnerClaimsIn,
    model: ScorecardModel,
    policy: PolicyConfig,
) -> Decision:
    try:
        return await usecases.assess_applicant(
            kyc_client=kyc_client,
            sme_user_id=sme_user_id,
            application=application,
            transactions=transactions,
            chain_history=ChainHistory(**chain_history.model_dump()),
            exposures=Exposures(**exposures.model_dump()),
            partner_claims=PartnerClaims(
                partner_id=partner_claims.partner_id,
                credit_limit=partner_claims.credit_limit,
                risk_rating=partner_claims.risk_rating,
            ),
            model=model,
            as_of=datetime.now(UTC).date(),
            policy=policy,
        )
    except KycUnavailable as exc:
        raise Problem(
            503,
            KYC_UNAVAILABLE,
            title="SME KYC unavailable",
            detail=str(exc),
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc
    except KycProtocolError as exc:
        raise Problem(
            502, KYC_BAD_GATEWAY, title="SME KYC answered badly", detail=str(exc), errors=exc.errors or None
        ) from exc
    except KycError as exc:
        raise Problem(502, KYC_BAD_GATEWAY, title="SME KYC refused the request", detail=str(exc)) from exc


_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
KYC_ANSWERS: dict[int | str, dict[str, Any]] = {
    502: {"description": "the SME platform's KYC answered badly or refused the request", **_PROBLEM},
    503: {"description": "the SME platform's KYC is unreachable (Retry-After) or not configured", **_PROBLEM},
}


@router.post("/assessments", response_model=DecisionOut, responses=KYC_ANSWERS)
async def create_assessment(
    body: AssessmentRequest, model: ModelDep, policy: PolicyDep, kyc_client: KycClientDep
) -> dict[str, Any]:
    """Assess an application: policy rules, statement affordability, scorecard. Nothing is stored.

    503 `kyc-unavailable` (with Retry-After) when the SME platform cannot be reached: retry later.
    """
    try:
        transactions = (
            parse_transactions([line.record() for line in body.transactions])
            if body.transactions is not None
            else None
        )
    except StatementError as exc:
        raise _invalid(exc) from exc
    decision = await _decide(
        kyc_client=kyc_client,
        sme_user_id=body.application.borrower.sme_user_id,
        application=Application(
            amount=body.application.amount.value,
            currency=body.application.amount.currency,
            tenor_months=body.application.tenor_months,
            purpose=body.application.purpose,
        ),
        transactions=transactions,
        chain_history=body.chain_history,
        exposures=body.exposures,
        partner_claims=body.partner_claims,
        model=model,
        policy=policy,
    )
    return decision.to_dict()


@router.post("/pre-assessments", response_model=DecisionOut, responses=KYC_ANSWERS)
async def create_pre_assessment(
    body: PreAssessmentRequest, model: ModelDep, policy: PolicyDep, kyc_client: KycClientDep
) -> dict[str, Any]:
    """Eligibility before an application (the `sme.kyc.verified` flow): the borrower assessed for the
    product minimum over `tenor_months`; `max_amount` is the credit available now. The decision on a
    real application can differ: its amount is scored too."""
    decision = await _decide(
        kyc_client=kyc_client,
        sme_user_id=body.borrower.sme_user_id,
        application=Application(
            amount=policy.min_amount, currency=body.currency, tenor_months=body.tenor_months
        ),
        transactions=None,
        chain_history=body.chain_history,
        exposures=body.exposures,
        partner_claims=body.partner_claims,
        model=model,
        policy=policy,
    )
    return decision.to_dict()


_LINE = TransactionIn.model_json_schema()
_UPLOAD_BODY = {
    "required": True,
    "content": {
        **{
            kind: {
                "schema": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["transactions"],
                            "properties": {
                                "transactions": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 20_000,
                                    "items": _LINE,
                                }
                            },
                        },
                        {"type": "array", "minItems": 1, "maxItems": 20_000, "items": _LINE},
                    ]
                }
            }
            for kind in JSON_TYPES
        },
        **{kind: {"schema": {"type": "string"}} for kind in CSV_TYPES},
    },
    "description": 'JSON `{"transactions": [{"date", "amount", "balance"?, "description"?}]}` or CSV with '
    "a header `date,amount,balance,description`; amounts in integer minor units, inflows positive.",
}


@router.post(
    "/bank-statements/analyze",
    response_model=StatementAnalysisOut,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        413: {"description": f"a statement above {MAX_UPLOAD_BYTES} bytes", **_PROBLEM},
        415: {"description": "neither JSON nor CSV", **_PROBLEM},
        422: {"description": "the statement failed validation (errors: [{field, reason}])", **_PROBLEM},
    },
)
async def analyze_bank_statement(
    request: Request,
    policy: PolicyDep,
    proposed_installment: Annotated[
        int | None,
        Query(ge=0, le=MAX_MINOR_UNITS, description="monthly installment for the DSCR, minor units"),
    ] = None,
) -> dict[str, Any]:
    """Analyse an uploaded statement: inflows, volatility, NSF/overdrafts, debt service, DSCR."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise Problem(413, detail=f"statements are limited to {MAX_UPLOAD_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_UPLOAD_BYTES:
        raise Problem(413, detail=f"statements are limited to {MAX_UPLOAD_BYTES} bytes")
    try:
        transactions = parse_upload(body, request.headers.get("content-type"))
    except UnsupportedMediaType as exc:
        raise Problem(415, detail=str(exc)) from exc
    except StatementError as exc:
        raise _invalid(exc) from exc
    return usecases.analyze_statement(
        transactions=transactions, proposed_installment=proposed_installment, policy=policy
    )


@router.get("/models/current", response_model=ModelOut)
async def current_model(model: ModelDep, policy: PolicyDep) -> dict[str, Any]:
    """The scorecard in force: bins with points, scaling, rating bands, on-chain adjustment."""
    return {**model.to_dict(), "policy_version": policy.version}
