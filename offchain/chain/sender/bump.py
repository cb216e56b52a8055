"""Bump round: re-sign stuck (or lost) transactions at the same nonce with higher fees."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, update

from offchain.chain.sender.base import ChainView, log
from offchain.chain.sender.broadcast import BroadcastRound
from offchain.chain.sender.intents import BROADCAST, SIGNED
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.chain.sender.signing import bumped_fees

# a transaction the node does not count as pending two blocks after it was sent is taken as lost
# no sooner than this (a node that mines on every arrival passes two blocks at once)
_UNSEEN_MIN_S = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class BumpRound(BroadcastRound):
    """2. bump: a transaction unmined too long is replaced at its nonce, fees raised."""

    async def _bump(self, view: ChainView, in_flight: list[Any]) -> int:
        now = _now()
        live = {row.id for row in in_flight}
        self._sent_head = {key: head for key, head in self._sent_head.items() if key in live}
        stuck = [
            row
            for row in in_flight
            if row.status == BROADCAST
            and row.broadcast_at is not None
            and self._is_stuck(row, view, (now - row.broadcast_at).total_seconds())
        ]
        if not stuck:
            return 0
        plans = []
        for row in stuck:
            fees = bumped_fees(
                self.settings,
                max_fee=row.max_fee_per_gas,
                tip=row.max_priority_fee_per_gas,
                base_fee=view.base_fee,
                node_tip=view.tip,
            )
            if fees is None:
                cap = self.settings.max_fee_per_gas_wei
                log.warning("sender.bump_capped", key=row.idempotency_key, nonce=row.nonce, cap=cap)
                continue
            plans.append((row, *fees))
        if not plans:
            return 0
        signed = await asyncio.to_thread(
            lambda: [
                self._sign(
                    nonce=row.nonce,
                    to=row.to_address,
                    data=row.data,
                    value=row.value,
                    gas=row.gas_limit,
                    max_fee=max_fee,
                    tip=tip,
                    intent_id=row.id,
                )
                for row, max_fee, tip in plans
            ]
        )
        async with self.db.worker_session() as session:
            await session.execute(
                update(_t)
                .where(_t.c.id == bindparam("b_id"), _t.c.status == BROADCAST)
                .values(
                    status=SIGNED,
                    previous_tx_hashes=func.array_append(_t.c.previous_tx_hashes, _t.c.tx_hash),
                    tx_hash=bindparam("b_hash"),
                    raw_tx=bindparam("b_raw"),
                    max_fee_per_gas=bindparam("b_max_fee"),
                    max_priority_fee_per_gas=bindparam("b_tip"),
                    fee_bumps=_t.c.fee_bumps + 1,
                    signed_at=func.now(),
                    broadcast_at=None,
                ),
                [
                    {
                        "b_id": tx.id,
                        "b_hash": tx.tx_hash,
                        "b_raw": tx.raw_tx,
                        "b_max_fee": max_fee,
                        "b_tip": tip,
                    }
                    for tx, (_, max_fee, tip) in zip(signed, plans, strict=True)
                ],
            )
        for row, max_fee, tip in plans:
            log.info("sender.fee_bump", key=row.idempotency_key, nonce=row.nonce, max_fee=max_fee, tip=tip)
        self.metrics.fee_bumps.labels(self.address).inc(len(signed))
        await self._broadcast(signed, kind="bump")
        return len(signed)

    def _is_stuck(self, row: Any, view: ChainView, age_s: float) -> bool:
        if age_s >= self.settings.bump_after_s:
            return True
        # The node's pending count covers the transactions it holds as executable. One of ours
        # still beyond it `rebroadcast_after_s` after its broadcast, or once two blocks have been
        # mined since (and a moment has passed), is not among them: the node lost it, or keeps
        # it behind a nonce gap that is not there (Anvil's automine can park a transaction that
        # arrives while its predecessor is being mined, for good). Sending the same bytes again
        # is "already known"; a replacement at the same nonce is taken afresh. Once per
        # transaction: a node whose count lags must not raise the fees again and again.
        if row.previous_tx_hashes or row.nonce < view.pending_nonce:
            return False
        if age_s >= self.settings.rebroadcast_after_s:
            return True
        sent_head = self._sent_head.get(row.id)
        return sent_head is not None and view.head >= sent_head + 2 and age_s >= _UNSEEN_MIN_S
