"""Prometheus metrics of the notifications service.

Created unregistered and registered into the service's own registry (its /metrics), as the
orchestration service does with the indexer's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from offchain.platform.metrics import LATENCY_BUCKETS


class NotificationMetrics:
    def __init__(self) -> None:
        self.events_stored = Counter(
            "caas_webhook_events_stored_total", "Partner events stored, by type.", ["type"], registry=None
        )
        self.deliveries_created = Counter(
            "caas_webhook_deliveries_created_total",
            "Deliveries created for subscribed endpoints (events and replays).",
            registry=None,
        )
        self.attempts = Counter(
            "caas_webhook_delivery_attempts_total",
            "Webhook POSTs made, by outcome (delivered, http_error, timeout, network_error).",
            ["outcome"],
            registry=None,
        )
        self.dead_lettered = Counter(
            "caas_webhook_deliveries_dead_lettered_total",
            "Deliveries given up after the retry window.",
            registry=None,
        )
        self.attempt_seconds = Histogram(
            "caas_webhook_delivery_duration_seconds",
            "Time of one webhook POST, until the endpoint's status line.",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.lag_seconds = Gauge(
            "caas_webhook_delivery_lag_seconds",
            "How long the oldest due delivery has waited for a worker; 0 when none is due.",
            registry=None,
        )
        self.pending = Gauge(
            "caas_webhook_deliveries_pending", "Deliveries not yet delivered nor dead.", registry=None
        )
        self.event_age_seconds = Histogram(
            "caas_webhook_delivery_event_age_seconds",
            "From the event's creation to its successful delivery.",
            buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 6 * 3600, 86_400, 3 * 86_400),
            registry=None,
        )
        self.borrower_messages = Counter(
            "caas_borrower_messages_total",
            "Borrower messages, by channel and outcome (sent, rejected, failed, duplicate).",
            ["channel", "outcome"],
            registry=None,
        )

    def collectors(self) -> list[object]:
        return [value for value in vars(self).values() if hasattr(value, "collect")]

    def register(self, registry: CollectorRegistry) -> NotificationMetrics:
        for collector in self.collectors():
            registry.register(collector)  # type: ignore[arg-type]
        return self
