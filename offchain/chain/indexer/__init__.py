"""The chain indexer: LoanBook and DisbursementCommittee logs into `caas_` tables.

A template method in the manner of safe-transaction-service's indexers (`base.IndexerBase`):

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

Modules: `base` (the template: lock, cursor, loop), `loans` (ChainIndexer: its steps), `reorg`
(repair), `event_chain` (the check against LoanBook.event_chain), `sql`, `types`, `metrics`,
`runner` (`run_indexer`).
"""

from offchain.chain.indexer.base import IndexerBase
from offchain.chain.indexer.event_chain import EventChainReader
from offchain.chain.indexer.loans import ChainIndexer
from offchain.chain.indexer.metrics import IndexerMetrics
from offchain.chain.indexer.runner import run_indexer
from offchain.chain.indexer.sql import load_checkpoint
from offchain.chain.indexer.types import (
    REORG_TOPIC,
    Batch,
    BatchResult,
    CatchUpSummary,
    ChainMovedError,
    Checkpoint,
    ConcurrentWriterError,
    Header,
    IndexerError,
    IndexerLockHeldError,
    IndexerLockLostError,
    ReorgTooDeepError,
    lock_key,
)

__all__ = [
    "REORG_TOPIC",
    "Batch",
    "BatchResult",
    "CatchUpSummary",
    "ChainIndexer",
    "ChainMovedError",
    "Checkpoint",
    "ConcurrentWriterError",
    "EventChainReader",
    "Header",
    "IndexerBase",
    "IndexerError",
    "IndexerLockHeldError",
    "IndexerLockLostError",
    "IndexerMetrics",
    "ReorgTooDeepError",
    "load_checkpoint",
    "lock_key",
    "run_indexer",
]
