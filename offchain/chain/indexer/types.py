"""The indexer's values and errors: checkpoints, headers, batches, results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from offchain.chain.jsonrpc import hex_int

REORG_TOPIC = "chain.Reorged"


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
