"""Broadcast: send committed signed transactions in one batch, rebroadcast, retry refusals."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update

from offchain.chain.jsonrpc import RpcError
from offchain.chain.sender.base import WorkerBase, _already_seen, log
from offchain.chain.sender.intents import BROADCAST, SIGNED
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.chain.sender.signing import SignedTx


class BroadcastRound(WorkerBase):
    """What every round that signs ends with: the signed bytes, already committed, go to the node."""

    async def _broadcast(self, txs: Sequence[SignedTx], *, kind: str) -> None:
        """Send signed transactions (already committed) in one batch; record the outcome."""
        if not txs:
            return
        self._kill_point("before_broadcast")
        results = await self.rpc.batch([("eth_sendRawTransaction", [tx.raw_tx]) for tx in txs])
        self._kill_point("after_broadcast")
        sent: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        retry_at = time.monotonic() + self.settings.rebroadcast_after_s
        for tx, result in zip(txs, results, strict=True):
            if isinstance(result, RpcError) and not _already_seen(result):
                refused.append({"b_id": tx.id, "b_error": f"broadcast refused: {result.message}"[:2000]})
                self._retry_at[tx.id] = retry_at
                log.warning("sender.broadcast_refused", nonce=tx.nonce, error=result.message[:300])
            else:
                note = f"node answered: {result.message}" if isinstance(result, RpcError) else None
                sent.append({"b_id": tx.id, "b_note": note})
                self._retry_at.pop(tx.id, None)
                self._sent_head.setdefault(tx.id, self._head)
        async with self.db.worker_session() as session:
            if sent:
                await session.execute(
                    update(_t)
                    .where(_t.c.id == bindparam("b_id"), or_(_t.c.status == SIGNED, _t.c.status == BROADCAST))
                    .values(
                        status=BROADCAST,
                        # a rebroadcast of an already broadcast tx keeps its bump clock
                        broadcast_at=case((_t.c.status == SIGNED, func.now()), else_=_t.c.broadcast_at),
                        attempts=_t.c.attempts + 1,
                        last_error=bindparam("b_note"),
                    ),
                    sent,
                )
            if refused:
                await session.execute(
                    update(_t)
                    .where(_t.c.id == bindparam("b_id"))
                    .values(attempts=_t.c.attempts + 1, last_error=bindparam("b_error")),
                    refused,
                )
        self.metrics.broadcasts.labels(self.address, kind).inc(len(sent))
        if refused:
            self.metrics.refused.labels(self.address).inc(len(refused))

    async def _load_signed(self, ids: Sequence[uuid.UUID] | None) -> list[SignedTx]:
        query = select(_t.c.id, _t.c.nonce, _t.c.raw_tx, _t.c.tx_hash).where(
            _t.c.chain_id == self.chain_id,
            _t.c.from_address == self.address,
            _t.c.status.in_((SIGNED, BROADCAST)),
        )
        if ids is not None:
            query = query.where(_t.c.id.in_(ids))
        async with self.db.worker_session() as session:
            rows = (await session.execute(query.order_by(_t.c.nonce))).all()
        return [SignedTx(id=r.id, nonce=r.nonce, raw_tx=r.raw_tx, tx_hash=r.tx_hash) for r in rows]

    async def _rebroadcast_open(self) -> None:
        """On start: whatever was signed and is not mined may never have reached the node."""
        txs = await self._load_signed(None)
        if txs:
            log.info("sender.rebroadcast", count=len(txs), first_nonce=txs[0].nonce)
            await self._broadcast(txs, kind="rebroadcast")

    async def _retry_refused(self, in_flight: list[Any]) -> int:
        now = time.monotonic()
        due = [row.id for row in in_flight if row.status == SIGNED and self._retry_at.get(row.id, 0.0) <= now]
        if not due:
            return 0
        txs = await self._load_signed(due)
        await self._broadcast(txs, kind="rebroadcast")
        return 0  # a retry is not progress: an idle loop may sleep between retries
