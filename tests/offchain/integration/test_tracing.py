"""One trace from a partner's request through the outbox to the consumer; ids to other services.

Real parts throughout: the gateway app on the session's PostgreSQL, the outbox relay to Redis
Streams, a StreamConsumer, a real HTTP server for outgoing calls. The spans are collected by
the OpenTelemetry SDK's own in-memory exporter on the process's tracer provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy import select

from offchain.eventbus.consumer import StreamConsumer
from offchain.eventbus.messages import Event, StreamNames
from offchain.eventbus.relay import relay_batch
from offchain.persistence.models import OutboxMessage
from offchain.platform import auth
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.platform.tracing import configure_tracing, current_ids
from offchain.services.gateway.app import create_app
from offchain.services.registry import SERVICES

pytestmark = pytest.mark.asyncio

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans(settings: Settings):
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    configure_tracing(settings.tracing, "test").add_span_processor(processor)
    yield exporter
    processor.shutdown()


@pytest_asyncio.fixture(params=["none", "console"])
async def gateway(request, settings: Settings):
    # "none": FastAPI's own server spans; "console" (any exporter): the FastAPI instrumentation's.
    # The process's provider exists already, so nothing is printed.
    tracing = settings.tracing.model_copy(update={"exporter": request.param})
    app = create_app(settings.model_copy(update={"tracing": tracing}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http:
            yield http


async def test_trace__gateway_request_to_outbox_event_to_consumer(
    gateway, spans, settings: Settings, db: Database, redis: Redis
):
    partner = uuid.uuid4()
    token = auth.issue_token(settings.auth.jwt_secret.get_secret_value(), partner_id=partner)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    response = await gateway.post(
        "/v1/applications",
        json={
            "external_id": f"ext-{uuid.uuid4()}",
            "borrower": {"sme_user_id": "sme-user-42"},
            "amount": {"value": 500_000_00, "currency": "NGN"},
            "tenor_months": 6,
            "purpose": "working capital",
        },
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-ID": request_id,
            # the partner's own trace: the gateway continues it
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        },
    )
    assert response.status_code == 201, response.text
    application_id = response.json()["id"]

    # the outbox row carries the request id and the trace context
    async with db.worker_session() as session:
        headers = (
            await session.execute(
                select(OutboxMessage.headers).where(
                    OutboxMessage.topic == "credit.application.submitted",
                    OutboxMessage.key == application_id,
                )
            )
        ).scalar_one()
    assert headers["request_id"] == request_id
    assert headers["traceparent"].split("-")[1] == CALLER_TRACE

    names = StreamNames(settings.events.stream_prefix)
    while await relay_batch(db, redis, names, batch=500):
        pass
    seen: list[tuple[Event, tuple[str, str] | None, str | None]] = []

    async def handler(event: Event) -> None:
        import structlog

        if event.key == application_id:
            seen.append((event, current_ids(), structlog.contextvars.get_contextvars().get("request_id")))

    consumer = StreamConsumer(
        redis,
        group=f"tracing-{uuid.uuid4().hex[:8]}",
        name="c1",
        topics=["credit.application.submitted"],
        handler=handler,
        names=names,
        block_ms=50,
    )
    await consumer.setup()
    for _ in range(20):
        await consumer.poll_once(block_ms=50)
        if seen:
            break
    assert len(seen) == 1
    _, ids, handler_request_id = seen[0]
    assert ids is not None and ids[0] == CALLER_TRACE
    assert handler_request_id == request_id

    finished = spans.get_finished_spans()
    server = [
        s for s in finished if s.kind is SpanKind.SERVER and s.attributes.get("caas.request_id") == request_id
    ]
    assert len(server) == 1
    server_span = server[0]
    assert format(server_span.context.trace_id, "032x") == CALLER_TRACE
    assert format(server_span.parent.span_id, "016x") == CALLER_SPAN
    assert server_span.attributes["caas.service"] == "gateway"
    consumer_spans = [
        s
        for s in finished
        if s.kind is SpanKind.CONSUMER and s.attributes.get("caas.event_id") == seen[0][0].id
    ]
    assert len(consumer_spans) == 1
    consumer_span = consumer_spans[0]
    # same trace, and the consumer's parent is the gateway request's span that published it
    # (the server span, or FastAPI's endpoint span under it)
    assert consumer_span.context.trace_id == server_span.context.trace_id
    by_id = {s.context.span_id: s for s in finished}
    ancestors, parent = [], consumer_span.parent
    while parent is not None and parent.span_id in by_id:
        ancestors.append(by_id[parent.span_id])
        parent = by_id[parent.span_id].parent
    assert server_span in ancestors
    assert all(span.attributes.get("caas.service") in (None, "gateway") for span in ancestors)
    assert consumer_span.name == "process credit.application.submitted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def echo_server():
    """Another service, over real HTTP: answers with the headers it received."""
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> dict:
        return dict(request.headers)

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server offers a flag, not an event
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/echo"
    finally:
        server.should_exit = True
        await task


async def test_outgoing_calls__carry_request_id_and_traceparent(spans, settings: Settings):
    import structlog

    resources = AppResources.open(SERVICES["gateway"], settings)
    try:
        async with echo_server() as url:
            tokens = structlog.contextvars.bind_contextvars(request_id="req-outgoing-1")
            try:
                # a request a caller asked to be sampled (traceparent flags 01)
                caller = propagate.extract({"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
                with trace.get_tracer("test").start_as_current_span(
                    "handling a request", context=caller
                ) as span:
                    received = (await resources.http.get(url)).json()
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
    finally:
        await resources.close()
    assert received["x-request-id"] == "req-outgoing-1"
    _version, trace_id, _parent, _flags = received["traceparent"].split("-")
    assert trace_id == CALLER_TRACE == format(span.get_span_context().trace_id, "032x")
    client_spans = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert any(s.context.trace_id == span.get_span_context().trace_id for s in client_spans)
