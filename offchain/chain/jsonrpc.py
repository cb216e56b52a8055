"""A small async Ethereum JSON-RPC client with batch requests, and revert-reason decoding.

web3.py's providers send one request per call; the sender needs hundreds of estimates, broadcasts
and receipt look-ups per round, so it sends them as JSON-RPC batches (one HTTP round trip for a
whole batch). Each element of a batch answers on its own: `batch()` returns the result or the
`RpcError` of every call, in order, and never raises for one failed element.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

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


class JsonRpc:
    """One endpoint, one keep-alive connection pool; `batch_size` caps the calls per HTTP body."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        batch_size: int = 500,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            headers={"Content-Type": "application/json"},
        )
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _post(self, body: Any) -> Any:
        try:
            response = await self._client.post(self.url, content=json.dumps(body, separators=(",", ":")))
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RpcError(None, f"transport: {exc!r}") from exc

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
