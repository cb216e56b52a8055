"""Prometheus metrics, one registry per service.

Eleven services can share a process (`caas up`); each `/metrics` must still show only its own
traffic, so every app gets its own CollectorRegistry instead of the global one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# `_created` timestamp series double every counter's output for no use on our dashboards.
disable_created_metrics()

# Seconds; dense below 100 ms where API calls should live, sparse up to the 30 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED_ROUTE = "<unmatched>"  # 404s must not create one series per probed URL


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "caas_http_requests_total",
            "HTTP requests handled, by route template and status code.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "caas_http_request_duration_seconds",
            "Time to produce the HTTP response, by route template.",
            ["service", "method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "caas_http_requests_in_flight",
            "HTTP requests being handled now.",
            ["service"],
            registry=self.registry,
        )

        # The labelled children of each (method, route, status), looked up once: `labels()`
        # builds and checks its label tuple under a lock on every call. Routes are templates and
        # statuses few, so this stays as small as the series themselves.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = self._children[(method, route, status)] = (
                self.requests.labels(self.service, method, route, str(status)),
                self.latency.labels(self.service, method, route),
            )
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
