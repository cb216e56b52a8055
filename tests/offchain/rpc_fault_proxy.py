"""A fault-injecting JSON-RPC proxy for tests: an aiohttp server, on its own thread and event
loop, in front of a real node (Anvil, Hardhat).

Faults are queued (`proxy.inject("502", "429", ...)`: one per request, in order) or standing
(`proxy.always = "drop"`), chosen by name ("none": this request passes):

    hang        no answer until `hang_s` (the client times out; nothing reached the node)
    slow        forwarded, answered after `hang_s` (the client times out; the node DID execute)
    429         429 Too Many Requests with `Retry-After: retry_after` (not forwarded)
    500 502 503 that HTTP status (not forwarded)
    drop        the connection closed without an answer (not forwarded)
    drop_after  forwarded, then the connection closed without an answer (executed, unanswered)

and two standing distortions of good answers: `lag_blocks` (eth_blockNumber answers an old head)
and `chain_id` (eth_chainId answers another chain). `forwarded` counts the JSON-RPC methods that
reached the node and `raw_sent` keeps every eth_sendRawTransaction payload forwarded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, deque
from typing import Any

import aiohttp
from aiohttp import web

FAULTS = ("none", "hang", "slow", "429", "500", "502", "503", "drop", "drop_after")


class RpcFaultProxy:
    def __init__(self, upstream: str, *, hang_s: float = 3.0, retry_after: int = 1) -> None:
        self.upstream = upstream
        self.hang_s = hang_s
        self.retry_after = retry_after
        self.queue: deque[str] = deque()
        self.always: str | None = None
        self.lag_blocks = 0
        self.chain_id: int | None = None
        self.forwarded: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.raw_sent: list[str] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # control (from the test's thread) ------------------------------------------------------

    def inject(self, *faults: str) -> None:
        for fault in faults:
            assert fault in FAULTS, fault
        with self._lock:
            self.queue.extend(faults)

    def heal(self) -> None:
        """Every fault and distortion off: the node answers as it is."""
        with self._lock:
            self.queue.clear()
            self.always = None
            self.lag_blocks = 0
            self.chain_id = None

    def _take(self) -> str | None:
        with self._lock:
            return self.queue.popleft() if self.queue else self.always

    # server --------------------------------------------------------------------------------

    def start(self) -> RpcFaultProxy:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="rpc-fault-proxy", daemon=True)
        self._thread.start()
        assert ready.wait(10), "proxy did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> RpcFaultProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, body: bytes) -> bytes:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        calls = parsed if isinstance(parsed, list) else [parsed] if isinstance(parsed, dict) else []
        for call in calls:
            method = call.get("method", "")
            with self._lock:
                self.forwarded[method] += 1
                if method == "eth_sendRawTransaction":
                    self.raw_sent.append(call["params"][0])
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            answer = await response.read()
        if not (self.lag_blocks or self.chain_id is not None):
            return answer
        methods = {call.get("id"): call.get("method") for call in calls}
        payload = json.loads(answer)
        for item in payload if isinstance(payload, list) else [payload]:
            method = methods.get(item.get("id"))
            if method == "eth_blockNumber" and self.lag_blocks and "result" in item:
                item["result"] = hex(max(0, int(item["result"], 16) - self.lag_blocks))
            elif method == "eth_chainId" and self.chain_id is not None and "result" in item:
                item["result"] = hex(self.chain_id)
        return json.dumps(payload).encode()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._take()
        if fault == "none":
            fault = None
        if fault is not None:
            with self._lock:
                self.faults_served[fault] += 1
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return web.Response(status=504)
        if fault == "429":
            return web.Response(status=429, headers={"Retry-After": str(self.retry_after)})
        if fault in ("500", "502", "503"):
            return web.Response(status=int(fault), text="upstream trouble")
        if fault == "drop":
            _drop(request)
            return web.Response()
        answer = await self._forward(body)
        if fault == "drop_after":
            _drop(request)
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(self.hang_s)
        return web.Response(body=answer, content_type="application/json")


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
