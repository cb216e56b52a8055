"""OpenTelemetry tracing: one trace from a partner's request to the work it causes elsewhere.

- Every service app is instrumented (FastAPI server spans; incoming W3C `traceparent` honoured).
- Outgoing httpx calls carry `traceparent` (httpx instrumentation) and `X-Request-ID` (an event
  hook on the service's client), so the other services continue the same trace and request id.
- Outbox events carry the trace context and the request id in their headers
  (offchain.eventbus.outbox), and a consumer handles each event inside a CONSUMER span whose
  parent is the producer's span (offchain.eventbus.consumer): gateway request -> outbox event ->
  consumer, one trace id.
- Log lines carry `trace_id` and `span_id` while a span is current.

Export is a setting (`TracingSettings`): "none" (default: context flows, nothing is exported),
"console", or OTLP/HTTP when an endpoint is set. Without an exporter root spans are not recorded
(sample ratio 0): a request that brings no `traceparent` then gets no spans at all (its request
id still ties its log lines and events together; the unrecorded spans were ~13 % of the CPU of
the partner API's hottest read), while a caller's own trace is continued and its sampled flag
honoured either way. The tracer provider is process-wide (the
OpenTelemetry API allows one): the first service a process starts names it unless
OTEL_SERVICE_NAME says otherwise; spans also carry `caas.service`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from offchain.platform.settings import TracingSettings

_TRACER_NAME = "caas"
# probes and scrapes every few seconds would be most of the traces
_EXCLUDED_URLS = "/health/live,/health/ready,/metrics"


def configure_tracing(settings: TracingSettings, service: str) -> TracerProvider:
    """The process's SDK tracer provider, created (with its exporter) on the first call."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name or service, "service.namespace": "caas"}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.effective_sample_ratio)),
    )
    exporter = settings.effective_exporter
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = (settings.otlp_endpoint or "http://127.0.0.1:4318").rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # every httpx client of the process, the rails' own included, sends `traceparent`
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


def instrument_app(app: Any, settings: TracingSettings, service: str) -> None:
    """Server spans for the app's requests.

    FastAPI itself emits OpenTelemetry spans (server, dependencies, endpoint) once an SDK
    provider is set, which is enough to carry context. When spans are exported, the
    opentelemetry-instrumentation-fastapi middleware takes over the server spans (FastAPI then
    leaves them to it) for the full HTTP semantic conventions. Without an exporter it is left
    out: its per-request work (matching the path against every route to name a span nobody
    records) was ~12 % of a cached read.
    """
    provider = configure_tracing(settings, service)
    if settings.effective_exporter == "none":
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=_EXCLUDED_URLS,
        # one server span per request, not three (no spans per ASGI receive/send message)
        exclude_spans=["receive", "send"],
    )


def probe_or_scrape(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(("/health/", "/metrics"))


def _brings_trace(scope: MutableMapping[str, Any]) -> bool:
    return any(name == b"traceparent" for name, _ in scope.get("headers", ()))


def untraced_requests(settings: TracingSettings) -> Callable[[MutableMapping[str, Any]], bool]:
    """FastAPI's `telemetry.exclude`: the requests that get no spans.

    Probes and scrapes never; without an exporter and sampling, every request that does not
    continue a caller's trace either (its spans could not be recorded).
    """
    if settings.effective_exporter != "none" or settings.effective_sample_ratio > 0:
        return probe_or_scrape

    def exclude(scope: MutableMapping[str, Any]) -> bool:
        return probe_or_scrape(scope) or not _brings_trace(scope)

    return exclude


def tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in W3C hex of the current span, if there is one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def add_trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: trace_id / span_id on every line logged inside a span."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def inject_context(headers: MutableMapping[str, Any]) -> None:
    """Write the current trace context (`traceparent`, `tracestate`) into event headers."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


@contextlib.contextmanager
def consumer_span(
    *, topic: str, headers: dict[str, Any], group: str, message_id: str, event_id: int
) -> Iterator[trace.Span]:
    """A CONSUMER span for handling one event, child of the span that published it; the
    event's request id is bound for the handler's log lines."""
    parent = propagate.extract(headers)
    attributes: dict[str, str | int] = {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.message.id": message_id,
        "caas.event_id": event_id,
    }
    request_id = headers.get("request_id")
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id) if request_id else {}
    try:
        with tracer().start_as_current_span(
            f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span
    finally:
        if tokens:
            structlog.contextvars.reset_contextvars(**tokens)


async def _add_request_id(request: httpx.Request) -> None:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id and "x-request-id" not in request.headers:
        request.headers["X-Request-ID"] = str(request_id)


REQUEST_ID_HOOKS: dict[str, list[Any]] = {"request": [_add_request_id]}
