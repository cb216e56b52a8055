"""Prometheus metrics of the chain indexer.

Created unregistered: the orchestration service registers them in its own registry (so they show
on :8008/metrics), `caas index --metrics-port` in a registry of its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IndexerMetrics:
    def __init__(self) -> None:
        self.head_block = Gauge(
            "caas_indexer_head_block", "Latest block number the node reports.", registry=None
        )
        self.indexed_block = Gauge(
            "caas_indexer_indexed_block", "Block number of the indexer's checkpoint.", registry=None
        )
        self.lag_blocks = Gauge("caas_indexer_lag_blocks", "Head block minus indexed block.", registry=None)
        self.lag_seconds = Gauge(
            "caas_indexer_lag_seconds",
            "While blocks wait to be indexed: seconds since the indexed block's timestamp; 0 when caught up.",
            registry=None,
        )
        self.events = Counter(
            "caas_indexer_events_total",
            "Chain events indexed, by contract and event.",
            ["contract", "event"],
            registry=None,
        )
        self.batches = Counter("caas_indexer_batches_total", "Batches committed.", registry=None)
        self.batch_seconds = Histogram(
            "caas_indexer_batch_duration_seconds",
            "Time from fetching a batch's logs to its commit.",
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.block_range = Gauge(
            "caas_indexer_block_range", "Current adaptive eth_getLogs block range.", registry=None
        )
        self.range_shrinks = Counter(
            "caas_indexer_range_shrinks_total", "eth_getLogs ranges halved after a node refusal.",
            registry=None,
        )  # fmt: skip
        self.reorgs = Counter("caas_indexer_reorgs_total", "Reorgs detected and repaired.", registry=None)
        self.reorg_depth = Gauge(
            "caas_indexer_last_reorg_depth", "Depth of the last repaired reorg.", registry=None
        )
        self.event_chain_mismatches = Counter(
            "caas_indexer_event_chain_mismatches_total",
            "Loans whose indexed event chain differed from LoanBook.event_chain when checked.",
            registry=None,
        )
        self.halted = Gauge(
            "caas_indexer_halted",
            "1 when the indexer stopped on an error it must not work around (reorg deeper than the window).",
            registry=None,
        )

    def collectors(self) -> list[object]:
        return [value for value in vars(self).values() if hasattr(value, "collect")]

    def register(self, registry: CollectorRegistry) -> IndexerMetrics:
        for collector in self.collectors():
            registry.register(collector)  # type: ignore[arg-type]
        return self
