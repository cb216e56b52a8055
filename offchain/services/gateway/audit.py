"""The auditor's comparison: LoanBook state and raw logs beside the backend's copy of the loan.

The chain is the book of record; the report lists every field where the backend's mirror differs,
and whether the logs recompute the contract's `event_chain` (the event history is complete) and
the backend's stored chain equals it (the backend's copy of the events is complete).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from offchain.chain.audit import audit_loan, read_loan_audit
from offchain.chain.client import ChainClient
from offchain.chain.contracts import Deployment
from offchain.persistence.models import Loan
from offchain.platform.db import sync_url
from offchain.platform.problems import NOT_FOUND, Problem
from offchain.platform.settings import Settings

# backend column -> field of LoanBook.loans()
COMPARED = {
    "chain_state": "state",
    "principal": "principal",
    "total_due": "total_due",
    "installment_count": "installment_count",
    "installment_interval": "installment_interval",
    "grace_period": "grace_period",
    "max_late_fees": "max_late_fees",
    "late_fees_assessed": "late_fees_assessed",
    "repaid": "repaid",
    "outstanding": "outstanding",
}


def _hex(value: Any) -> Any:
    return "0x" + bytes(value).hex() if isinstance(value, bytes | bytearray) else value


def build_report(chain_loan_id: bytes, onchain: Any, backend: Loan | None) -> dict[str, Any]:
    state = {key: _hex(value) for key, value in onchain.state.items()}
    mismatches = []
    if backend is not None:
        for column, field in COMPARED.items():
            mine, theirs = getattr(backend, column), state.get(field)
            if mine != theirs:
                mismatches.append({"field": column, "onchain": theirs, "backend": mine})
        for column in ("payout_ref", "terms_hash"):
            if getattr(backend, column) != state.get(column):
                mismatches.append(
                    {"field": column, "onchain": state.get(column), "backend": getattr(backend, column)}
                )
    recomputed = _hex(onchain.recomputed_event_chain)
    chain_head = _hex(onchain.onchain_event_chain)
    backend_chain = backend.event_chain if backend is not None else None
    if backend is not None and backend_chain != chain_head:
        mismatches.append({"field": "event_chain", "onchain": chain_head, "backend": backend_chain})
    return {
        "chain_loan_id": "0x" + chain_loan_id.hex(),
        "loan_id": str(backend.id) if backend is not None else None,
        "onchain": state,
        "backend": {column: getattr(backend, column) for column in COMPARED} if backend is not None else None,
        "event_count": len(onchain.events),
        "events": [
            {
                "event": e["event"],
                "block": e["block"],
                "tx": e["tx"],
                "args": {k: _hex(v) for k, v in e["args"].items()},
            }
            for e in onchain.events
        ],
        "event_chain": {
            "onchain": chain_head,
            "recomputed_from_logs": recomputed,
            "backend": backend_chain,
            "logs_complete": recomputed == chain_head,
        },
        "mismatches": mismatches,
        "consistent": recomputed == chain_head and not mismatches,
    }


def _resolve(loan: str) -> tuple[bytes | None, uuid.UUID | None]:
    text = loan.strip()
    if text.startswith("0x") and len(text) == 66:
        return bytes.fromhex(text[2:]), None
    try:
        return None, uuid.UUID(text)
    except ValueError as error:
        raise Problem(
            400,
            "urn:caas:problem:invalid-loan-reference",
            title="Invalid loan reference",
            detail="give the chain loan id (0x + 64 hex) or the backend loan UUID",
            errors=[{"field": "loan", "reason": "neither a bytes32 hex nor a UUID"}],
        ) from error


def audit_report_sync(
    settings: Settings, loan: str, backend: Loan | None = None, lookup: bool = True
) -> dict:
    """Read the chain (and, when `lookup`, the backend row by a worker connection)."""
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    chain_loan_id, loan_uuid = _resolve(loan)
    if lookup and backend is None and settings.database.url:
        engine = create_engine(sync_url(settings.database.url))
        try:
            with Session(engine) as session:
                query = select(Loan).where(
                    Loan.chain_loan_id == "0x" + chain_loan_id.hex()
                    if chain_loan_id
                    else Loan.id == loan_uuid
                )
                backend = session.execute(query).scalar_one_or_none()
                if backend is not None:
                    session.expunge(backend)
        finally:
            engine.dispose()
    if chain_loan_id is None:
        if backend is None:
            raise Problem(404, NOT_FOUND, title="loan not found")
        chain_loan_id = bytes.fromhex(backend.chain_loan_id[2:])
    deployment = Deployment.load(settings.chain.deployment_file)  # a one-shot read (caas audit)
    onchain = audit_loan(
        settings.chain.rpc_url, deployment, chain_loan_id, timeout_s=settings.chain.rpc_timeout_s
    )
    return build_report(chain_loan_id, onchain, backend)


async def audit_report(settings: Settings, backend: Loan, chain: ChainClient | None = None) -> dict:
    """For the API: the partner's own loan (already loaded under RLS), read with the app's
    deployment and JSON-RPC client (offchain.chain.client)."""
    if chain is None:
        return await asyncio.to_thread(audit_report_sync, settings, backend.chain_loan_id, backend, False)
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    chain_loan_id, _ = _resolve(backend.chain_loan_id)
    assert chain_loan_id is not None  # a backend loan's chain id is 0x + 64 hex
    onchain = await read_loan_audit(chain.rpc, chain.deployment, chain_loan_id)
    return build_report(chain_loan_id, onchain, backend)
