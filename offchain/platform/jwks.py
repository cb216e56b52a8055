"""SME auth service: its JWKS, cached, for verifying the RS256 partner tokens it issues.

Wire: `GET {base}/sme/auth/.well-known/jwks.json` -> `{"keys": [JWK, ...]}` (RFC 7517), RSA keys
with a `kid`; tokens name their key in the header's `kid`.

Caching and rotation: the key set is kept for `cache_ttl_s`. A token naming a `kid` the cache does
not hold triggers one refetch (the auth service has rotated), but at most once per
`min_refresh_interval_s`, so a flood of tokens with made-up `kid`s cannot turn into a flood of
fetches. Concurrent callers share one fetch. When a refetch fails, the keys already held keep
serving for up to `max_stale_s` past their TTL (the auth service being briefly down must not
lock every partner out), never longer. Fetches have a timeout and bounded retries.

`JwksClient` is the `KeyResolver` that `offchain.platform.auth.JwtVerifier` takes for RS256.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem
from offchain.platform.settings import Settings

JWKS_PATH = "/sme/auth/.well-known/jwks.json"
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

log = get_logger(__name__)


class SigningKeyNotFound(Problem):
    """The token names a key the auth service does not publish: the token is not ours to accept."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            401,
            "urn:caas:problem:unauthenticated",
            title="Authentication required",
            detail=detail,
            headers={"WWW-Authenticate": 'Bearer realm="caas", error="invalid_token"'},
        )


class JwksUnavailable(Problem):
    """The key set cannot be fetched and no usable cached copy exists."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            503, "urn:caas:problem:auth-unavailable", title="Token verification unavailable", detail=detail
        )


class _Retryable(Exception):
    pass


def jwks_url(settings: Settings) -> str | None:
    """JWKS_URL if set, else the JWKS of the SME auth service (or simulator) configured."""
    if settings.auth.jwks_url:
        return settings.auth.jwks_url
    base = settings.rails.sme_service_urls()["auth"]
    return base.rstrip("/") + JWKS_PATH if base else None


class JwksClient:
    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        cache_ttl_s: float = 300.0,
        min_refresh_interval_s: float = 5.0,
        max_stale_s: float = 3_600.0,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        attempts: int = 3,
        backoff_s: float = 0.1,
        algorithms: tuple[str, ...] = ("RS256",),
    ) -> None:
        self.url = url
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()
        self._ttl = cache_ttl_s
        self._min_interval = min_refresh_interval_s
        self._max_stale = max_stale_s
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff_s
        self._algorithms = algorithms
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # ... of the last fetch attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # successful fetches, for metrics and tests

    @classmethod
    def from_settings(cls, settings: Settings, *, http: httpx.AsyncClient | None = None) -> JwksClient | None:
        url = jwks_url(settings)
        return cls(url, http=http, cache_ttl_s=settings.auth.jwks_cache_s) if url else None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    @property
    def kids(self) -> frozenset[str | None]:
        return frozenset(self._keys)

    async def key_for(self, kid: str | None) -> Any:
        """The public key for `kid` (a token without `kid` is accepted only with a one-key set)."""
        now = time.monotonic()
        if self._fetched_at is None or now - self._fetched_at > self._ttl:
            await self._refresh(reason="expired" if self._fetched_at else "first use")
        key = self._lookup(kid)
        if key is None and self._may_refetch():
            await self._refresh(reason=f"unknown kid {kid!r}")
            key = self._lookup(kid)
        if key is None:
            raise SigningKeyNotFound(f"no published signing key has kid {kid!r}")
        return key

    async def refresh(self) -> None:
        await self._refresh(reason="requested", force=True)

    def _lookup(self, kid: str | None) -> Any:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_refetch(self) -> bool:
        return self._attempted_at is None or time.monotonic() - self._attempted_at >= self._min_interval

    async def _refresh(self, *, reason: str, force: bool = False) -> None:
        started = time.monotonic()
        async with self._lock:
            # someone else fetched while we waited for the lock: use theirs
            if not force and self._attempted_at is not None and self._attempted_at >= started:
                return
            self._attempted_at = time.monotonic()
            try:
                keys = await self._fetch()
            except (httpx.TransportError, _Retryable, ValueError) as exc:
                stale_for = None if self._fetched_at is None else time.monotonic() - self._fetched_at
                if stale_for is not None and stale_for <= self._ttl + self._max_stale:
                    log.warning("sme_auth.jwks_refresh_failed", url=self.url, reason=reason, error=repr(exc))
                    return
                raise JwksUnavailable(f"cannot fetch the SME auth service's keys: {exc}") from exc
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.fetches += 1
            log.info("sme_auth.jwks_fetched", url=self.url, reason=reason, kids=sorted(map(str, keys)))

    async def _fetch(self) -> dict[str | None, Any]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=self._backoff, max=2.0, jitter=self._backoff),
            retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                response = await self._http.get(
                    self.url, headers={"Accept": "application/json"}, timeout=self._timeout
                )
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise ValueError(f"JWKS answered HTTP {response.status_code}")
                return self._parse(response.json())
        raise AssertionError("tenacity returns or raises")  # pragma: no cover

    def _parse(self, document: Any) -> dict[str | None, Any]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("JWKS must be an object with a `keys` list")
        keys: dict[str | None, Any] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("alg") not in (None, *self._algorithms):
                continue
            try:
                keys[jwk.get("kid")] = jwt.PyJWK(jwk, algorithm=jwk.get("alg") or self._algorithms[0]).key
            except jwt.PyJWTError as exc:
                log.warning("sme_auth.jwk_skipped", kid=jwk.get("kid"), error=str(exc))
        if not keys:
            raise ValueError("JWKS holds no usable signing key")
        return keys
