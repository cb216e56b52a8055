"""Reconciliation: the ledger against the chain (the book of record) and the indexer's projection.

For every loan in `caas_loans` (the loans the indexer has seen on chain), read straight from the
node, at one block, `LoanBook.loan_state` and `LoanBook.outstanding`, and compare:
- `ledger_vs_chain`: the loan's receivable (posted) with what the chain says is owed
  (`offchain.domain.ledger.expected_receivable`: the outstanding once disbursed, else zero);
- `projection_vs_chain`: the projection's state and outstanding with the contract's;
- `ledger_unknown_loan`: a receivable with a balance for a loan no projection row knows;
- `trial_balance` / `balance_drift`: the ledger's own soundness (debits = credits, kept balances
  = sum of entries);
- `stale_hold`: a pending posting older than `stale_hold_s` (a payout or repayment whose outcome
  never arrived: it must be posted or voided, not forgotten).
Further checks (the rail leg: payments against provider verification) register themselves with
`register_check` and append `Mismatch`es of their own kinds to the same report.

A ledger loan account may be keyed by the backend loan UUID or by the chain loan id; both are
looked up. A figure read while a payment is in flight can disagree for a moment; each mismatch
carries the block it was read at, and a mismatch that persists across runs is the one to chase.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.domain.ledger import Mismatch, expected_receivable
from offchain.domain.loan_book import LoanState
from offchain.domain.money import NUMERIC_TO_ALPHA
from offchain.persistence import ledger
from offchain.platform.db import Database
from offchain.platform.logging import get_logger

log = get_logger(__name__)

_OUTSTANDING = function_signature_to_4byte_selector("outstanding(bytes32)")
_STATE = function_signature_to_4byte_selector("loan_state(bytes32)")


@dataclass(frozen=True)
class LoanRow:
    id: uuid.UUID
    partner_id: uuid.UUID | None
    chain_loan_id: str
    state: int
    outstanding: int
    currency: str | None  # ISO alpha; None when the projection has no terms yet


@dataclass(frozen=True)
class ChainFigures:
    state: int
    outstanding: int


@dataclass
class ReconContext:
    """What a check gets: the loans, the chain's figures for them, and where to read more."""

    db: Database
    rpc: JsonRpc | None
    deployment: Deployment | None
    block: int | None
    loans: list[LoanRow]
    chain: dict[str, ChainFigures]  # by chain loan id
    stale_hold_s: float = 86_400.0


Check = Callable[[ReconContext], Awaitable[list[Mismatch]]]
_CHECKS: list[Check] = []


def register_check(check: Check) -> Check:
    """Add a check every run performs after the ledger's own (usable as a decorator)."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def registered_checks() -> list[Check]:
    return list(_CHECKS)


@dataclass
class Report:
    run_id: int | None
    block: int | None
    loans_checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "mismatches" if self.mismatches else "consistent"


def _call(selector: bytes, loan_id: str) -> str:
    return "0x" + (selector + abi_encode(["bytes32"], [bytes.fromhex(loan_id[2:])])).hex()


async def read_chain(
    rpc: JsonRpc, deployment: Deployment, loan_ids: Sequence[str], block: int
) -> dict[str, ChainFigures]:
    """`loan_state` and `outstanding` of every loan at `block`, in JSON-RPC batches."""
    tag = hex(block)
    to = deployment.loan_book_address
    calls: list[tuple[str, Sequence[Any]]] = []
    for loan_id in loan_ids:
        calls.append(("eth_call", [{"to": to, "data": _call(_STATE, loan_id)}, tag]))
        calls.append(("eth_call", [{"to": to, "data": _call(_OUTSTANDING, loan_id)}, tag]))
    results = await rpc.batch(calls)
    figures = {}
    for i, loan_id in enumerate(loan_ids):
        state, outstanding = results[2 * i], results[2 * i + 1]
        for value in (state, outstanding):
            if isinstance(value, RpcError):
                raise value
        figures[loan_id] = ChainFigures(
            state=abi_decode(["uint8"], bytes.fromhex(state[2:]))[0],
            outstanding=abi_decode(["uint256"], bytes.fromhex(outstanding[2:]))[0],
        )
    return figures


async def load_loans(session: AsyncSession) -> list[LoanRow]:
    rows = await session.execute(
        text(
            "SELECT id, partner_id, chain_loan_id, chain_state, outstanding, currency "
            "FROM caas_loans ORDER BY chain_loan_id"
        )
    )
    return [
        LoanRow(
            id=row.id,
            partner_id=row.partner_id,
            chain_loan_id=row.chain_loan_id,
            state=int(row.chain_state),
            outstanding=int(row.outstanding),
            currency=NUMERIC_TO_ALPHA.get(int(row.currency)) if row.currency is not None else None,
        )
        for row in rows
    ]


async def _receivables(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Posted receivable per ledger loan key and currency (loan accounts with any activity)."""
    rows = await session.execute(
        text(
            """
SELECT a.loan_id, a.currency, coalesce(sum(b.posted_debits - b.posted_credits), 0)
FROM caas_ledger_accounts a JOIN caas_ledger_balances b ON b.account = a.code AND b.currency = a.currency
WHERE a.kind = 'loan_receivable'
GROUP BY a.loan_id, a.currency
"""
        )
    )
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for loan_key, currency, amount in rows:
        found[loan_key][currency] = int(amount)
    return found


async def ledger_checks(context: ReconContext) -> list[Mismatch]:
    """The ledger against the chain and the projection against the chain."""
    mismatches: list[Mismatch] = []
    at = f"at block {context.block}"
    async with context.db.worker_session() as session:
        receivables = await _receivables(session)
        lines = await ledger.trial_balance(session)
        drift = await ledger.balance_drift(session)

    known: set[str] = set()
    for loan in context.loans:
        keys = (str(loan.id), loan.chain_loan_id)
        known.update(keys)
        chain = context.chain.get(loan.chain_loan_id)
        if chain is None:
            continue
        by_currency: dict[str, int] = defaultdict(int)
        for key in keys:
            for currency, amount in receivables.get(key, {}).items():
                by_currency[currency] += amount
        expected = expected_receivable(chain.state, chain.outstanding)
        currency = loan.currency or "NGN"
        actual = by_currency.pop(currency, 0)
        if actual != expected:
            mismatches.append(
                Mismatch(
                    "ledger_vs_chain",
                    loan.chain_loan_id,
                    expected,
                    actual,
                    f"loan {loan.id}: receivable {actual} {currency} in the ledger, chain state "
                    f"{LoanState(chain.state).name} with outstanding {chain.outstanding} {at}",
                )
            )
        for other, amount in by_currency.items():
            if amount:
                mismatches.append(
                    Mismatch(
                        "ledger_vs_chain",
                        loan.chain_loan_id,
                        0,
                        amount,
                        f"loan {loan.id} is in {currency} but its receivable holds {amount} {other}",
                    )
                )
        if loan.outstanding != chain.outstanding:
            mismatches.append(
                Mismatch(
                    "projection_vs_chain",
                    loan.chain_loan_id,
                    chain.outstanding,
                    loan.outstanding,
                    f"loan {loan.id}: outstanding in caas_loans vs LoanBook.outstanding {at}",
                )
            )
        if loan.state != chain.state:
            mismatches.append(
                Mismatch(
                    "projection_vs_chain",
                    loan.chain_loan_id,
                    LoanState(chain.state).name,
                    LoanState(loan.state).name if loan.state in LoanState._value2member_map_ else loan.state,
                    f"loan {loan.id}: state in caas_loans vs LoanBook.loan_state {at}",
                )
            )

    for loan_key, amounts in sorted(receivables.items()):
        if loan_key in known:
            continue
        for currency, amount in sorted(amounts.items()):
            if amount:
                mismatches.append(
                    Mismatch(
                        "ledger_unknown_loan",
                        loan_key,
                        0,
                        amount,
                        f"receivable of {amount} {currency} for a loan caas_loans does not know",
                    )
                )
    for line in lines:
        if not line.balanced:
            mismatches.append(
                Mismatch(
                    "trial_balance",
                    line.currency,
                    line.debits,
                    line.credits,
                    f"posted debits vs credits; pending {line.pending_debits} vs {line.pending_credits}",
                )
            )
    for row in drift:
        mismatches.append(
            Mismatch(
                "balance_drift",
                f"{row['account']} {row['currency']}",
                0,
                row["posted_debits"] - row["posted_credits"],
                f"kept balances differ from the entries: {row}",
            )
        )
    return mismatches


async def stale_holds(context: ReconContext) -> list[Mismatch]:
    async with context.db.worker_session() as session:
        rows = await session.execute(
            text(
                "SELECT posting_id, description, created_at, now() - created_at AS age "
                "FROM caas_ledger_postings WHERE status = 'pending' "
                "AND created_at < now() - make_interval(secs => :age) ORDER BY seq"
            ),
            {"age": context.stale_hold_s},
        )
        return [
            Mismatch(
                "stale_hold",
                row.posting_id,
                "posted or voided",
                "pending",
                f"{row.description!r} held since {row.created_at.isoformat()} ({row.age})",
            )
            for row in rows
        ]


async def _start_run(db: Database, trigger: str) -> int:
    async with db.worker_session() as session:
        run_id = (
            await session.execute(
                text(
                    "INSERT INTO caas_ledger_recon_runs (trigger, status) "
                    "VALUES (:trigger, 'running') RETURNING id"
                ),
                {"trigger": trigger},
            )
        ).scalar_one()
    return int(run_id)


async def _finish_run(db: Database, report: Report) -> None:
    async with db.worker_session() as session:
        if report.mismatches:
            await session.execute(
                text(
                    "INSERT INTO caas_ledger_mismatches (run_id, n, kind, subject, expected, actual, detail) "
                    "SELECT :run_id, n, kind, subject, expected, actual, detail "
                    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS m("
                    "n int, kind text, subject text, expected jsonb, actual jsonb, detail text)"
                ),
                {
                    "run_id": report.run_id,
                    "rows": json.dumps([{"n": n, **m.as_dict()} for n, m in enumerate(report.mismatches)]),
                },
            )
        await session.execute(
            text(
                "UPDATE caas_ledger_recon_runs SET status = :status, finished_at = now(), "
                "chain_block = :block, loans_checked = :loans, mismatch_count = :count, error = :error "
                "WHERE id = :run_id"
            ),
            {
                "status": report.status,
                "block": report.block,
                "loans": report.loans_checked,
                "count": len(report.mismatches),
                "error": report.error,
                "run_id": report.run_id,
            },
        )


async def reconcile(
    *,
    db: Database,
    rpc: JsonRpc | None,
    deployment: Deployment | None,
    trigger: str = "manual",
    checks: Sequence[Check] | None = None,
    stale_hold_s: float = 86_400.0,
) -> Report:
    """One run: read, compare, store every mismatch. A failed read stores the run as failed."""
    started = time.monotonic()
    run_id = await _start_run(db, trigger)
    report = Report(run_id=run_id, block=None, loans_checked=0)
    try:
        if rpc is None or deployment is None:
            raise RuntimeError("the chain is not configured (CHAIN_RPC_URL, DEPLOYMENT_FILE)")
        async with db.worker_session() as session:
            loans = await load_loans(session)
        block = hex_int(await rpc.call("eth_blockNumber"))
        chain = await read_chain(rpc, deployment, [loan.chain_loan_id for loan in loans], block)
        context = ReconContext(db, rpc, deployment, block, loans, chain, stale_hold_s)
        report.block, report.loans_checked = block, len(loans)
        for check in [ledger_checks, stale_holds, *(_CHECKS if checks is None else checks)]:
            report.mismatches.extend(await check(context))
    except Exception as error:
        log.exception("ledger.reconciliation.failed", run_id=run_id)
        report.error = f"{type(error).__name__}: {error}"
    await _finish_run(db, report)
    log.info(
        "ledger.reconciliation.done",
        run_id=run_id,
        status=report.status,
        loans=report.loans_checked,
        mismatches=len(report.mismatches),
        block=report.block,
        duration_s=round(time.monotonic() - started, 3),
    )
    return report


_RUN_COLUMNS = (
    "SELECT id, trigger, status, started_at, finished_at, chain_block, loans_checked, mismatch_count, error "
    "FROM caas_ledger_recon_runs "
)
_RUN_BY_ID = text(_RUN_COLUMNS + "WHERE id = :run_id")
_LATEST_RUN = text(_RUN_COLUMNS + "WHERE status <> 'running' ORDER BY id DESC LIMIT 1")


async def load_run(session: AsyncSession, run_id: int | None = None) -> dict[str, Any] | None:
    """A stored run with its mismatches: `run_id`, or the latest finished one."""
    # the run asked for whatever its status, or the latest one that finished
    query = _RUN_BY_ID if run_id is not None else _LATEST_RUN
    row = (
        (await session.execute(query, {"run_id": run_id} if run_id is not None else {}))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    mismatches = (
        (
            await session.execute(
                text(
                    "SELECT kind, subject, expected, actual, detail FROM caas_ledger_mismatches "
                    "WHERE run_id = :run_id ORDER BY n"
                ),
                {"run_id": row["id"]},
            )
        )
        .mappings()
        .all()
    )
    return {
        "run_id": row["id"],
        "trigger": row["trigger"],
        "status": row["status"],
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "chain_block": row["chain_block"],
        "loans_checked": row["loans_checked"],
        "mismatch_count": row["mismatch_count"],
        "error": row["error"],
        "mismatches": [dict(m) for m in mismatches],
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "status": report.status,
        "chain_block": report.block,
        "loans_checked": report.loans_checked,
        "mismatch_count": len(report.mismatches),
        "error": report.error,
        "mismatches": [m.as_dict() for m in report.mismatches],
    }
