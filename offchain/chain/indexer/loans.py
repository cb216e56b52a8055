"""The chain indexer: LoanBook and DisbursementCommittee logs into `caas_` tables, batch by batch."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.decoding import UNKNOWN_EVENT, DecodedLog, LogDecoder
from offchain.chain.indexer.base import log
from offchain.chain.indexer.event_chain import EventChainReader
from offchain.chain.indexer.metrics import IndexerMetrics
from offchain.chain.indexer.reorg import ReorgRepair
from offchain.chain.indexer.sql import _EXISTING_EVENTS, _INSERT_BLOCKS, _INSERT_EVENTS, _PRUNE_BLOCKS
from offchain.chain.indexer.types import Batch, BatchResult, ChainMovedError, ConcurrentWriterError, Header
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.chain.projections import load_loans, save_loans
from offchain.eventbus.outbox import OutgoingEvent, publish_many
from offchain.platform.db import Database
from offchain.platform.settings import IndexerSettings

# Errors a node gives when a getLogs range is too much for it (geth, erigon, nethermind, anvil,
# and the hosted providers' wordings); the range is halved and the batch tried again.
_RANGE_ERRORS = (
    "too many",
    "limit",
    "exceed",
    "response size",
    "range",
    "more than",
    "timeout",
    "timed out",
    "too large",
    "query returned",
)


def _is_range_error(exc: RpcError) -> bool:
    message = exc.message.lower()
    return any(marker in message for marker in _RANGE_ERRORS)


class ChainIndexer(ReorgRepair):
    def __init__(
        self,
        *,
        db: Database,
        rpc: JsonRpc,
        deployment: Deployment,
        settings: IndexerSettings,
        metrics: IndexerMetrics | None = None,
    ) -> None:
        super().__init__(
            db=db,
            rpc=rpc,
            settings=settings,
            chain_id=deployment.chain_id,
            start_block=min(deployment.loan_book_block, deployment.committee_block),
            metrics=metrics,
        )
        self.deployment = deployment
        self.decoder = LogDecoder(deployment)
        self.event_chains = EventChainReader(rpc, deployment)
        self.addresses = [deployment.loan_book_address, deployment.committee_address]
        self.block_range = min(settings.initial_block_range, settings.max_block_range)
        self._sweep_after = 0.0
        self._unchecked_possible = True

    # -- the template's steps -------------------------------------------------------------------

    async def find_range(self) -> Batch | BatchResult:
        """The next block range, with the cursor verified to still be on the chain; or the
        result of the step when there is nothing to index (caught up) or a reorg was repaired."""
        cursor = await self.checkpoint()
        head_answer, cursor_block = await self.rpc.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", [hex(max(cursor.number, 0)), False])]
        )
        if isinstance(head_answer, RpcError):
            raise head_answer
        head = hex_int(head_answer)
        self.metrics.head_block.set(head)
        if cursor.hash is not None and not _same_block(cursor_block, cursor.hash):
            return await self._reorg(cursor, head)

        safe = head - self.settings.confirmations
        if cursor.number >= safe:
            self._observe_lag(head, cursor.number, caught_up=True)
            mismatches = await self.verify_unchecked(cursor)
            return BatchResult(head=head, checkpoint=cursor.number, caught_up=True, mismatches=mismatches)

        first = cursor.number + 1
        last = min(safe, first + self.block_range - 1)
        # headers kept for reorg detection: only blocks that can still be reorged within the
        # window (deep backfill batches keep none)
        keep_from = max(first, safe - self.settings.reorg_window + 1)
        headers = await self.fetch_headers({first, last, *range(keep_from, last + 1)})
        if cursor.hash is not None and headers[first].parent_hash != cursor.hash:
            # the cursor block was still there a moment ago: its successor changed since
            return await self._reorg(cursor, head)
        _check_linked(headers, keep_from, last)
        return Batch(
            cursor=cursor, head=head, safe=safe, first=first, last=last, keep_from=keep_from, headers=headers
        )

    async def fetch_logs(self, batch: Batch) -> list[DecodedLog] | None:
        """The batch's logs, decoded, in emission order; None when the node refused the range
        as too large (the range is halved for the next attempt)."""
        try:
            raw_logs = await self.rpc.call(
                "eth_getLogs",
                {"address": self.addresses, "fromBlock": hex(batch.first), "toBlock": hex(batch.last)},
            )
        except RpcError as exc:
            transport = exc.code is None and "timeout" not in exc.message.lower()
            if transport or not _is_range_error(exc) or self.block_range <= 1:
                raise
            self.block_range = max(1, (batch.last - batch.first + 1) // 2)
            self.metrics.range_shrinks.inc()
            self.metrics.block_range.set(self.block_range)
            log.info("indexer.range_shrunk", block_range=self.block_range, error=exc.message[:200])
            return None
        logs = [self.decoder.decode(entry) for entry in raw_logs]
        logs.sort(key=lambda e: (e.block_number, e.log_index))
        await self._attach_block_times(logs, batch.headers)
        return logs

    async def process_batch(
        self, session: AsyncSession, logs: Sequence[DecodedLog], batch: Batch, result: BatchResult
    ) -> None:
        """Everything a batch changes but the checkpoint (`save_checkpoint`, next, in the same
        transaction): events, loan projections, event-chain check, kept headers, outbox messages."""
        first, last, headers = batch.first, batch.last, batch.headers
        inserted = await self._insert_events(session, logs, first=first, last=last)
        result.inserted = len(inserted)

        loan_events = [e for e in inserted if e.in_event_chain]
        loans = await load_loans(session, (e.loan_id for e in loan_events if e.loan_id))
        for e in loan_events:
            loan = loans[e.loan_id]  # type: ignore[index]
            loan.mirror.apply(
                e.event,
                e.args,
                topics=e.raw_topics(),
                data=e.raw_data(),
                block_number=e.block_number,
                log_index=e.log_index,
                block_timestamp=e.block_timestamp,
            )
        for loan in loans.values():
            if loan.mirror.anomalies:
                log.warning(
                    "indexer.projection_anomaly",
                    loan_id=loan.mirror.chain_loan_id,
                    anomalies=loan.mirror.anomalies,
                )
                loan.mirror.anomalies.clear()
        if loans and self.settings.verify_event_chain:
            if batch.head - last <= self.settings.verify_event_chain_within:
                result.mismatches = await self.check_event_chains(
                    loans, block_number=last, block_hash=headers[last].hash
                )
            else:
                self._unchecked_possible = True
        await save_loans(session, loans.values())
        result.loans = len(loans)

        stored = [headers[n] for n in range(batch.keep_from, last + 1)]
        if stored:
            await session.execute(
                _INSERT_BLOCKS,
                {
                    "chain_id": self.chain_id,
                    "number": [h.number for h in stored],
                    "hash": [h.hash for h in stored],
                    "parent_hash": [h.parent_hash for h in stored],
                    "ts": [h.timestamp for h in stored],
                },
            )
        await session.execute(
            _PRUNE_BLOCKS, {"chain_id": self.chain_id, "keep_from": last - self.settings.reorg_window + 1}
        )
        await publish_many(session, [self._message(e) for e in inserted if e.event != UNKNOWN_EVENT])
        for (contract, event), count in Counter((e.contract, e.event) for e in inserted).items():
            self.metrics.events.labels(contract, event).inc(count)
        unknown = [e for e in inserted if e.event == UNKNOWN_EVENT]
        if unknown:
            log.warning("indexer.unknown_events", count=len(unknown), first_topic=unknown[0].topics[:1])

    async def after_batch(self, batch: Batch, result: BatchResult, *, logs: int) -> None:
        self._adapt_range(logs, batch.last - batch.first + 1)
        if result.caught_up and self._checkpoint is not None:
            result.mismatches += await self.verify_unchecked(self._checkpoint)

    # -- reading the chain ----------------------------------------------------------------------

    async def fetch_headers(self, numbers: Iterable[int]) -> dict[int, Header]:
        wanted = sorted(set(numbers))
        blocks = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in wanted])
        headers: dict[int, Header] = {}
        for number, block in zip(wanted, blocks, strict=True):
            if isinstance(block, RpcError):
                raise block
            if block is None:
                raise ChainMovedError(f"block {number} disappeared while reading a batch")
            headers[number] = Header.from_rpc(block)
        return headers

    async def _attach_block_times(self, logs: Sequence[DecodedLog], headers: dict[int, Header]) -> None:
        """Block time of every log, and its block hash checked against the headers read first."""
        missing = {
            e.block_number for e in logs if e.block_timestamp is None and e.block_number not in headers
        }
        if missing:
            headers.update(await self.fetch_headers(missing))
        for e in logs:
            header = headers.get(e.block_number)
            if header is None:
                continue
            if header.hash != e.block_hash:
                raise ChainMovedError(f"block {e.block_number} is {header.hash}, its logs say {e.block_hash}")
            if e.block_timestamp is None:
                e.block_timestamp = header.timestamp

    # -- writing --------------------------------------------------------------------------------

    async def _insert_events(
        self, session: AsyncSession, logs: Sequence[DecodedLog], *, first: int, last: int
    ) -> list[DecodedLog]:
        """Insert the batch's events; returns those that were new, in emission order."""
        if not logs:
            return []
        stored = await session.execute(
            _EXISTING_EVENTS, {"chain_id": self.chain_id, "first": first, "last": last}
        )
        existing = {(row.block_hash, row.tx_hash, row.log_index) for row in stored}
        new = [e for e in logs if e.key not in existing] if existing else list(logs)
        if not new:
            return []
        inserted = await session.execute(
            _INSERT_EVENTS,
            {
                "chain_id": self.chain_id,
                "block_number": [e.block_number for e in new],
                "block_hash": [e.block_hash for e in new],
                "tx_hash": [e.tx_hash for e in new],
                "tx_index": [e.tx_index for e in new],
                "log_index": [e.log_index for e in new],
                "address": [e.address for e in new],
                "contract": [e.contract for e in new],
                "event": [e.event for e in new],
                "loan_id": [e.loan_id for e in new],
                "args": [json.dumps(e.args, separators=(",", ":")) for e in new],
                "topics": [",".join(e.topics) for e in new],
                "data": [e.data for e in new],
                "block_timestamp": [e.block_timestamp for e in new],
            },
        )
        count = inserted.scalar_one()
        if count != len(new):
            # only another writer could have slipped rows in between: roll the batch back
            raise ConcurrentWriterError(f"{len(new) - count} of {len(new)} events appeared during the batch")
        return new

    def _message(self, e: DecodedLog) -> OutgoingEvent:
        event_id = e.event_id(self.chain_id)
        return OutgoingEvent(
            topic=f"chain.{e.event}",
            key=e.loan_id,
            payload={
                "event_id": event_id,
                "chain_id": self.chain_id,
                "contract": e.contract,
                "address": e.address,
                "event": e.event,
                "loan_id": e.loan_id,
                "args": e.args,
                "block_number": e.block_number,
                "block_hash": e.block_hash,
                "block_timestamp": e.block_timestamp,
                "tx_hash": e.tx_hash,
                "tx_index": e.tx_index,
                "log_index": e.log_index,
            },
        )

    # -- bookkeeping ----------------------------------------------------------------------------

    def _adapt_range(self, logs: int, span: int) -> None:
        target = self.settings.target_logs_per_batch
        if logs > target:
            self.block_range = max(1, span * target // logs)
        elif logs < target // 2 and span >= self.block_range:
            self.block_range = min(self.settings.max_block_range, self.block_range * 2)


def _same_block(block: Any, expected_hash: str) -> bool:
    return isinstance(block, Mapping) and str(block.get("hash", "")).lower() == expected_hash


def _check_linked(headers: Mapping[int, Header], first: int, last: int) -> None:
    for number in range(first + 1, last + 1):
        if headers[number].parent_hash != headers[number - 1].hash:
            raise ChainMovedError(f"blocks {number - 1} and {number} do not link: the chain moved")
