"""The sender worker of one sending key: the single-writer lock, and the round (`step`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from eth_utils import keccak
from sqlalchemy import func, or_, select

from offchain.chain.jsonrpc import RpcError, hex_int
from offchain.chain.sender.base import _OPEN_COLUMNS, ChainView, _raise_first_error, log
from offchain.chain.sender.bump import BumpRound
from offchain.chain.sender.intents import OPEN, UNFINISHED
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.chain.sender.send import SendRound
from offchain.chain.sender.settle import SettleRound
from offchain.platform.stopping import wait_or_stop


def advisory_lock_key(chain_id: int, address: str) -> int:
    """A signed 64-bit key per (chain, sending address) for pg_advisory_lock."""
    digest = keccak(text=f"caas.sender:{chain_id}:{address.lower()}")
    return int.from_bytes(digest[:8], "big", signed=True)


class SenderWorker(SettleRound, BumpRound, SendRound):
    """The single writer of one sending key: see the package docstring for a round."""

    # lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (standing by while another replica holds the key)."""
        await self._serve(stop, until_idle=False)

    async def drain(self, *, within_s: float) -> None:
        """Serve until nothing of this key is unfinished (tests, benchmarks, one-shot runs)."""
        await asyncio.wait_for(self._serve(asyncio.Event(), until_idle=True), within_s)

    async def _serve(self, stop: asyncio.Event, *, until_idle: bool) -> None:
        self.chain_id = hex_int(await self.rpc.call("eth_chainId"))
        async with self._single_writer(stop) as held:
            if not held:
                return
            log.info("sender.started", address=self.address, chain_id=self.chain_id)
            await self._rebroadcast_open()
            delay = self.settings.idle_poll_s
            while not stop.is_set():
                try:
                    worked = await self.step()
                except RpcError as exc:  # node unreachable or misbehaving: back off, keep the lock
                    delay = min(max(delay * 2, 0.5), 30.0)
                    log.warning("sender.rpc_failed", error=str(exc)[:500], retry_in_s=delay)
                    await wait_or_stop(stop, delay)
                    continue
                delay = self.settings.idle_poll_s
                if worked:
                    continue
                if until_idle and await self._is_idle():
                    return
                await wait_or_stop(stop, delay)
        log.info("sender.stopped", address=self.address)

    @asynccontextmanager
    async def _single_writer(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Hold the key's session-level advisory lock on a dedicated connection."""
        key = advisory_lock_key(self.chain_id, self.address)
        async with self.db.engine.connect() as conn:
            announced = False
            while True:
                held = (await conn.execute(select(func.pg_try_advisory_lock(key)))).scalar_one()
                await conn.commit()
                if held:
                    break
                if not announced:
                    log.info("sender.standby", address=self.address, reason="another worker holds the key")
                    announced = True
                if await wait_or_stop(stop, 1.0):
                    yield False
                    return
            self._lock_conn = conn
            try:
                yield True
            finally:
                self._lock_conn = None
                with suppress(Exception):
                    await conn.execute(select(func.pg_advisory_unlock(key)))
                    await conn.commit()

    async def _check_lock(self) -> None:
        # The lock lives as long as its connection: if that died, another replica may now hold
        # the key, so stop writing (the supervisor restarts us, and we queue for the lock).
        if self._lock_conn is None:
            raise RuntimeError("sender step outside the single-writer lock")
        await self._lock_conn.execute(select(1))
        await self._lock_conn.commit()

    # one round -----------------------------------------------------------------------------

    async def step(self) -> int:
        """One round: track receipts, bump stuck fees, send new intents. Returns work done."""
        await self._check_lock()
        view = await self._chain_view()
        open_rows = await self._open_intents()
        worked, in_flight = await self._track(view, open_rows)
        worked += await self._bump(view, in_flight)
        worked += await self._retry_refused(in_flight)
        worked += await self._send_new(view, in_flight)
        await self._refresh_gauges()
        return worked

    async def _chain_view(self) -> ChainView:
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByNumber", ["latest", False]),
            ("eth_getTransactionCount", [self.address, "latest"]),
            ("eth_getTransactionCount", [self.address, "pending"]),
        ]
        if self.settings.priority_fee_wei is None:
            calls.append(("eth_maxPriorityFeePerGas", []))
        results = await self.rpc.batch(calls)
        _raise_first_error(results)
        block = results[0]
        tip = (
            self.settings.priority_fee_wei
            if self.settings.priority_fee_wei is not None
            else hex_int(results[3])
        )
        self._head = hex_int(block["number"])
        return ChainView(
            head=self._head,
            mined_nonce=hex_int(results[1]),
            pending_nonce=hex_int(results[2]),
            base_fee=hex_int(block.get("baseFeePerGas") or "0x0"),
            tip=tip,
            gas_limit=hex_int(block.get("gasLimit") or "0x0"),
        )

    async def _open_intents(self) -> list[Any]:
        async with self.db.worker_session() as session:
            result = await session.execute(
                select(*_OPEN_COLUMNS)
                .where(
                    _t.c.chain_id == self.chain_id,
                    _t.c.from_address == self.address,
                    _t.c.status.in_(OPEN),
                )
                .order_by(_t.c.nonce)
            )
            return list(result.all())

    async def _is_idle(self) -> bool:
        async with self.db.worker_session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(_t)
                .where(
                    _t.c.status.in_(UNFINISHED),
                    or_(_t.c.from_address == self.address, _t.c.from_address.is_(None)),
                )
            )
        return not count

    # 1. receipts ---------------------------------------------------------------------------

    # gauges --------------------------------------------------------------------------------

    async def _refresh_gauges(self, *, every_s: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._gauges_at < every_s:
            return
        self._gauges_at = now
        async with self.db.worker_session() as session:
            counts: dict[str, int] = dict(
                (
                    await session.execute(
                        select(_t.c.status, func.count())
                        .where(
                            _t.c.status.in_(UNFINISHED),
                            or_(_t.c.from_address == self.address, _t.c.from_address.is_(None)),
                        )
                        .group_by(_t.c.status)
                    )
                ).all()
            )
        for status in UNFINISHED:
            self.metrics.intents.labels(self.address, status).set(counts.get(status, 0))


# --- running it ------------------------------------------------------------------------------
