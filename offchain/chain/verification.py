"""Verify one loan from the events the backend stored: what an auditor asks of the index.

`verify_loan` replays the loan from `caas_chain_events` alone (ignoring the stored mirror),
recomputes its event chain, and compares
- the recomputed chain with `LoanBook.event_chain(loan_id)` read at the indexer's checkpoint
  block (the block up to which the stored events claim to be complete), and
- the stored `caas_loans` mirror with the replay, field by field.
A missing, altered or extra stored event shows as a chain mismatch; the loan's
`event_chain_mismatch` flag is set to the verdict and a mismatch is logged as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from offchain.chain.contracts import Deployment
from offchain.chain.indexer import EventChainReader, load_checkpoint
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.projections import load_loans, stored_events
from offchain.domain.loan_projection import TERMS, LoanMirror, differences, replay
from offchain.platform.db import Database
from offchain.platform.logging import get_logger

log = get_logger(__name__)


@dataclass
class LoanVerification:
    chain_loan_id: str
    block_number: int
    block_hash: str
    onchain_event_chain: str
    recomputed_event_chain: str
    stored_event_chain: str | None
    event_count: int
    # mirror field -> (stored, recomputed from events)
    projection_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def events_complete(self) -> bool:
        """The stored events are exactly the loan's events on chain up to `block_number`."""
        return self.onchain_event_chain == self.recomputed_event_chain

    @property
    def consistent(self) -> bool:
        return self.events_complete and not self.projection_differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain_loan_id": self.chain_loan_id,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "onchain_event_chain": self.onchain_event_chain,
            "recomputed_event_chain": self.recomputed_event_chain,
            "stored_event_chain": self.stored_event_chain,
            "event_count": self.event_count,
            "events_complete": self.events_complete,
            "projection_differences": {
                name: {"stored": stored, "recomputed": recomputed}
                for name, (stored, recomputed) in self.projection_differences.items()
            },
        }


class NotIndexedError(LookupError):
    """The indexer has not committed a batch for this chain yet."""


async def verify_loan(
    *,
    db: Database,
    rpc: JsonRpc,
    deployment: Deployment,
    chain_loan_id: str,
    indexer_name: str = "loanbook",
    record: bool = True,
) -> LoanVerification:
    """Replay `chain_loan_id` from stored events and check it against the chain (module doc).

    record: write the verdict to `caas_loans.event_chain_mismatch` / `event_chain_checked_block`.
    """
    loan_id = chain_loan_id.lower()
    async with db.worker_session() as session:
        # One snapshot: the checkpoint and the events it vouches for, as one commit left them.
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        checkpoint = await load_checkpoint(session, name=indexer_name, chain_id=deployment.chain_id)
        if checkpoint is None or checkpoint.hash is None:
            raise NotIndexedError(f"no indexer checkpoint {indexer_name!r} for chain {deployment.chain_id}")
        events = (await stored_events(session, deployment.chain_id, [loan_id]))[loan_id]
        stored = (await load_loans(session, [loan_id], lock=False))[loan_id]
    if events:
        recomputed = replay(loan_id, events)
    else:  # not on chain (yet): only the backend's terms exist, and nothing the chain said
        recomputed = LoanMirror(loan_id, **{name: getattr(stored.mirror, name) for name in TERMS})
    onchain = (await EventChainReader(rpc, deployment).read([loan_id], block_hash=checkpoint.hash))[loan_id]
    result = LoanVerification(
        chain_loan_id=loan_id,
        block_number=checkpoint.number,
        block_hash=checkpoint.hash,
        onchain_event_chain=onchain,
        recomputed_event_chain="0x" + recomputed.event_chain.hex(),
        stored_event_chain="0x" + stored.mirror.event_chain.hex() if stored.persisted else None,
        event_count=recomputed.event_count,
        projection_differences=differences(stored.mirror.columns(), recomputed) if stored.persisted else {},
    )
    if not result.consistent:
        log.error(
            "indexer.loan_verification_failed",
            loan_id=loan_id,
            block_number=checkpoint.number,
            onchain=onchain,
            recomputed=result.recomputed_event_chain,
            stored=result.stored_event_chain,
            events=recomputed.event_count,
            differences=sorted(result.projection_differences),
        )
    if record and stored.persisted:
        async with db.worker_session() as session:
            await session.execute(
                text(
                    "UPDATE caas_loans SET event_chain_mismatch = :mismatch, "
                    "event_chain_checked_block = :block, updated_at = now() WHERE chain_loan_id = :id"
                ),
                {"mismatch": not result.events_complete, "block": checkpoint.number, "id": loan_id},
            )
    return result
