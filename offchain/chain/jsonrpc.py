"""A small async Ethereum JSON-RPC client with batch requests, and revert-reason decoding.

web3.py's providers send one request per call; the sender needs hundreds of estimates, broadcasts
and receipt look-ups per round, so it sends them as JSON-RPC batches (one HTTP round trip for a
whole batch). Each element of a batch answers on its own: `batch()` returns the result or the
`RpcError` of every call, in order, and never raises for one failed element.

Hosted RPCs time out, rate-limit and fail; a client may be given several URLs of one chain
(`CHAIN_RPC_URLS`) and then fails over:

- 429: the endpoint rests for its `Retry-After` (capped), the next endpoint is asked at once, or,
  with only one, the same one after the wait;
- a refused/dropped connection or a 5xx: the endpoint rests `cooldown_s`, the next is asked;
- a timeout: the next endpoint is asked (with one endpoint the error goes to the caller, whose
  own loop polls again: a timed-out request may have been executed);
- an endpoint whose `eth_chainId` differs from the first one's (or `expected_chain_id`) is
  rejected for the client's lifetime (checked on first use when there are several URLs).

Every JSON-RPC write is a signed transaction with a nonce, so sending the same body twice (to
one node or two) can never double-spend: the second answer is the same hash or "already known".
A transport failure left after every attempt is an `RpcUnavailable`, which the HTTP layer
answers as 503 with Retry-After (offchain.platform.problems).
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from eth_abi import decode as abi_decode

ERROR_SELECTOR = "08c379a0"  # Error(string): Solidity require/revert and Vyper assert strings
PANIC_SELECTOR = "4e487b71"  # Panic(uint256)

Call = tuple[str, Sequence[Any]]


class RpcError(Exception):
    """A JSON-RPC error object (or a transport failure, with code None)."""

    def __init__(self, code: int | None, message: str, data: Any = None, *, method: str = "") -> None:
        super().__init__(f"{method}: {message}" if method else message)
        self.code = code
        self.message = message
        self.data = data
        self.method = method

    @property
    def revert_data(self) -> str | None:
        """The ABI-encoded revert payload nodes put in `error.data` for execution reverts."""
        data = self.data
        if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."} or {"result": ...}
            data = data.get("data") or data.get("result")
        return data if isinstance(data, str) and data.startswith("0x") else None

    @property
    def is_revert(self) -> bool:
        return self.code == 3 or "revert" in self.message.lower()

    def revert_reason(self) -> str:
        return decode_revert(self.revert_data) or _reason_from_message(self.message)


class RpcUnavailable(RpcError):
    """No endpoint answered (connection refused or dropped, timeout, 5xx, 429): the node is away."""

    # read by offchain.platform.problems: a 503 naming the chain, not a 500
    unreachable_dependency = "chain"

    def __init__(self, message: str, *, method: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(None, message, method=method)
        self.retry_after_s = retry_after_s


def _reason_from_message(message: str) -> str:
    # Anvil/geth: "execution reverted: loan_book: amount exceeds outstanding"
    prefix = "execution reverted"
    text = message.strip()
    if text.lower().startswith(prefix):
        rest = text[len(prefix) :].lstrip(":").strip()
        return rest or "execution reverted"
    return text


def decode_revert(data: str | bytes | None) -> str | None:
    """`Error(string)` -> the string; `Panic(uint256)` -> "panic: 0x.."; other data -> its hex."""
    if data is None:
        return None
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    if not raw:
        return None
    selector, body = raw[:4].hex(), raw[4:]
    # a malformed payload falls through to the raw hex
    with suppress(Exception):
        if selector == ERROR_SELECTOR:
            return str(abi_decode(["string"], body)[0])
        if selector == PANIC_SELECTOR:
            return f"panic: {hex(abi_decode(['uint256'], body)[0])}"
    return "0x" + raw.hex()


def retry_after_seconds(value: str | None, *, default: float, cap: float) -> float:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), within [0, cap]."""
    if not value:
        return min(default, cap)
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return min(default, cap)
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def redact_url(url: str) -> str:
    """scheme://host[:port] only: hosted RPC URLs carry their API key in the path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


@dataclass
class Endpoint:
    url: str
    resting_until: float = 0.0  # monotonic time before which it is not asked (unless all rest)
    last_error: str | None = None
    rejected: str | None = None  # wrong chain: never asked again
    chain_checked: bool = False

    def usable(self, now: float) -> bool:
        return self.rejected is None and self.resting_until <= now


class _Failure(Exception):
    def __init__(self, detail: str, *, rest_s: float, retry_same: bool, rate_limited: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.rest_s = rest_s
        self.retry_same = retry_same  # asking the same endpoint again is sound
        self.rate_limited = rate_limited


class JsonRpc:
    """One or several endpoints of one chain, one keep-alive connection pool; `batch_size` caps
    the calls per HTTP body. See the module docstring for the failover rules."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout_s: float = 10.0,
        batch_size: int = 500,
        client: httpx.AsyncClient | None = None,
        expected_chain_id: int | None = None,
        cooldown_s: float = 5.0,
        max_retry_after_s: float = 30.0,
        max_wait_s: float = 10.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else [u for u in url if u]
        if not urls:
            raise ValueError("JsonRpc needs at least one URL")
        self.endpoints = [Endpoint(u) for u in dict.fromkeys(urls)]
        self._active = 0
        self.batch_size = batch_size
        self.expected_chain_id = expected_chain_id
        self.cooldown_s = cooldown_s
        self.max_retry_after_s = max_retry_after_s
        self.max_wait_s = max_wait_s  # longest sleep for a resting endpoint before giving up
        self.failovers = 0
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            headers={"Content-Type": "application/json"},
        )
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        """The endpoint asked next."""
        return self.endpoints[self._active].url

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _send(self, endpoint: Endpoint, body: Any) -> Any:
        try:
            response = await self._client.post(endpoint.url, content=json.dumps(body, separators=(",", ":")))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the node
            raise _Failure(f"connect: {exc!r}", rest_s=self.cooldown_s, retry_same=True) from exc
        except httpx.TimeoutException as exc:
            raise _Failure(f"timeout: {exc!r}", rest_s=self.cooldown_s, retry_same=False) from exc
        except httpx.HTTPError as exc:  # dropped connection, protocol error
            raise _Failure(f"transport: {exc!r}", rest_s=self.cooldown_s, retry_same=True) from exc
        if response.status_code == 429:
            wait = retry_after_seconds(
                response.headers.get("Retry-After"), default=1.0, cap=self.max_retry_after_s
            )
            raise _Failure(
                f"429 rate limited (Retry-After {wait:g}s)", rest_s=wait, retry_same=True, rate_limited=True
            )
        if response.status_code >= 500:
            wait = retry_after_seconds(
                response.headers.get("Retry-After"), default=self.cooldown_s, cap=self.max_retry_after_s
            )
            raise _Failure(f"HTTP {response.status_code}", rest_s=wait, retry_same=True)
        try:
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RpcError(None, f"transport: {exc!r}") from exc

    async def _check_chain(self, endpoint: Endpoint) -> None:
        """On first use of an endpoint of a multi-URL client: its chain id must match."""
        if endpoint.chain_checked or (len(self.endpoints) == 1 and self.expected_chain_id is None):
            return
        body = {"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []}
        answer = await self._send(endpoint, body)
        got = hex_int(answer.get("result")) if isinstance(answer, dict) and answer.get("result") else None
        if got is None:
            raise _Failure(f"eth_chainId: {answer!r}", rest_s=self.cooldown_s, retry_same=False)
        if self.expected_chain_id is None:
            self.expected_chain_id = got
        endpoint.chain_checked = True
        if got != self.expected_chain_id:
            endpoint.rejected = f"chain id {got}, expected {self.expected_chain_id}"
            raise _Failure(endpoint.rejected, rest_s=0.0, retry_same=False)

    def _next_endpoint(self, now: float) -> Endpoint | None:
        count = len(self.endpoints)
        for step in range(count):
            index = (self._active + step) % count
            if self.endpoints[index].usable(now):
                if index != self._active:
                    self.failovers += 1
                self._active = index
                return self.endpoints[index]
        return None

    async def _post(self, body: Any) -> Any:
        lone = len(self.endpoints) == 1
        # a lone endpoint: one quick second try (a 429 waits its Retry-After), then the caller's
        # own loop takes over, as before failover existed
        attempts = 2 if lone else 2 * len(self.endpoints) + 1
        last = "no endpoint"
        shortest_rest: float | None = None
        sent = 0
        while sent < attempts:
            now = time.monotonic()
            endpoint = self._next_endpoint(now)
            if endpoint is None:  # every endpoint rests (or is rejected): wait for the first back
                resting = [e for e in self.endpoints if e.rejected is None]
                if not resting:
                    break
                soonest = min(resting, key=lambda e: e.resting_until)
                wait = soonest.resting_until - now
                shortest_rest = wait
                if wait > self.max_wait_s:
                    break
                await asyncio.sleep(wait)
                soonest.resting_until = 0.0
                continue
            sent += 1
            try:
                await self._check_chain(endpoint)
                answer = await self._send(endpoint, body)
            except _Failure as failure:
                last = f"{redact_url(endpoint.url)}: {failure.detail}"
                endpoint.last_error = failure.detail
                if endpoint.rejected is not None:
                    continue
                if lone and not failure.retry_same:
                    break  # a lone endpoint's timeout goes back to the caller
                rest = failure.rest_s if failure.rate_limited or not lone else min(failure.rest_s, 0.25)
                endpoint.resting_until = time.monotonic() + rest
                continue
            endpoint.last_error = None
            endpoint.resting_until = 0.0
            return answer
        raise RpcUnavailable(f"transport: {last}", retry_after_s=shortest_rest)

    async def probe(self, *, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """Every endpoint's eth_chainId now (for health): [{"endpoint", "up", "detail"}] with
        URLs redacted to scheme://host:port."""

        async def one(endpoint: Endpoint) -> dict[str, Any]:
            name = redact_url(endpoint.url)
            if endpoint.rejected:
                return {"endpoint": name, "up": False, "detail": endpoint.rejected}
            try:
                response = await self._client.post(
                    endpoint.url,
                    content=b'{"jsonrpc":"2.0","id":0,"method":"eth_chainId","params":[]}',
                    timeout=timeout_s,
                )
                response.raise_for_status()
                got = hex_int(response.json()["result"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                return {"endpoint": name, "up": False, "detail": type(exc).__name__}
            if self.expected_chain_id is not None and got != self.expected_chain_id:
                return {"endpoint": name, "up": False, "detail": f"chain id {got}"}
            return {"endpoint": name, "up": True, "detail": f"chain id {got}"}

        return list(await asyncio.gather(*(one(e) for e in self.endpoints)))

    async def call(self, method: str, *params: Any) -> Any:
        payload = await self._post(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        )
        error = payload.get("error")
        if error:
            raise RpcError(error.get("code"), str(error.get("message", "")), error.get("data"), method=method)
        return payload.get("result")

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Results in call order; a failed element is an `RpcError` instance in its place."""
        results: list[Any] = []
        for start in range(0, len(calls), self.batch_size):
            results.extend(await self._batch_chunk(calls[start : start + self.batch_size]))
        return results

    async def _batch_chunk(self, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        first = next(self._ids)
        for _ in range(len(calls) - 1):
            next(self._ids)
        body = [
            {"jsonrpc": "2.0", "id": first + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        payload = await self._post(body)
        if isinstance(payload, dict):  # the whole batch was refused (e.g. batch too large)
            error = payload.get("error") or {}
            raise RpcError(error.get("code"), str(error.get("message", payload)), error.get("data"))
        by_id = {item.get("id"): item for item in payload}
        results: list[Any] = []
        for i, (method, _) in enumerate(calls):
            item = by_id.get(first + i)
            if item is None:
                results.append(RpcError(None, "no answer in batch", method=method))
            elif item.get("error"):
                error = item["error"]
                results.append(
                    RpcError(
                        error.get("code"), str(error.get("message", "")), error.get("data"), method=method
                    )
                )
            else:
                results.append(item.get("result"))
        return results


def hex_int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)
