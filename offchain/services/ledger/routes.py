"""Ledger API (8006, and the gateway): a partner's own balances, postings and loan statements
(credit:audit:read); every account, the trial balance and reconciliation for operators."""

# No `from __future__ import annotations`: FastAPI must see the closures in the dependencies.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.deps import DatabaseDep
from offchain.platform.inputs import NO_NUL
from offchain.platform.problems import Problem
from offchain.services.ledger import schemas, usecases
from offchain.services.ledger.reconciliation import report_dict

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])

Auditor = Annotated[auth.Actor, Depends(auth.partner_or_operator(auth.AUDIT_READ, auth.OPERATIONS_READ))]
OperatorRead = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_READ))]
OperatorManage = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
Currency = Annotated[Literal["NGN", "USD"], Query(description="ISO 4217 alpha code")]
# the chart of accounts (offchain.domain.ledger), so a code outside it is a schema violation
ACCOUNT_CODE = (
    r"^(suspense:unmatched|income:(fees|interest)|expense:credit_losses"
    r"|loan:[A-Za-z0-9_.\-]{1,100}:(receivable|unearned|held)|borrower:[A-Za-z0-9_.\-]{1,100}:credit"
    r"|partner:[A-Za-z0-9_.\-]{1,100}:funding|rail:(paystack|sme):(clearing|fees|fees_recovered))$"
)
LOAN_KEY = (
    r"^(0x[0-9a-fA-F]{64}|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$"
)
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks credit:audit:read (or is not an operator's)", **PROBLEM},
    404: {"description": "not found (or another partner's)", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
}


@router.get("/accounts/{code}/balance", response_model=schemas.AccountBalance, responses=ERRORS)
async def account_balance(
    code: Annotated[str, Path(max_length=200, pattern=ACCOUNT_CODE)],
    currency: Currency,
    principal: Auditor,
    db: DatabaseDep,
) -> dict[str, Any]:
    return await usecases.account_balance(db=db, principal=principal, code=code, currency=currency)


@router.get("/postings/{posting_id}", response_model=schemas.PostingOut, responses=ERRORS)
async def get_posting(
    posting_id: Annotated[str, Path(max_length=200, pattern=NO_NUL)], principal: Auditor, db: DatabaseDep
) -> dict[str, Any]:
    return await usecases.posting(db=db, principal=principal, posting_id=posting_id)


@router.get("/trial-balance", response_model=schemas.TrialBalanceOut, responses=ERRORS)
async def trial_balance(
    operator: OperatorRead,
    db: DatabaseDep,
    currency: Annotated[Literal["NGN", "USD"] | None, Query()] = None,
    accounts: bool = True,
) -> dict[str, Any]:
    return await usecases.trial_balance(db=db, currency=currency, accounts=accounts)


@router.get("/loans/{loan_id}", response_model=schemas.LoanLedgerOut, responses=ERRORS)
async def loan_ledger(
    loan_id: Annotated[str, Path(max_length=100, pattern=LOAN_KEY, description="loan UUID or 0x chain id")],
    principal: Auditor,
    db: DatabaseDep,
) -> dict[str, Any]:
    return await usecases.loan_ledger(db=db, principal=principal, loan=loan_id)


@router.get("/reconciliation", response_model=schemas.ReconciliationOut, responses=ERRORS)
async def latest_reconciliation(
    operator: OperatorRead, db: DatabaseDep, run_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> dict[str, Any]:
    return await usecases.latest_reconciliation(db=db, run_id=run_id)


@router.post(
    "/reconciliation/runs",
    status_code=201,
    response_model=schemas.ReconciliationOut,
    responses={409: {"description": "a run is in progress", **PROBLEM}, **ERRORS},
)
async def run_reconciliation(request: Request, operator: OperatorManage, db: DatabaseDep) -> dict[str, Any]:
    report = await usecases.run_reconciliation(
        request.app.state.resources,
        trigger="manual",
        # the ledger service's gauges; the gateway serves this route without them
        metrics=getattr(request.app.state, "ledger_metrics", None),
    )
    if report is None:
        raise Problem(
            409, "urn:caas:problem:reconciliation-running", title="A reconciliation run is in progress"
        )
    body = report_dict(report)
    async with db.worker_session() as session:
        await record_action(
            session,
            actor=operator.actor,
            action="ledger.reconciliation_run",
            subject_type="reconciliation_run",
            subject_id=str(body.get("run_id") or body.get("id") or "manual"),
            partner_id=None,
            status=body.get("status"),
        )
    return body
