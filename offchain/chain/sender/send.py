"""Send round: claim pending intents, estimate gas, assign nonces, sign, commit, broadcast."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.allowlist import CallNotAllowed
from offchain.chain.jsonrpc import RpcError, hex_int
from offchain.chain.sender.base import ChainView, log
from offchain.chain.sender.broadcast import BroadcastRound
from offchain.chain.sender.intents import FAILED, PENDING, SIGNED, TOPICS, publish_all
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.chain.sender.signing import SignedTx, first_nonce


class SendRound(BroadcastRound):
    """3. send: new intents in submission order, nonces gap-free, committed before broadcast."""

    async def _send_new(self, view: ChainView, in_flight: list[Any]) -> int:
        room = self._room(view, in_flight)
        if room is None:
            return 0
        limit, gas_room = room
        async with self.db.worker_session() as session:
            claimed = await self._claim(session, limit)
            if not claimed:
                return 0
            claimed, refused = self._allowed(claimed)
            if refused:
                await self._fail(session, refused)
                self.metrics.reverts.labels(self.address, "refused").inc(len(refused))
            if not claimed:
                return len(refused)
            nonce = first_nonce(await self._highest_nonce(session), view.pending_nonce)
            estimates = await self._estimate(claimed)
            plans, failed, waiting = self._plan(
                view, claimed, estimates, nonce=nonce, gas_room=gas_room, in_flight=in_flight
            )
            nonce += len(plans)
            if plans:
                self._gas_per_tx = sum(gas for _, _, gas in plans) // len(plans)
            max_fee, tip = self._fees(view)
            signed = await asyncio.to_thread(self._sign_plans, plans, max_fee=max_fee, tip=tip)
            await self._record_signed(session, signed, plans, max_fee=max_fee, tip=tip)
            if failed:
                await self._fail(session, failed)
            if waiting:
                await session.execute(
                    update(_t).where(_t.c.id == bindparam("b_id")).values(last_error=bindparam("b_error")),
                    [{"b_id": row.id, "b_error": error} for row, error in waiting],
                )
        # committed: nonces, raw transactions and hashes are durable before anything is sent
        self._next_nonce = nonce
        self.metrics.next_nonce.labels(self.address).set(nonce)
        if failed:
            self.metrics.reverts.labels(self.address, "estimate").inc(len(failed))
            for row, reason in failed:
                log.info("sender.estimate_reverted", key=row.idempotency_key, reason=reason)
        if signed:
            await self._broadcast(signed, kind="first")
        return len(signed) + len(failed) + len(refused)

    def _room(self, view: ChainView, in_flight: list[Any]) -> tuple[int, int] | None:
        """(intents to claim, gas room left), or None while nothing more may be in flight."""
        room = self.settings.max_in_flight - len(in_flight)
        # Unmined gas stays within `in_flight_blocks` blocks' worth: more than a block holds can
        # sit in the pool of a node that mines only when a transaction arrives (Anvil automine)
        # and, on any chain, cannot be included sooner anyway.
        gas_room = int(view.gas_limit * self.settings.in_flight_blocks) - sum(r.gas_limit for r in in_flight)
        if room <= 0 or (gas_room <= 0 and in_flight):
            return None
        limit = min(self.settings.batch_size, room)
        if self._gas_per_tx:
            limit = max(1, min(limit, gas_room // self._gas_per_tx + 1))
        return limit, gas_room

    async def _claim(self, session: AsyncSession, limit: int) -> list[Any]:
        """Pending intents this key may carry, oldest first, locked against other workers."""
        result = await session.execute(
            select(_t.c.id, _t.c.idempotency_key, _t.c.to_address, _t.c.data, _t.c.value, _t.c.caller)
            .where(
                _t.c.status == PENDING,
                or_(_t.c.from_address == self.address, _t.c.from_address.is_(None)),
                or_(_t.c.chain_id == self.chain_id, _t.c.chain_id.is_(None)),
            )
            .order_by(_t.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(result.all())

    async def _highest_nonce(self, session: AsyncSession) -> int | None:
        return await session.scalar(
            select(func.max(_t.c.nonce)).where(
                _t.c.chain_id == self.chain_id, _t.c.from_address == self.address
            )
        )

    async def _estimate(self, claimed: Sequence[Any]) -> list[Any]:
        """eth_estimateGas for every claimed intent, in one batch (hex gas or an RpcError each)."""
        return await self.rpc.batch(
            [
                (
                    "eth_estimateGas",
                    [
                        {
                            "from": self.address,
                            "to": row.to_address,
                            "data": row.data,
                            "value": hex(row.value),
                        },
                        "pending",
                    ],
                )
                for row in claimed
            ]
        )

    def _plan(
        self,
        view: ChainView,
        claimed: Sequence[Any],
        estimates: Sequence[Any],
        *,
        nonce: int,
        gas_room: int,
        in_flight: list[Any],
    ) -> tuple[list[tuple[Any, int, int]], list[tuple[Any, str]], list[tuple[Any, str]]]:
        """(row, nonce, gas) to sign from `nonce` on; the intents failed; those to retry later."""
        plans: list[tuple[Any, int, int]] = []
        failed: list[tuple[Any, str]] = []
        waiting: list[tuple[Any, str]] = []
        for row, estimate in zip(claimed, estimates, strict=True):
            if isinstance(estimate, RpcError):
                if estimate.code is None:
                    raise estimate  # transport failure: nothing decided, try the round again
                if not estimate.is_revert:
                    waiting.append((row, f"gas estimation failed: {estimate.message}"))
                    continue
                barrier = self._estimate_barrier.setdefault(row.id, nonce)
                if view.mined_nonce >= barrier:
                    failed.append((row, estimate.revert_reason()))
                    self._estimate_barrier.pop(row.id, None)
                else:
                    waiting.append(
                        (
                            row,
                            f"estimate reverted ({estimate.revert_reason()}); "
                            f"retried once nonce {barrier - 1} is mined",
                        )
                    )
                continue
            gas = hex_int(estimate) * (100 + self.settings.gas_margin_percent) // 100
            if gas > gas_room and (plans or in_flight):
                break  # this and the rest wait for room; always send at least one
            gas_room -= gas
            self._estimate_barrier.pop(row.id, None)
            plans.append((row, nonce, gas))
            nonce += 1
        return plans, failed, waiting

    def _sign_plans(self, plans: Sequence[tuple[Any, int, int]], *, max_fee: int, tip: int) -> list[SignedTx]:
        return [
            self._sign(
                nonce=n,
                to=row.to_address,
                data=row.data,
                value=row.value,
                gas=gas,
                max_fee=max_fee,
                tip=tip,
                intent_id=row.id,
            )
            for row, n, gas in plans
        ]

    async def _record_signed(
        self,
        session: AsyncSession,
        signed: Sequence[SignedTx],
        plans: Sequence[tuple[Any, int, int]],
        *,
        max_fee: int,
        tip: int,
    ) -> None:
        """Nonce, gas, fees, raw bytes and hash of each signed intent, in the round's transaction."""
        if not signed:
            return
        await session.execute(
            update(_t)
            .where(_t.c.id == bindparam("b_id"))
            .values(
                status=SIGNED,
                chain_id=self.chain_id,
                from_address=self.address,
                nonce=bindparam("b_nonce"),
                gas_limit=bindparam("b_gas"),
                max_fee_per_gas=max_fee,
                max_priority_fee_per_gas=tip,
                raw_tx=bindparam("b_raw"),
                tx_hash=bindparam("b_hash"),
                signed_at=func.now(),
                last_error=None,
            ),
            [
                {
                    "b_id": tx.id,
                    "b_nonce": tx.nonce,
                    "b_gas": gas,
                    "b_raw": tx.raw_tx,
                    "b_hash": tx.tx_hash,
                }
                for tx, (_, _, gas) in zip(signed, plans, strict=True)
            ],
        )

    def _allowed(self, rows: Sequence[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
        """The rows the allowlist lets this key sign, and the others with the reason (never signed)."""
        allowed, refused = [], []
        for row in rows:
            try:
                self.allowlist.check(row.caller, row.to_address, row.data, row.value)
            except (CallNotAllowed, ValueError) as refusal:
                log.error("sender.refused", key=row.idempotency_key, caller=row.caller, reason=str(refusal))
                refused.append((row, f"refused by the allowlist: {refusal}"))
                continue
            allowed.append(row)
        return allowed, refused

    async def _fail(self, session: AsyncSession, failed: list[tuple[Any, str]]) -> None:
        await session.execute(
            update(_t)
            .where(_t.c.id == bindparam("b_id"))
            .values(
                status=FAILED,
                chain_id=self.chain_id,
                from_address=self.address,
                revert_reason=bindparam("b_reason"),
                last_error=None,
                confirmed_at=func.now(),
            ),
            [{"b_id": row.id, "b_reason": reason} for row, reason in failed],
        )
        events = []
        for row, reason in failed:
            events.append(
                (
                    TOPICS[FAILED],
                    {
                        "idempotency_key": row.idempotency_key,
                        "intent_id": str(row.id),
                        "status": FAILED,
                        "chain_id": self.chain_id,
                        "from": self.address,
                        "to": row.to_address,
                        "nonce": None,
                        "tx_hash": None,
                        "block_number": None,
                        "block_hash": None,
                        "gas_used": None,
                        "revert_reason": reason,
                    },
                    row.idempotency_key,
                )
            )
        await publish_all(session, events)
