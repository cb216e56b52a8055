"""health:8010's own gauges: the platform's health as Prometheus sees it (ops/prometheus/alerts.yml).

Set on every evaluation, whether by `GET /v1/health` or by the service's monitor loop, so the
alerts work with nobody calling the API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from offchain.domain.health import GroupBacklog

STATUS_VALUE = {"healthy": 0, "degraded": 1, "down": 2}


class HealthMetrics:
    """Created unregistered, then registered into the health app's own registry."""

    def __init__(self) -> None:
        self.platform = Gauge(
            "caas_health_platform_status",
            "Overall HealthStatus: 0 healthy, 1 degraded, 2 down.",
            registry=None,
        )
        self.component = Gauge(
            "caas_health_component_status",
            "Status of one HealthStatus entry: 0 healthy, 1 degraded, 2 down.",
            ["group", "component"],
            registry=None,
        )
        self.component_latency = Gauge(
            "caas_health_component_latency_seconds",
            "Latency of the last probe of one HealthStatus entry.",
            ["group", "component"],
            registry=None,
        )
        self.head_block = Gauge("caas_health_chain_head_block", "Latest block number.", registry=None)
        self.head_age = Gauge(
            "caas_health_chain_head_age_seconds", "Seconds since the latest block's timestamp.", registry=None
        )
        self.indexer_lag = Gauge(
            "caas_health_indexer_lag_blocks",
            "Blocks between head - confirmations and the indexer's checkpoint (-1: no checkpoint).",
            registry=None,
        )
        self.outbox_unpublished = Gauge(
            "caas_health_outbox_unpublished", "Outbox rows not relayed to Redis yet.", registry=None
        )
        self.outbox_oldest = Gauge(
            "caas_health_outbox_oldest_age_seconds",
            "Age of the oldest unrelayed outbox row (0 when none).",
            registry=None,
        )
        self.stream_backlog = Gauge(
            "caas_health_stream_backlog",
            "Per consumer group: pending (unacknowledged) plus undelivered stream entries.",
            ["stream", "group"],
            registry=None,
        )
        self.dead_letters = Gauge(
            "caas_health_dead_letters", "Entries in a consumer group's dead-letter stream.", ["group"],
            registry=None,
        )  # fmt: skip
        self.intents = Gauge(
            "caas_health_tx_intents", "Transaction intents not final yet, by status.", ["status"],
            registry=None,
        )  # fmt: skip
        self.intent_oldest = Gauge(
            "caas_health_tx_intent_oldest_age_seconds",
            "Age of the oldest transaction intent not final yet (0 when none).",
            registry=None,
        )
        self.intents_failed = Gauge(
            "caas_health_tx_intents_failed_last_hour",
            "Intents that failed at estimation or reverted on chain in the last hour.",
            registry=None,
        )

    def register(self, registry: CollectorRegistry) -> HealthMetrics:
        for value in vars(self).values():
            if isinstance(value, Gauge):
                registry.register(value)
        return self

    def observe_report(self, report: dict[str, Any]) -> None:
        self.platform.set(STATUS_VALUE[report["status"]])
        for group in ("smeServices", "caasServices", "dependencies", "queues"):
            for name, entry in report.get(group, {}).items():
                self.component.labels(group, name).set(STATUS_VALUE[entry["status"]])
                if entry.get("latency_ms") is not None:
                    self.component_latency.labels(group, name).set(entry["latency_ms"] / 1000)

    def observe_streams(self, groups: Iterable[GroupBacklog], dead: dict[str, int]) -> None:
        for group in groups:
            self.stream_backlog.labels(group.stream, group.group).set(group.backlog)
        for name, count in dead.items():
            self.dead_letters.labels(name).set(count)
