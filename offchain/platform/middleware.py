"""Request context: X-Request-ID, one access log line, and metrics per route template.

A plain ASGI middleware (not BaseHTTPMiddleware): no extra task per request and streaming
bodies pass straight through.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offchain.platform.logging import get_logger
from offchain.platform.metrics import UNMATCHED_ROUTE, ServiceMetrics

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


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED_ROUTE


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, service: str, metrics: ServiceMetrics) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("X-Request-ID", request_id)
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(service=self.service, request_id=request_id)
        started = time.perf_counter()
        self.metrics.in_flight.labels(self.service).inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.in_flight.labels(self.service).dec()
            route = route_template(scope)
            self.metrics.observe(method=scope["method"], route=route, status=status, seconds=elapsed)
            path: str = scope["path"]
            emit = log.debug if path.startswith(_QUIET_PREFIXES) and status < 500 else log.info
            emit(
                "http.request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**tokens)
