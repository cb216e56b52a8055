"""The indexer loop as a template method (safe-transaction-service's indexers):

    run(stop) -> run_once(): find_range -> fetch_logs -> process_batch + save_checkpoint, one
    transaction -> after_batch

A subclass says what a range is, what is read in it and what it writes; the base holds the
single-writer lock, the cursor, the retry loop and the lag metrics.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from offchain.chain.indexer.metrics import IndexerMetrics
from offchain.chain.indexer.sql import _SAVE_CHECKPOINT, load_checkpoint
from offchain.chain.indexer.types import (
    Batch,
    BatchResult,
    CatchUpSummary,
    ChainMovedError,
    Checkpoint,
    ConcurrentWriterError,
    IndexerLockHeldError,
    IndexerLockLostError,
    ReorgTooDeepError,
    lock_key,
)
from offchain.chain.jsonrpc import JsonRpc, RpcError
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import IndexerSettings
from offchain.platform.stopping import wait_or_stop

log = get_logger("offchain.chain.indexer")


class IndexerBase(ABC):
    def __init__(
        self,
        *,
        db: Database,
        rpc: JsonRpc,
        settings: IndexerSettings,
        chain_id: int,
        start_block: int,
        metrics: IndexerMetrics | None = None,
    ) -> None:
        self.db = db
        self.rpc = rpc
        self.settings = settings
        self.metrics = metrics or IndexerMetrics()
        self.chain_id = chain_id
        self.name = settings.name
        self.start_block = start_block
        self._checkpoint: Checkpoint | None = None  # cache: this process is the only writer
        self._lock_conn: AsyncConnection | None = None
        self._lock_checked = 0.0

    # -- the steps a subclass provides ------------------------------------------------------------

    @abstractmethod
    async def find_range(self) -> Batch | BatchResult:
        """The next batch, or the result of a step with nothing to index (caught up, repaired)."""

    @abstractmethod
    async def fetch_logs(self, batch: Batch) -> list[Any] | None:
        """The batch's elements; None when the node refused the range (retried smaller)."""

    @abstractmethod
    async def process_batch(
        self, session: AsyncSession, logs: Sequence[Any], batch: Batch, result: BatchResult
    ) -> None:
        """Everything a batch writes but the checkpoint, in the caller's (single) transaction."""

    async def after_batch(self, batch: Batch, result: BatchResult, *, logs: int) -> None:
        """After the commit: tune the range, catch-up work (a hook; nothing by default)."""
        return None

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
                    await wait_or_stop(stop, delay)
                    continue
                if result.caught_up:
                    await wait_or_stop(stop, self.settings.poll_interval_s)

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
                    await wait_or_stop(stop, self.settings.lock_poll_s)
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

    async def save_checkpoint(self, session: AsyncSession, batch: Batch) -> None:
        """The cursor moves in the same transaction as the rows the batch wrote."""
        await session.execute(
            _SAVE_CHECKPOINT,
            {
                "name": self.name,
                "chain_id": self.chain_id,
                "number": batch.last,
                "hash": batch.headers[batch.last].hash,
            },
        )

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
            await self.save_checkpoint(session, batch)
        tip = batch.headers[batch.last]
        self._checkpoint = Checkpoint(batch.last, tip.hash)
        await self.after_batch(batch, result, logs=len(logs))

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

    def _observe_lag(self, head: int, indexed: int, *, caught_up: bool, timestamp: int | None = None) -> None:
        self.metrics.indexed_block.set(indexed)
        self.metrics.lag_blocks.set(max(0, head - indexed))
        if caught_up:
            self.metrics.lag_seconds.set(0)
        elif timestamp is not None:
            self.metrics.lag_seconds.set(max(0.0, time.time() - timestamp))


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
