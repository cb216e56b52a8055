"""Reorg repair: walk back to the common ancestor, unwind what is above it, replay the loans."""

from __future__ import annotations

from sqlalchemy import text

from offchain.chain.decoding import LOAN_BOOK
from offchain.chain.indexer.base import log
from offchain.chain.indexer.event_chain import EventChainCheck
from offchain.chain.indexer.sql import _SAVE_CHECKPOINT
from offchain.chain.indexer.types import REORG_TOPIC, BatchResult, Checkpoint, ReorgTooDeepError
from offchain.chain.jsonrpc import RpcError
from offchain.chain.projections import drop_unlinked, rebuild_loans, save_loans
from offchain.eventbus.outbox import OutgoingEvent, publish_many


class ReorgRepair(EventChainCheck):
    """Called by find_range when the cursor block is no longer on the chain."""

    async def _reorg(self, cursor: Checkpoint, head: int) -> BatchResult:
        depth = await self.repair_reorg(cursor)
        self._checkpoint = None
        checkpoint = await self.checkpoint()
        return BatchResult(head=head, checkpoint=checkpoint.number, reorg_depth=depth)

    async def repair_reorg(self, cursor: Checkpoint) -> int:
        """Unwind to the common ancestor in one transaction; returns the depth (0: false alarm)."""
        async with self.db.worker_session() as session:
            stored = (
                await session.execute(
                    text(
                        "SELECT number, hash FROM caas_indexed_blocks WHERE chain_id = :chain_id "
                        "AND number <= :cursor ORDER BY number DESC"
                    ),
                    {"chain_id": self.chain_id, "cursor": cursor.number},
                )
            ).all()
            answers = await self.rpc.batch(
                [("eth_getBlockByNumber", [hex(row.number), False]) for row in stored]
            )
            chain_hashes: dict[int, str | None] = {}
            for row, answer in zip(stored, answers, strict=True):
                if isinstance(answer, RpcError):
                    raise answer
                chain_hashes[row.number] = str(answer["hash"]).lower() if answer else None
            ancestor = next((row for row in stored if chain_hashes[row.number] == row.hash), None)
            if ancestor is None:
                lowest_number = stored[-1].number if stored else cursor.number
                lowest_hash = stored[-1].hash if stored else (cursor.hash or "")
                error = ReorgTooDeepError(
                    number=lowest_number,
                    stored_hash=lowest_hash,
                    chain_hash=chain_hashes.get(lowest_number),
                    window=self.settings.reorg_window,
                )
                self.metrics.halted.set(1)
                log.critical(
                    "indexer.reorg_too_deep",
                    chain_id=self.chain_id,
                    checkpoint=cursor.number,
                    checkpoint_hash=cursor.hash,
                    block_number=lowest_number,
                    stored_hash=lowest_hash,
                    chain_hash=error.chain_hash,
                    window=self.settings.reorg_window,
                )
                raise error
            number, ancestor_hash = int(ancestor.number), str(ancestor.hash)
            depth = cursor.number - number
            if depth == 0:
                return 0

            removed = (
                await session.execute(
                    text(
                        "DELETE FROM caas_chain_events WHERE chain_id = :chain_id AND block_number > :n "
                        "RETURNING contract, loan_id, block_hash, log_index"
                    ),
                    {"chain_id": self.chain_id, "n": number},
                )
            ).all()
            await session.execute(
                text("DELETE FROM caas_indexed_blocks WHERE chain_id = :chain_id AND number > :n"),
                {"chain_id": self.chain_id, "n": number},
            )
            affected = sorted({row.loan_id for row in removed if row.contract == LOAN_BOOK and row.loan_id})
            # Replay from what is left; nothing is published for the survivors (their messages
            # went out when they were first indexed), only the notice of what was withdrawn.
            loans = await rebuild_loans(session, self.chain_id, affected)
            on_chain = {loan_id: loan for loan_id, loan in loans.items() if loan.mirror.event_count}
            if on_chain and self.settings.verify_event_chain:
                await self.check_event_chains(on_chain, block_number=number, block_hash=ancestor_hash)
            await save_loans(session, loans.values())
            await drop_unlinked(
                session, [loan_id for loan_id, loan in loans.items() if not loan.mirror.event_count]
            )
            await publish_many(
                session,
                [
                    OutgoingEvent(
                        topic=REORG_TOPIC,
                        payload={
                            "chain_id": self.chain_id,
                            "common_ancestor": {"number": number, "hash": ancestor_hash},
                            "abandoned_head": {"number": cursor.number, "hash": cursor.hash},
                            "depth": depth,
                            "removed_event_ids": [
                                f"{self.chain_id}:{row.block_hash}:{row.log_index}" for row in removed
                            ],
                            "loans": affected,
                        },
                    )
                ],
            )
            await session.execute(
                _SAVE_CHECKPOINT,
                {"name": self.name, "chain_id": self.chain_id, "number": number, "hash": ancestor_hash},
            )
        self.metrics.reorgs.inc()
        self.metrics.reorg_depth.set(depth)
        log.warning(
            "indexer.reorg_repaired",
            chain_id=self.chain_id,
            depth=depth,
            common_ancestor=number,
            ancestor_hash=ancestor_hash,
            abandoned_head=cursor.number,
            abandoned_hash=cursor.hash,
            events_removed=len(removed),
            loans_replayed=len(affected),
        )
        return depth
