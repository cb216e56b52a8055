"""A request body limit on every service: 413 problem+json without reading the rest.

A declared Content-Length over the limit is answered before the app runs and before one byte of
the body is read, with `Connection: close` (the server drops the connection instead of draining
what the client still sends). A chunked body is counted as it is read and refused the moment it
passes the limit. The limit is `LIMITS__MAX_BODY_BYTES` (1 MiB); the few upload routes a service
names get `LIMITS__MAX_UPLOAD_BYTES`.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offchain.platform.problems import problem_response

BODY_TOO_LARGE = "urn:caas:problem:body-too-large"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a chunked body passes the limit; FastAPI hands an
    HTTPException from the body read to the problem handlers as it is."""

    problem_type = BODY_TOO_LARGE

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, detail=f"the request body is larger than {limit} bytes", headers={"Connection": "close"}
        )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, upload_paths: Collection[str] = (), max_upload_bytes: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_paths = frozenset(upload_paths)
        self.max_upload_bytes = max(max_upload_bytes, max_bytes)

    def _limit(self, scope: Scope) -> int:
        return self.max_upload_bytes if scope.get("path") in self.upload_paths else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            response = problem_response(
                Request(scope),
                413,
                type=BODY_TOO_LARGE,
                title="Request body too large",
                detail=f"the request body is larger than {limit} bytes",
                headers={"Connection": "close"},
                max_bytes=limit,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
