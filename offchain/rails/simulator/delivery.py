"""Webhook and event delivery, with the faults real providers show.

Each delivery is signed at send time (the SME signature carries a timestamp), POSTed, and retried
with exponential backoff — a bounded number of times — while the receiver answers non-2xx or
cannot be reached. Every attempt is logged (`GET /simulate/webhooks`).

Fault rules (`POST /simulate/scenario`) apply to the next matching deliveries:
- duplicate: the same body sent `copies` times at once (each copy logged on its own);
- reorder: the event is held back and sent right after the next event on the same channel
  (or after `hold_s` if none comes), so the receiver sees the two swapped;
- delay: sent after `delay_s`;
- drop: the first send is lost (logged as dropped) and the event is redelivered after `delay_s`,
  as a provider does when it never got the acknowledgement.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

from offchain.platform.logging import get_logger
from offchain.rails.simulator.config import SimulatorConfig

log = get_logger(__name__)

Channel = Literal["paystack", "sme"]
Fault = Literal["duplicate", "reorder", "delay", "drop"]
Signer = Callable[[bytes], dict[str, str]]


@dataclass
class FaultRule:
    fault: Fault
    channel: Channel | None = None
    event: str | None = None
    times: int = 1
    copies: int = 2
    delay_s: float = 0.5
    hold_s: float = 5.0

    def matches(self, channel: str, event: str) -> bool:
        return self.times > 0 and self.channel in (None, channel) and self.event in (None, event)


@dataclass
class Delivery:
    id: str
    channel: Channel
    event: str
    url: str
    body: bytes
    signer: Signer
    reference: str | None = None
    fault: str | None = None
    copy: int = 1
    state: str = "scheduled"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    attempts: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "channel": self.channel,
            "event": self.event,
            "reference": self.reference,
            "url": self.url,
            "fault": self.fault,
            "copy": self.copy,
            "state": self.state,
            "created_at": self.created_at,
            "attempts": list(self.attempts),
            "payload": json.loads(self.body),
        }


class Dispatcher:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        # aiohttp, not httpx: under a burst httpx's connection pool (it scans every connection
        # for each request) and its layers cost the simulator ~3x the CPU per delivery. Made on
        # the first send, inside the running loop aiohttp needs.
        self._http: aiohttp.ClientSession | None = None
        self.rules: list[FaultRule] = []
        self.log: list[Delivery] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: dict[str, tuple[Delivery, asyncio.TimerHandle]] = {}

    # -- public -------------------------------------------------------------------------------

    def dispatch(
        self,
        channel: Channel,
        event: str,
        url: str,
        body: bytes,
        signer: Signer,
        *,
        reference: str | None = None,
    ) -> list[Delivery]:
        """Schedule the delivery of one event; returns the log entries it created."""
        rule = next((r for r in self.rules if r.matches(channel, event)), None)
        if rule is not None:
            rule.times -= 1
            self.rules = [r for r in self.rules if r.times > 0]
        copies = rule.copies if rule is not None and rule.fault == "duplicate" else 1
        deliveries = [
            self._new(channel, event, url, body, signer, reference, rule.fault if rule else None, n)
            for n in range(1, copies + 1)
        ]
        held = self._held.pop(channel, None)
        if rule is not None and rule.fault == "reorder" and held is None:
            delivery = deliveries[0]
            delivery.state = "held"
            timer = asyncio.get_running_loop().call_later(rule.hold_s, self._release, channel)
            self._held[channel] = (delivery, timer)
            return deliveries
        if held is not None:
            earlier, timer = held
            timer.cancel()
            self._spawn(self._in_order([*deliveries, earlier]))
            return deliveries
        delay = rule.delay_s if rule is not None and rule.fault in ("delay", "drop") else 0.0
        for delivery in deliveries:
            if rule is not None and rule.fault == "drop":
                delivery.attempts.append({"at": _now(), "dropped": True})
                delivery.state = "dropped"
            self._spawn(self._send(delivery, after_s=delay))
        return deliveries

    def redeliver(self, delivery_id: str) -> Delivery | None:
        original = next((d for d in self.log if d.id == delivery_id), None)
        if original is None:
            return None
        again = self._new(
            original.channel,
            original.event,
            original.url,
            original.body,
            original.signer,
            original.reference,
            "redelivery",
            1,
        )
        self._spawn(self._send(again))
        return again

    def entries(self, **filters: str | None) -> list[dict[str, Any]]:
        chosen = [d for d in self.log if all(v is None or getattr(d, k) == v for k, v in filters.items())]
        return [d.as_dict() for d in chosen]

    def reset(self) -> None:
        for _, timer in self._held.values():
            timer.cancel()
        self._held.clear()
        self.rules.clear()
        self.log.clear()

    async def idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing is being delivered or held; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._tasks or self._held:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work (transfer completions too) under the dispatcher's shutdown."""
        return self._spawn(coro)

    async def aclose(self) -> None:
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- internals ----------------------------------------------------------------------------

    def _new(
        self,
        channel: Channel,
        event: str,
        url: str,
        body: bytes,
        signer: Signer,
        reference: str | None,
        fault: str | None,
        copy: int,
    ) -> Delivery:
        seq = next(self._ids)
        delivery = Delivery(
            id=f"dlv_{seq:06d}",
            seq=seq,
            channel=channel,
            event=event,
            url=url,
            body=body,
            signer=signer,
            reference=reference,
            fault=fault,
            copy=copy,
        )
        self.log.append(delivery)
        return delivery

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _release(self, channel: str) -> None:
        held = self._held.pop(channel, None)
        if held is not None:
            self._spawn(self._send(held[0]))

    async def _in_order(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._send(delivery)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            # connections kept for as many deliveries as a burst has in flight: with fewer, every
            # further delivery opens (and closes) one. Idle ones are dropped before a uvicorn
            # receiver's 5 s would close them under a new request.
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=100, keepalive_timeout=3.0),
                skip_auto_headers=("User-Agent",),
            )
        return self._http

    async def _send(self, delivery: Delivery, *, after_s: float = 0.0) -> None:
        if after_s > 0:
            await asyncio.sleep(after_s)
        cfg = self.config
        http = self._session()
        delivery.state = "delivering"
        for attempt in range(1, max(1, cfg.webhook_attempts) + 1):
            headers = {"content-type": "application/json", **delivery.signer(delivery.body)}
            started = time.monotonic()
            record: dict[str, Any] = {"at": _now(), "attempt": attempt}
            try:
                async with http.post(
                    delivery.url,
                    data=delivery.body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=cfg.webhook_timeout_s),
                ) as response:
                    await response.read()
                record["status_code"] = response.status
                ok = 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                record["error"] = type(exc).__name__
                ok = False
            record["ms"] = round((time.monotonic() - started) * 1000, 1)
            delivery.attempts.append(record)
            if ok:
                delivery.state = "delivered"
                return
            if attempt < cfg.webhook_attempts:
                backoff = min(cfg.webhook_backoff_s * 2 ** (attempt - 1), cfg.webhook_max_backoff_s)
                await asyncio.sleep(backoff)
        delivery.state = "failed"
        log.warning(
            "simulator.delivery_failed", delivery=delivery.id, event_type=delivery.event, url=delivery.url
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()
