"""The event-chain check: each loan's running hash of its events against `LoanBook.event_chain`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from eth_utils import function_abi_to_4byte_selector

from offchain.chain.contracts import Deployment
from offchain.chain.indexer.base import IndexerBase, log
from offchain.chain.indexer.sql import _UNCHECKED_LOANS
from offchain.chain.indexer.types import ChainMovedError, Checkpoint
from offchain.chain.jsonrpc import JsonRpc, RpcError
from offchain.chain.projections import TrackedLoan, load_loans, save_loans


class EventChainReader:
    """`LoanBook.event_chain(loan_id)` for many loans at one block, in one JSON-RPC batch."""

    def __init__(self, rpc: JsonRpc, deployment: Deployment) -> None:
        self.rpc = rpc
        self.address = deployment.loan_book_address
        abi = next(
            item
            for item in deployment.loan_book_abi
            if item.get("type") == "function" and item["name"] == "event_chain"
        )
        self.selector = "0x" + function_abi_to_4byte_selector(abi).hex()  # type: ignore[arg-type]

    async def read(self, loan_ids: Sequence[str], *, block_hash: str) -> dict[str, str]:
        """loan id -> 0x chain head at the block with this hash (EIP-1898: pinned to that block,
        so a reorg meanwhile errors instead of answering about another chain)."""
        calls = [
            (
                "eth_call",
                [{"to": self.address, "data": self.selector + loan_id[2:]}, {"blockHash": block_hash}],
            )
            for loan_id in loan_ids
        ]
        results = await self.rpc.batch(calls)
        out: dict[str, str] = {}
        for loan_id, result in zip(loan_ids, results, strict=True):
            if isinstance(result, RpcError):
                raise ChainMovedError(f"event_chain({loan_id}) at {block_hash}: {result}")
            out[loan_id] = str(result).lower()
        return out


class EventChainCheck(IndexerBase):
    """Loans checked as their batch commits, or later by a sweep once caught up."""

    event_chains: EventChainReader
    # whether loans may wait for verify_unchecked(): unknown at start, then tracked, so an idle
    # indexer does not ask the database every poll
    _unchecked_possible: bool = True
    _sweep_after: float = 0.0  # monotonic time before which verify_unchecked() rests

    async def check_event_chains(
        self, loans: Mapping[str, TrackedLoan], *, block_number: int, block_hash: str
    ) -> int:
        """Compare each loan's running event chain with LoanBook.event_chain at the given block;
        flag and log the ones that differ. Returns how many differ.

        When the node cannot answer for that block (a non-archive node has no state that deep)
        the loans stay unchecked, and verify_unchecked() takes them up once caught up.
        """
        try:
            onchain = await self.event_chains.read(sorted(loans), block_hash=block_hash)
        except (RpcError, ChainMovedError) as exc:
            self._unchecked_possible = True
            log.info(
                "indexer.event_chain_check_deferred",
                block_number=block_number,
                loans=len(loans),
                error=repr(exc)[:300],
            )
            return 0
        mismatches = 0
        for loan_id, loan in loans.items():
            ours = "0x" + loan.mirror.event_chain.hex()
            loan.checked_block = block_number
            loan.mismatch = ours != onchain[loan_id]
            if loan.mismatch:
                mismatches += 1
                self.metrics.event_chain_mismatches.inc()
                log.error(
                    "indexer.event_chain_mismatch",
                    loan_id=loan_id,
                    block_number=block_number,
                    indexed=ours,
                    onchain=onchain[loan_id],
                    events=loan.mirror.event_count,
                )
        return mismatches

    async def verify_unchecked(self, cursor: Checkpoint) -> int:
        """Check, at the checkpoint block, loans whose latest events were indexed too deep for
        an immediate check (backfill). Returns how many differ."""
        if (
            not self.settings.verify_event_chain
            or not self._unchecked_possible
            or cursor.hash is None
            or time.monotonic() < self._sweep_after
        ):
            return 0
        async with self.db.worker_session() as session:
            ids = list(
                (
                    await session.execute(_UNCHECKED_LOANS, {"limit": self.settings.verify_sweep_batch})
                ).scalars()
            )
            if not ids:
                self._unchecked_possible = False
                return 0
            loans = await load_loans(session, ids)
            mismatches = await self.check_event_chains(
                loans, block_number=cursor.number, block_hash=cursor.hash
            )
            checked = [loan for loan in loans.values() if loan.checked_block == cursor.number]
            if not checked:  # the node cannot answer even at the checkpoint: try again later
                self._sweep_after = time.monotonic() + 30.0
                return 0
            await save_loans(session, checked)
        # a full page may have more behind it; a partly failed one is retried
        self._unchecked_possible = len(ids) == self.settings.verify_sweep_batch or len(checked) < len(ids)
        return mismatches
