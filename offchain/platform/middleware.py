"""Request context: X-Request-ID, one access log line, and metrics per route template.

A plain ASGI middleware (not BaseHTTPMiddleware): no extra task per request and streaming
bodies pass straight through. The access line is pre-rendered JSON written in one call (see
offchain.platform.logging.access_log_writer); it can be switched off (LOG_ACCESS=false) while
the per-route metrics stay.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring as json_string
from typing import Any

import structlog
from opentelemetry import trace
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offchain.platform.logging import access_log_writer, get_logger
from offchain.platform.metrics import UNMATCHED_ROUTE, ServiceMetrics
from offchain.platform.problems import unexpected_response
from offchain.platform.tracing import current_ids

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is echoed into logs and headers: accept only short, boring ones.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes and scrapes run every few seconds; logging each at INFO drowns the real traffic.
_QUIET_PREFIXES = ("/health/", "/metrics")

log = get_logger("caas.http")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _SAFE_REQUEST_ID.match(candidate) else None
    return None


def _new_request_id() -> str:
    # 128 random bits as uuid4().hex has, from the process's PRNG instead of os.urandom: a
    # request id must be unique, not unguessable, and the syscall was 1.5 % of a cached read
    return f"{random.getrandbits(128):032x}"


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED_ROUTE


# Headers a service adds to every answer from what its handlers left in the request's scope
# (the gateway's RateLimit-*): (lower-case name, value) pairs; one the answer has already wins.
ResponseHeaders = Callable[[Scope], list[tuple[bytes, bytes]]]


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        metrics: ServiceMetrics,
        access_log: bool = True,
        log_format: str = "json",
        response_headers: ResponseHeaders | None = None,
    ) -> None:
        self.app = app
        self.response_headers = response_headers
        self.service = service
        self._service_json = json_string(service)
        self.metrics = metrics
        self.access_log = access_log
        self.log_format = log_format
        self._in_flight = metrics.in_flight.labels(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                # raw (name, value) pairs as Starlette gives them: names are lower-case bytes
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}
                if b"x-request-id" not in present:
                    headers.append((b"x-request-id", request_id.encode()))
                if self.response_headers is not None:
                    headers += [pair for pair in self.response_headers(scope) if pair[0] not in present]
                message["headers"] = headers
            await send(message)

        span = trace.get_current_span()  # the request's server span (offchain.platform.tracing)
        if span.is_recording():
            span.set_attributes({"caas.service": self.service, "caas.request_id": request_id})
        tokens = structlog.contextvars.bind_contextvars(service=self.service, request_id=request_id)
        started = time.perf_counter()
        self._in_flight.inc()
        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started_response:
                    # Part of an answer is on the wire: nothing valid can follow it. Logged here
                    # with the request's ids; uvicorn then closes the connection (it must).
                    log.error("http.exception_mid_response", path=scope["path"], exc_info=exc)
                    raise
                await self._answer_unexpected(scope, receive, send_with_id, exc)
        finally:
            elapsed = time.perf_counter() - started
            self._in_flight.dec()
            route = route_template(scope)
            self.metrics.observe(method=scope["method"], route=route, status=status, seconds=elapsed)
            if self.access_log:
                self._log(scope, route, status, elapsed, request_id)
            structlog.contextvars.reset_contextvars(**tokens)

    @staticmethod
    async def _answer_unexpected(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer an unhandled exception here, inside the request's log context and span, and do
        not re-raise it: Starlette's ServerErrorMiddleware would answer and then re-raise to
        uvicorn, which logs it again without the request id and closes the keep-alive
        connection (the client's next request on it got ECONNRESET)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        response = unexpected_response(Request(scope), exc)
        await response(scope, receive, send)

    def _log(self, scope: Scope, route: str, status: int, elapsed: float, request_id: str) -> None:
        quiet = scope["path"].startswith(_QUIET_PREFIXES) and status < 500
        # resolved per request: logging is configured (and reconfigured by tests) after app creation
        write = None if quiet else access_log_writer(self.log_format)
        if write is None:
            emit = log.debug if quiet else log.info
            emit(
                "http.request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            return
        # The fields and order structlog's JSON renderer gives every other line, rendered here
        # from a template (4 µs a line; a dict through json.dumps took 7).
        # Strings that come from outside (method, request id) go through the JSON encoder's own
        # escaping; the request id is also restricted to safe characters on the way in.
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        ids = current_ids()
        trace_fields = "" if ids is None else f', "trace_id": "{ids[0]}", "span_id": "{ids[1]}"'
        write(
            f'{{"method": {json_string(scope["method"])}, "route": {json_string(route)}, '
            f'"status": {status}, "duration_ms": {round(elapsed * 1000, 2)!r}, '
            f'"service": {self._service_json}, "request_id": {json_string(request_id)}, '
            f'"event": "http.request", "logger": "caas.http", "level": "info", '
            f'"timestamp": "{timestamp}"{trace_fields}}}\n'
        )
