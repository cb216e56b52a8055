"""The chain indexer: LoanBook and DisbursementCommittee logs into `caas_` tables.

A template method in the manner of safe-transaction-service's indexers:

    run(stop)            hold the single-writer lock, then run_once() until stopped
      run_once()         find_range -> fetch_logs -> process_batch, committed as one
        find_range       cursor (caas_indexer_checkpoints) + 1 .. head - confirmations, capped
                         by the adaptive block range; verifies the cursor is still canonical
                         (or repairs the reorg) and reads the headers the batch keeps
        fetch_logs       eth_getLogs over the range for both contracts, decoded; halves the
                         range when the node refuses it
        process_batch    ONE transaction: events (ON CONFLICT DO NOTHING), loan projections,
                         event-chain check, block headers of the reorg window, outbox
                         messages and the checkpoint move together, or not at all

Only plain JSON-RPC is used (`eth_blockNumber`, `eth_getBlockByNumber`, `eth_getLogs`,
`eth_call`), no node-side filters: the cursor lives in PostgreSQL, so a restart, a crash
mid-batch or a new node resumes from the last committed batch.

Reorgs: before every batch the checkpoint block's stored hash is compared with the chain (and
the first new block's parent hash with the stored head). On a mismatch the indexer walks back
through `caas_indexed_blocks` to the common ancestor, deletes the events and blocks above it,
replays the affected loans from their remaining events, moves the checkpoint back and goes on.
A reorg deeper than the stored window raises ReorgTooDeepError: the rows of the abandoned chain
cannot be told apart any more, and carrying on would leave them standing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from eth_utils import function_abi_to_4byte_selector
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.decoding import LOAN_BOOK, UNKNOWN_EVENT, DecodedLog, LogDecoder
from offchain.chain.indexer_metrics import IndexerMetrics
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.chain.projections import TrackedLoan, drop_unlinked, load_loans, rebuild_loans, save_loans
from offchain.eventbus.outbox import OutgoingEvent, publish_many
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import IndexerSettings, Settings

log = get_logger(__name__)

REORG_TOPIC = "chain.Reorged"
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


class IndexerError(Exception):
    """Base of the indexer's own errors."""


class ChainMovedError(IndexerError):
    """The chain changed while a batch was being read; the batch is read again."""


class ConcurrentWriterError(IndexerError):
    """Rows appeared under a batch that only this (lock-holding) indexer should write."""


class ReorgTooDeepError(IndexerError):
    """The chain no longer contains any block the indexer kept: the common ancestor is below
    the stored window. Stops the indexer; an operator must re-index (or widen the window)."""

    def __init__(self, *, number: int, stored_hash: str, chain_hash: str | None, window: int) -> None:
        super().__init__(
            f"reorg deeper than the indexer's window of {window} blocks: block {number} is "
            f"{stored_hash} in caas_indexed_blocks but {chain_hash or 'missing'} on chain, and no "
            f"kept block below it matches; re-index from scratch or widen INDEXER__REORG_WINDOW"
        )
        self.number = number
        self.stored_hash = stored_hash
        self.chain_hash = chain_hash
        self.window = window


class IndexerLockHeldError(IndexerError):
    """Another indexer holds the single-writer lock of this chain."""


class IndexerLockLostError(IndexerError):
    """The connection holding the advisory lock broke: another indexer may be writing now."""


@dataclass(frozen=True)
class Checkpoint:
    number: int
    hash: str | None  # None: the virtual cursor just below the deployment block


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int

    @classmethod
    def from_rpc(cls, block: Mapping[str, Any]) -> Header:
        return cls(
            number=hex_int(block["number"]),
            hash=str(block["hash"]).lower(),
            parent_hash=str(block["parentHash"]).lower(),
            timestamp=hex_int(block["timestamp"]),
        )


@dataclass(frozen=True)
class Batch:
    """A block range about to be indexed, and what was read to decide it."""

    cursor: Checkpoint
    head: int
    safe: int  # head - confirmations
    first: int
    last: int
    keep_from: int  # headers from here to `last` are kept for reorg detection
    headers: dict[int, Header]


@dataclass
class BatchResult:
    head: int
    checkpoint: int
    from_block: int | None = None
    to_block: int | None = None
    logs: int = 0  # logs fetched
    inserted: int = 0  # new rows (the rest were already stored)
    loans: int = 0
    mismatches: int = 0
    reorg_depth: int | None = None
    caught_up: bool = False
    seconds: float = 0.0


@dataclass
class CatchUpSummary:
    batches: int = 0
    logs: int = 0
    inserted: int = 0
    reorgs: int = 0
    checkpoint: int = 0
    seconds: float = 0.0
    results: list[BatchResult] = field(default_factory=list, repr=False)


def lock_key(chain_id: int) -> str:
    """One writer per chain and database: events, blocks and loans are per chain, not per name."""
    return f"caas:indexer:{chain_id}"


def _is_range_error(exc: RpcError) -> bool:
    message = exc.message.lower()
    return any(marker in message for marker in _RANGE_ERRORS)


# Rows already stored in a batch's range: none in normal operation (everything above the
# checkpoint was rolled back or never written); some after an operator moved the checkpoint back
# to re-index. Those are skipped: not published again, not folded into the projections twice.
_EXISTING_EVENTS = text(
    "SELECT block_hash, tx_hash, log_index FROM caas_chain_events "
    "WHERE chain_id = :chain_id AND block_number BETWEEN :first AND :last"
)
_INSERT_EVENTS = text(
    "WITH inserted AS (INSERT INTO caas_chain_events (chain_id, block_number, block_hash, tx_hash, "
    "tx_index, log_index, address, contract, event, loan_id, args, topics, data, block_timestamp) "
    "SELECT CAST(:chain_id AS bigint), t.block_number, t.block_hash, t.tx_hash, t.tx_index, t.log_index, "
    "t.address, t.contract, t.event, t.loan_id, CAST(t.args AS jsonb), string_to_array(t.topics, ','), "
    "t.data, t.block_timestamp "
    "FROM unnest(CAST(:block_number AS bigint[]), CAST(:block_hash AS text[]), CAST(:tx_hash AS text[]), "
    "CAST(:tx_index AS integer[]), CAST(:log_index AS integer[]), CAST(:address AS text[]), "
    "CAST(:contract AS text[]), CAST(:event AS text[]), CAST(:loan_id AS text[]), CAST(:args AS text[]), "
    "CAST(:topics AS text[]), CAST(:data AS text[]), CAST(:block_timestamp AS bigint[])) "
    "AS t(block_number, block_hash, tx_hash, tx_index, log_index, address, contract, event, loan_id, "
    "args, topics, data, block_timestamp) "
    "ON CONFLICT (chain_id, block_hash, tx_hash, log_index) DO NOTHING RETURNING 1) "
    "SELECT count(*) FROM inserted"
)
_INSERT_BLOCKS = text(
    'INSERT INTO caas_indexed_blocks (chain_id, number, hash, parent_hash, "timestamp") '
    "SELECT CAST(:chain_id AS bigint), t.number, t.hash, t.parent_hash, t.ts "
    "FROM unnest(CAST(:number AS bigint[]), CAST(:hash AS text[]), CAST(:parent_hash AS text[]), "
    "CAST(:ts AS bigint[])) AS t(number, hash, parent_hash, ts) "
    "ON CONFLICT (chain_id, number) DO UPDATE SET hash = EXCLUDED.hash, "
    'parent_hash = EXCLUDED.parent_hash, "timestamp" = EXCLUDED."timestamp", indexed_at = now()'
)
_UNCHECKED_LOANS = text(
    "SELECT chain_loan_id FROM caas_loans WHERE event_count > 0 AND "
    "(event_chain_checked_block IS NULL OR event_chain_checked_block < last_block_number) "
    "ORDER BY last_block_number LIMIT :limit"
)
_PRUNE_BLOCKS = text("DELETE FROM caas_indexed_blocks WHERE chain_id = :chain_id AND number < :keep_from")
_SAVE_CHECKPOINT = text(
    "INSERT INTO caas_indexer_checkpoints (name, chain_id, block_number, block_hash) "
    "VALUES (:name, :chain_id, :number, :hash) ON CONFLICT (name, chain_id) DO UPDATE SET "
    "block_number = EXCLUDED.block_number, block_hash = EXCLUDED.block_hash, updated_at = now()"
)
_LOAD_CHECKPOINT = text(
    "SELECT block_number, block_hash FROM caas_indexer_checkpoints "
    "WHERE name = :name AND chain_id = :chain_id"
)


async def load_checkpoint(session: AsyncSession, *, name: str, chain_id: int) -> Checkpoint | None:
    row = (await session.execute(_LOAD_CHECKPOINT, {"name": name, "chain_id": chain_id})).first()
    return None if row is None else Checkpoint(int(row.block_number), str(row.block_hash))


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


class ChainIndexer:
    def __init__(
        self,
        *,
        db: Database,
        rpc: JsonRpc,
        deployment: Deployment,
        settings: IndexerSettings,
        metrics: IndexerMetrics | None = None,
    ) -> None:
        self.db = db
        self.rpc = rpc
        self.deployment = deployment
        self.settings = settings
        self.metrics = metrics or IndexerMetrics()
        self.chain_id = deployment.chain_id
        self.name = settings.name
        self.decoder = LogDecoder(deployment)
        self.event_chains = EventChainReader(rpc, deployment)
        self.addresses = [deployment.loan_book_address, deployment.committee_address]
        self.start_block = min(deployment.loan_book_block, deployment.committee_block)
        self.block_range = min(settings.initial_block_range, settings.max_block_range)
        self._checkpoint: Checkpoint | None = None  # cache: this process is the only writer
        self._lock_conn: AsyncConnection | None = None
        self._lock_checked = 0.0
        self._sweep_after = 0.0  # monotonic time before which verify_unchecked() rests
        # whether loans may wait for verify_unchecked(): unknown at start, then tracked, so an
        # idle indexer does not ask the database every poll
        self._unchecked_possible = True

    # -- running ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set, holding the single-writer lock throughout."""
        async with self.lock(stop) as held:
            if not held:
                return
            log.info("indexer.started", name=self.name, chain_id=self.chain_id, start_block=self.start_block)
            failures = 0
            while not stop.is_set():
                try:
                    await self._check_lock()
                    result = await self.run_once()
                    failures = 0
                except (ReorgTooDeepError, IndexerLockLostError):
                    raise
                except (
                    RpcError,
                    ChainMovedError,
                    ConcurrentWriterError,
                    OperationalError,
                    InterfaceError,
                    DBAPIError,
                    OSError,
                ) as exc:
                    # the node or the database is away, or the chain moved under a batch
                    failures += 1
                    self._checkpoint = None
                    delay = min(0.25 * 2**failures, 10.0)
                    log.warning(
                        "indexer.batch_failed", error=repr(exc)[:500], attempt=failures, retry_in_s=delay
                    )
                    await _sleep(stop, delay)
                    continue
                if result.caught_up:
                    await _sleep(stop, self.settings.poll_interval_s)

    async def catch_up(
        self, *, max_batches: int | None = None, stop: asyncio.Event | None = None
    ) -> CatchUpSummary:
        """Run batches until the checkpoint reaches head - confirmations (no lock taken: callers
        hold it, or run alone as tests do)."""
        summary = CatchUpSummary()
        started = time.perf_counter()
        while (max_batches is None or summary.batches < max_batches) and not (stop and stop.is_set()):
            result = await self.run_once()
            summary.results.append(result)
            summary.logs += result.logs
            summary.inserted += result.inserted
            summary.reorgs += bool(result.reorg_depth)
            summary.checkpoint = result.checkpoint
            summary.batches += result.to_block is not None
            if result.caught_up:
                break
        summary.seconds = time.perf_counter() - started
        return summary

    # -- single writer --------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, stop: asyncio.Event | None = None) -> AsyncIterator[bool]:
        """Session-level advisory lock on a connection of its own, held while indexing; yields
        False (lock not held) when `stop` was set while waiting for another indexer.

        AUTOCOMMIT: the lock must not keep a transaction open for hours.
        """
        conn = await (await self.db.engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        key = lock_key(self.chain_id)
        held = False
        try:
            waiting = False
            while not held:
                got = (
                    await conn.execute(
                        text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
                    )
                ).scalar_one()
                if got:
                    held = True
                    break
                holder = await _lock_holder(conn, key)
                if not self.settings.wait_for_lock:
                    raise IndexerLockHeldError(
                        f"another indexer already indexes chain {self.chain_id} into this database "
                        f"({holder}); exiting"
                    )
                if not waiting:
                    log.info("indexer.waiting_for_lock", chain_id=self.chain_id, holder=holder)
                    waiting = True
                if stop is not None:
                    await _sleep(stop, self.settings.lock_poll_s)
                    if stop.is_set():
                        break
                else:
                    await asyncio.sleep(self.settings.lock_poll_s)
            if held:
                self._lock_conn = conn
                self._lock_checked = time.monotonic()
            yield held
        finally:
            self._lock_conn = None
            # Closing the server session is the one sure way to release a session-level lock;
            # handed back to the pool, the connection would keep holding it.
            await conn.invalidate()
            await conn.close()

    async def _check_lock(self) -> None:
        if self._lock_conn is None or time.monotonic() - self._lock_checked < 5.0:
            return
        try:
            await self._lock_conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise IndexerLockLostError(f"lost the indexer lock connection: {exc!r}") from exc
        self._lock_checked = time.monotonic()

    # -- one batch ------------------------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        if self._checkpoint is None:
            async with self.db.worker_session() as session:
                stored = await load_checkpoint(session, name=self.name, chain_id=self.chain_id)
            self._checkpoint = stored or Checkpoint(self.start_block - 1, None)
        return self._checkpoint

    async def run_once(self) -> BatchResult:
        """One step: a batch committed, a reorg repaired, a range shrunk, or nothing to do."""
        started = time.perf_counter()
        found = await self.find_range()
        if isinstance(found, BatchResult):
            found.seconds = time.perf_counter() - started
            return found
        batch = found
        logs = await self.fetch_logs(batch)
        if logs is None:  # the node refused the range; it is smaller now
            return BatchResult(head=batch.head, checkpoint=batch.cursor.number)

        result = BatchResult(
            head=batch.head,
            checkpoint=batch.last,
            from_block=batch.first,
            to_block=batch.last,
            logs=len(logs),
            caught_up=batch.last >= batch.safe,
        )
        async with self.db.worker_session() as session:
            await self.process_batch(session, logs, batch, result)
        tip = batch.headers[batch.last]
        self._checkpoint = Checkpoint(batch.last, tip.hash)
        self._adapt_range(len(logs), batch.last - batch.first + 1)
        if result.caught_up:
            result.mismatches += await self.verify_unchecked(self._checkpoint)

        result.seconds = time.perf_counter() - started
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(result.seconds)
        self._observe_lag(batch.head, batch.last, caught_up=result.caught_up, timestamp=tip.timestamp)
        if result.inserted:
            log.debug(
                "indexer.batch", from_block=batch.first, to_block=batch.last, logs=len(logs),
                inserted=result.inserted, loans=result.loans, seconds=round(result.seconds, 4),
            )  # fmt: skip
        return result

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
        """Everything a batch changes, in the caller's (single) transaction."""
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
        await session.execute(
            _SAVE_CHECKPOINT,
            {"name": self.name, "chain_id": self.chain_id, "number": last, "hash": headers[last].hash},
        )
        for (contract, event), count in Counter((e.contract, e.event) for e in inserted).items():
            self.metrics.events.labels(contract, event).inc(count)
        unknown = [e for e in inserted if e.event == UNKNOWN_EVENT]
        if unknown:
            log.warning("indexer.unknown_events", count=len(unknown), first_topic=unknown[0].topics[:1])

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

    # -- reorgs ---------------------------------------------------------------------------------

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

    # -- bookkeeping ----------------------------------------------------------------------------

    def _adapt_range(self, logs: int, span: int) -> None:
        target = self.settings.target_logs_per_batch
        if logs > target:
            self.block_range = max(1, span * target // logs)
        elif logs < target // 2 and span >= self.block_range:
            self.block_range = min(self.settings.max_block_range, self.block_range * 2)
        self.metrics.block_range.set(self.block_range)

    def _observe_lag(self, head: int, indexed: int, *, caught_up: bool, timestamp: int | None = None) -> None:
        self.metrics.indexed_block.set(indexed)
        self.metrics.lag_blocks.set(max(0, head - indexed))
        if caught_up:
            self.metrics.lag_seconds.set(0)
        elif timestamp is not None:
            self.metrics.lag_seconds.set(max(0.0, time.time() - timestamp))


def _same_block(block: Any, expected_hash: str) -> bool:
    return isinstance(block, Mapping) and str(block.get("hash", "")).lower() == expected_hash


def _check_linked(headers: Mapping[int, Header], first: int, last: int) -> None:
    for number in range(first + 1, last + 1):
        if headers[number].parent_hash != headers[number - 1].hash:
            raise ChainMovedError(f"blocks {number - 1} and {number} do not link: the chain moved")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _lock_holder(conn: AsyncConnection, key: str) -> str:
    """Who holds the lock, for the message (best effort: needs pg_stat_activity visibility)."""
    try:
        row = (
            await conn.execute(
                text(
                    "SELECT a.pid, a.application_name, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND ((l.classid::bigint << 32) | l.objid::bigint) = "
                    "(hashtextextended(:key, 0) & x'ffffffffffffffff'::bigint) LIMIT 1"
                ),
                {"key": key},
            )
        ).first()
    except Exception:
        return "holder unknown"
    if row is None:
        return "holder unknown"
    return f"pid {row.pid}, application {row.application_name or '?'}"


async def run_indexer(
    *,
    settings: Settings,
    stop: asyncio.Event,
    db: Database | None = None,
    metrics: IndexerMetrics | None = None,
    once: bool = False,
) -> CatchUpSummary | None:
    """What the orchestration service and `caas index` run: connect, check that the node serves
    the chain the deployment file describes, take the single-writer lock, then index until
    `stop` (or, with `once`, until caught up with head - confirmations)."""
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise IndexerError("CHAIN_RPC_URL and DEPLOYMENT_FILE must be set to index the chain")
    if db is None and not settings.database.url:
        raise IndexerError("DATABASE_URL must be set to index the chain")
    try:
        deployment = Deployment.load(settings.chain.deployment_file)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexerError(
            f"cannot read the deployment file {settings.chain.deployment_file}: {exc!r}"
        ) from exc
    own_db = db is None
    database = db or Database.from_settings(settings.database, application_name="caas-indexer")
    rpc = JsonRpc(
        settings.chain.endpoints or [settings.chain.rpc_url or ""],  # CHAIN_RPC_URLS failover
        timeout_s=settings.chain.rpc_timeout_s,
        batch_size=settings.indexer.rpc_batch_size,
    )
    try:
        chain_id = hex_int(await rpc.call("eth_chainId"))
        if chain_id != deployment.chain_id:
            raise IndexerError(
                f"node serves chain {chain_id}, the deployment file is for chain {deployment.chain_id}"
            )
        indexer = ChainIndexer(
            db=database, rpc=rpc, deployment=deployment, settings=settings.indexer, metrics=metrics
        )
        if not once:
            await indexer.run(stop)
            return None
        async with indexer.lock(stop) as held:
            if not held:
                return None
            return await indexer.catch_up(stop=stop)
    finally:
        await rpc.aclose()
        if own_db:
            await database.dispose()
