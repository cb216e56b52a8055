"""Ledger use cases: read balances, postings and loan statements; run reconciliation.

Ledger tables are platform data read through a worker session, so partner isolation is applied
here: a partner (credit:audit:read) sees only the accounts that belong to it (its funding
account, the accounts of its loans) and the postings that touch them. Platform accounts
(cash, suspense, fee income), the trial balance and reconciliation hold every partner's money:
they are the operators' platform-wide views (caas:operations:read), as is every account.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import chain_of
from offchain.chain.jsonrpc import JsonRpc
from offchain.domain.ledger import parse_account
from offchain.persistence import ledger
from offchain.platform.app import AppResources
from offchain.platform.auth import Actor, Operator
from offchain.platform.db import Database
from offchain.platform.problems import NOT_FOUND, Problem
from offchain.platform.settings import Settings
from offchain.services.ledger import reconciliation
from offchain.services.ledger.rail_checks import RailCheck

# one reconciliation at a time across replicas (session-level advisory lock)
RECONCILE_LOCK = "SELECT pg_try_advisory_lock(hashtext('caas:ledger:reconcile'))"
RECONCILE_UNLOCK = "SELECT pg_advisory_unlock(hashtext('caas:ledger:reconcile'))"


def _not_found(what: str) -> Problem:
    return Problem(404, NOT_FOUND, title="Not found", detail=what)


def _figure(value: int, currency: str) -> dict[str, Any]:
    return {"value": value, "currency": currency}


async def _owners(session: AsyncSession, accounts: list[tuple[str, str]]) -> set[uuid.UUID]:
    if not accounts:
        return set()
    rows = await session.execute(
        text(
            "SELECT DISTINCT partner_id FROM caas_ledger_accounts "
            "WHERE (code, currency) IN "
            "(SELECT * FROM unnest(CAST(:codes AS text[]), CAST(:currencies AS text[]))) "
            "AND partner_id IS NOT NULL"
        ),
        {"codes": [a for a, _ in accounts], "currencies": [c for _, c in accounts]},
    )
    return set(rows.scalars())


def _visible(actor: Actor, owners: set[uuid.UUID]) -> bool:
    """Operators see everything; a partner what touches its own accounts (never platform-only)."""
    return isinstance(actor, Operator) or actor.partner_id in owners


async def account_balance(*, db: Database, principal: Actor, code: str, currency: str) -> dict[str, Any]:
    try:
        ref = parse_account(code)
    except ValueError as error:
        raise Problem(
            422,
            "urn:caas:problem:validation-error",
            title="Invalid account code",
            detail=str(error),
            errors=[{"field": "code", "reason": "not an account of the chart of accounts"}],
        ) from error
    async with db.worker_session() as session:
        exists = (
            await session.execute(
                text(
                    "SELECT partner_id FROM caas_ledger_accounts WHERE code = :code AND currency = :currency"
                ),
                {"code": code, "currency": currency},
            )
        ).one_or_none()
        if exists is None or not _visible(principal, {exists[0]} - {None}):
            raise _not_found(f"nothing was ever posted to {code} in {currency}")
        balance = await ledger.balance(session, code, currency)
    return {
        "account": code,
        "currency": currency,
        "kind": ref.kind.value,
        "normal_side": ref.normal_side.value,
        "balance": _figure(balance.posted, currency),
        "posted_debits": _figure(balance.posted_debits, currency),
        "posted_credits": _figure(balance.posted_credits, currency),
        "pending_debits": _figure(balance.pending_debits, currency),
        "pending_credits": _figure(balance.pending_credits, currency),
    }


async def posting(*, db: Database, principal: Actor, posting_id: str) -> dict[str, Any]:
    async with db.worker_session() as session:
        record = await ledger.get_posting(session, posting_id)
        if record is None:
            raise _not_found(f"no posting {posting_id}")
        owners = await _owners(session, [(leg.account, leg.currency) for leg in record.legs])
    if not _visible(principal, owners):
        raise _not_found(f"no posting {posting_id}")
    body = record.as_dict()
    body["legs"] = [
        {"account": leg.account, "side": leg.side.value, "amount": _figure(leg.amount, leg.currency)}
        for leg in record.legs
    ]
    return body


async def trial_balance(*, db: Database, currency: str | None, accounts: bool) -> dict[str, Any]:
    async with db.worker_session() as session:
        lines = await ledger.trial_balance(session, currency)
        per_account = await ledger.account_balances(session, currency) if accounts else None
    return {
        "balanced": all(line.balanced for line in lines),
        "currencies": [
            {
                "currency": line.currency,
                "debits": line.debits,
                "credits": line.credits,
                "pending_debits": line.pending_debits,
                "pending_credits": line.pending_credits,
                "balanced": line.balanced,
            }
            for line in lines
        ],
        "accounts": per_account,
    }


async def loan_ledger(*, db: Database, principal: Actor, loan: str) -> dict[str, Any]:
    """A loan's accounts and entries; `loan` is the backend UUID or the chain loan id."""
    key = loan.strip()
    async with db.worker_session() as session:
        row = None
        if key.startswith("0x") and len(key) == 66:
            key = key.lower()
            row = (
                await session.execute(
                    text("SELECT id, partner_id, chain_loan_id FROM caas_loans WHERE chain_loan_id = :key"),
                    {"key": key},
                )
            ).one_or_none()
        else:
            try:
                loan_uuid = uuid.UUID(key)
            except ValueError:
                loan_uuid = None
            if loan_uuid is not None:
                key = str(loan_uuid)
                row = (
                    await session.execute(
                        text("SELECT id, partner_id, chain_loan_id FROM caas_loans WHERE id = :id"),
                        {"id": loan_uuid},
                    )
                ).one_or_none()
        keys = [str(row.id), row.chain_loan_id] if row is not None else [key]
        statement = await ledger.loan_statement(session, keys)
        owners = await _owners(session, [(a["account"], a["currency"]) for a in statement["accounts"]])
    if row is not None and row.partner_id is not None:
        owners.add(row.partner_id)
    if (row is None and not statement["accounts"]) or not _visible(principal, owners):
        raise _not_found(f"no ledger accounts for loan {loan}")
    return {
        "loan_id": str(row.id) if row is not None else None,
        "chain_loan_id": row.chain_loan_id if row is not None else None,
        **statement,
    }


@asynccontextmanager
async def _reconcile_lock(db: Database) -> AsyncIterator[bool]:
    async with db.engine.connect() as conn:
        got = bool((await conn.execute(text(RECONCILE_LOCK))).scalar_one())
        await conn.commit()
        try:
            yield got
        finally:
            if got:
                await conn.execute(text(RECONCILE_UNLOCK))
                await conn.commit()


class LedgerMetrics:
    """Gauges an operator alerts on: mismatches of the last run and when it finished."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mismatches = Gauge(
            "caas_ledger_reconciliation_mismatches",
            "Mismatches found by the last reconciliation run, by kind.",
            ["kind"],
            registry=registry,
        )
        self.status = Gauge(
            "caas_ledger_reconciliation_status",
            "Last reconciliation run: 0 consistent, 1 mismatches, 2 failed.",
            registry=registry,
        )
        self.finished = Gauge(
            "caas_ledger_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation run finished (unix seconds).",
            registry=registry,
        )
        self._kinds: set[str] = set()

    def record(self, report: reconciliation.Report) -> None:
        counts = Counter(m.kind for m in report.mismatches)
        for kind in self._kinds | set(counts):
            self.mismatches.labels(kind=kind).set(counts.get(kind, 0))
        self._kinds |= set(counts)
        self.status.set({"consistent": 0, "mismatches": 1}.get(report.status, 2))
        self.finished.set(time.time())


def rail_checks(settings: Settings) -> list[reconciliation.Check]:
    """The rail leg, when a rail is configured: payments and payouts against the providers."""
    rails = settings.rails
    if not (rails.paystack_base_url or rails.simulator_url):
        return []
    return [RailCheck(rails)]


async def run_reconciliation(
    resources: AppResources, *, trigger: str, metrics: LedgerMetrics | None = None
) -> reconciliation.Report | None:
    """One run unless another replica is running one (then None)."""
    db = resources.db
    if db is None:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Database not configured")
    chain = resources.settings.chain
    rpc = (
        JsonRpc(
            chain.endpoints,  # CHAIN_RPC_URLS failover
            timeout_s=chain.rpc_timeout_s,
            batch_size=resources.settings.ledger.reconcile_rpc_batch,
        )
        if chain.rpc_url
        else None
    )
    try:
        deployment = chain_of(resources).deployment if chain.deployment_file else None
        async with _reconcile_lock(db) as got:
            if not got:
                return None
            report = await reconciliation.reconcile(
                db=db,
                rpc=rpc,
                deployment=deployment,
                trigger=trigger,
                stale_hold_s=resources.settings.ledger.stale_hold_s,
                checks=[*reconciliation.registered_checks(), *rail_checks(resources.settings)],
            )
        if metrics is not None:
            metrics.record(report)
        return report
    finally:
        if rpc is not None:
            await rpc.aclose()


async def latest_reconciliation(*, db: Database, run_id: int | None) -> dict[str, Any]:
    async with db.worker_session() as session:
        run = await reconciliation.load_run(session, run_id)
    if run is None:
        raise _not_found("no reconciliation run yet" if run_id is None else f"no reconciliation run {run_id}")
    return run
