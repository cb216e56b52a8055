"""One way to call the SME platform's JSON services: a timeout, bounded retries with backoff on
what is worth retrying (unreachable, 5xx, 429), and the platform's answers as typed errors.

Callers only retry calls a repeat cannot harm: reads, and writes made idempotent by our reference.
"""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

TIMEOUT = httpx.Timeout(10.0, connect=2.0)


class SmeUnavailable(RuntimeError):
    """Not reachable, or answered 5xx / 429: worth another try later."""


class SmeNotFound(LookupError):
    pass


class SmeRefused(Exception):
    """A 4xx other than 404 and 429: the request itself is refused; repeating it will not help."""


async def call(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json: dict[str, Any] | None = None,
    attempts: int = 3,
    what: str = "SME platform",
) -> Any:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=0.2, max=2.0),
        retry=retry_if_exception_type(SmeUnavailable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            try:
                response = await http.request(method, url, json=json, timeout=TIMEOUT)
            except httpx.HTTPError as error:
                raise SmeUnavailable(f"{what} unreachable: {error}") from error
            if response.status_code == 404:
                raise SmeNotFound(url)
            if response.status_code >= 500 or response.status_code == 429:
                raise SmeUnavailable(f"{what} answered {response.status_code}")
            if response.status_code >= 400:
                raise SmeRefused(response.text[:500])
            return response.json()
    raise AssertionError("unreachable")  # pragma: no cover
