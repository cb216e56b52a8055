"""Settle round: receipts of mined transactions, confirmations, reorgs, revert reasons, outcomes."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from sqlalchemy import bindparam, func, update
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.jsonrpc import RpcError, hex_int
from offchain.chain.sender.base import ChainView, WorkerBase, _raise_first_error, log
from offchain.chain.sender.intents import (
    CONFIRMED,
    MINED,
    PENDING,
    REVERTED,
    SIGNED,
    TOPICS,
    publish_all,
)
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.platform.tracing import tracer

# Rounds a consumed nonce may show no receipt of ours before we decide another tx took it.
_FOREIGN_NONCE_ROUNDS = 3


def _finished_span(row: Any, outcome: dict[str, Any]) -> None:
    """The chain's answer as a span of the trace that asked for the call (one trace, request to chain)."""
    if not row.trace_context:
        return
    parent = propagate.extract({"traceparent": row.trace_context})
    span = tracer().start_span("caas.tx.final", context=parent, kind=SpanKind.CONSUMER)
    if span.is_recording():
        span.set_attribute("caas.tx_intent.key", row.idempotency_key)
        span.set_attribute("caas.tx.status", outcome["b_status"])
        span.set_attribute("caas.tx.hash", outcome["b_hash"] or "")
        span.set_attribute("caas.tx.block_number", outcome["b_block_number"] or 0)
    span.end()


class SettleRound(WorkerBase):
    """1. track: receipts for exactly the transactions known to be mined, and final outcomes."""

    async def _track(self, view: ChainView, rows: list[Any]) -> tuple[int, list[Any]]:
        """Settle what is mined; returns (intents moved, the rows still unmined)."""
        depth_needed = self.settings.confirmations
        due, in_flight = [], []
        for row in rows:
            if row.status == MINED:
                if view.head - row.block_number + 1 >= depth_needed:
                    due.append(row)
            elif row.nonce < view.mined_nonce:
                due.append(row)
            else:
                in_flight.append(row)
        if not due:
            return 0, in_flight

        hashes = [[row.tx_hash, *row.previous_tx_hashes] for row in due]
        receipts = await self.rpc.batch(
            [("eth_getTransactionReceipt", [h]) for group in hashes for h in group]
        )
        _raise_first_error(receipts)
        position = 0
        mined: list[dict[str, Any]] = []
        finals: list[tuple[Any, dict[str, Any]]] = []
        requeue_signed: list[Any] = []
        requeue_pending: list[Any] = []
        for row, group in zip(due, hashes, strict=True):
            found = [r for r in receipts[position : position + len(group)] if r]
            position += len(group)
            if not found:
                if row.status == MINED:
                    requeue_signed.append(row)  # its block was reorged away: send it again
                else:
                    rounds = self._unexplained[row.id] = self._unexplained.get(row.id, 0) + 1
                    if rounds >= _FOREIGN_NONCE_ROUNDS:
                        requeue_pending.append(row)
                continue
            self._unexplained.pop(row.id, None)
            receipt = found[0]
            block_number = hex_int(receipt["blockNumber"])
            if view.head - block_number + 1 >= depth_needed and (
                row.status != MINED or receipt["blockHash"] == row.block_hash
            ):
                finals.append((row, receipt))
            elif row.status != MINED or receipt["blockHash"] != row.block_hash:
                mined.append(
                    {
                        "b_id": row.id,
                        "b_block_number": block_number,
                        "b_block_hash": receipt["blockHash"],
                        "b_gas_used": hex_int(receipt["gasUsed"]),
                        "b_price": hex_int(receipt.get("effectiveGasPrice") or "0x0"),
                    }
                )
        reasons = await self._revert_reasons([(row, r) for row, r in finals if hex_int(r["status"]) != 1])
        async with self.db.worker_session() as session:
            if mined:
                await session.execute(
                    update(_t)
                    .where(_t.c.id == bindparam("b_id"))
                    .values(
                        status=MINED,
                        block_number=bindparam("b_block_number"),
                        block_hash=bindparam("b_block_hash"),
                        gas_used=bindparam("b_gas_used"),
                        effective_gas_price=bindparam("b_price"),
                    ),
                    mined,
                )
            if requeue_signed:
                await session.execute(
                    update(_t)
                    .where(_t.c.id == bindparam("b_id"))
                    .values(status=SIGNED, block_number=None, block_hash=None, broadcast_at=None),
                    [{"b_id": row.id} for row in requeue_signed],
                )
            if requeue_pending:
                await self._requeue_foreign_nonce(session, requeue_pending)
            if finals:
                await self._finalize(session, finals, reasons)
        for row in requeue_signed:
            log.warning("sender.reorged_out", key=row.idempotency_key, nonce=row.nonce)
        confirmed = sum(1 for _, r in finals if hex_int(r["status"]) == 1)
        self.metrics.confirmations.labels(self.address).inc(confirmed)
        if len(finals) - confirmed:
            self.metrics.reverts.labels(self.address, "chain").inc(len(finals) - confirmed)
        return len(mined) + len(finals) + len(requeue_signed) + len(requeue_pending), in_flight

    async def _requeue_foreign_nonce(self, session: AsyncSession, rows: list[Any]) -> None:
        await session.execute(
            update(_t)
            .where(_t.c.id == bindparam("b_id"))
            .values(
                status=PENDING,
                nonce=None,
                raw_tx=None,
                tx_hash=None,
                gas_limit=None,
                max_fee_per_gas=None,
                max_priority_fee_per_gas=None,
                broadcast_at=None,
                signed_at=None,
                previous_tx_hashes=func.array_append(_t.c.previous_tx_hashes, bindparam("b_hash")),
                last_error=bindparam("b_error"),
            ),
            [
                {
                    "b_id": row.id,
                    "b_hash": row.tx_hash,
                    "b_error": f"nonce {row.nonce} was taken by a transaction we did not sign; re-queued",
                }
                for row in rows
            ],
        )
        for row in rows:
            self._unexplained.pop(row.id, None)
            log.error("sender.foreign_nonce", key=row.idempotency_key, nonce=row.nonce)

    async def _revert_reasons(self, reverted: list[tuple[Any, dict[str, Any]]]) -> dict[uuid.UUID, str]:
        """Replay each reverted call with eth_call at its block to read the revert string.

        A reverted transaction changed nothing, so the state at the end of its block is what it
        saw, short of later transactions in the same block.
        """
        if not reverted:
            return {}
        calls = [
            (
                "eth_call",
                [
                    {
                        "from": self.address,
                        "to": row.to_address,
                        "data": row.data,
                        "value": hex(row.value),
                        "gas": hex(row.gas_limit),
                    },
                    receipt["blockNumber"],
                ],
            )
            for row, receipt in reverted
        ]
        results = await self.rpc.batch(calls)
        reasons: dict[uuid.UUID, str] = {}
        for (row, receipt), result in zip(reverted, results, strict=True):
            if hex_int(receipt["gasUsed"]) >= row.gas_limit:
                reasons[row.id] = "out of gas"
            elif isinstance(result, RpcError):
                reasons[row.id] = (
                    result.revert_reason() if result.is_revert else f"replay failed: {result.message}"
                )
            else:
                reasons[row.id] = "reverted without a reason (replay succeeded)"
        return reasons

    async def _finalize(
        self,
        session: AsyncSession,
        finals: list[tuple[Any, dict[str, Any]]],
        reasons: dict[uuid.UUID, str],
    ) -> None:
        """Final statuses and their outbox events, in the caller's one transaction."""
        params = []
        for row, receipt in finals:
            winner = receipt["transactionHash"].lower()
            others = [h for h in [row.tx_hash, *row.previous_tx_hashes] if h != winner]
            params.append(
                {
                    "b_id": row.id,
                    "b_status": CONFIRMED if hex_int(receipt["status"]) == 1 else REVERTED,
                    "b_hash": winner,
                    "b_previous": others,
                    "b_block_number": hex_int(receipt["blockNumber"]),
                    "b_block_hash": receipt["blockHash"],
                    "b_gas_used": hex_int(receipt["gasUsed"]),
                    "b_price": hex_int(receipt.get("effectiveGasPrice") or "0x0"),
                    "b_reason": reasons.get(row.id),
                }
            )
        await session.execute(
            update(_t)
            .where(_t.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                tx_hash=bindparam("b_hash"),
                previous_tx_hashes=bindparam("b_previous"),
                block_number=bindparam("b_block_number"),
                block_hash=bindparam("b_block_hash"),
                gas_used=bindparam("b_gas_used"),
                effective_gas_price=bindparam("b_price"),
                revert_reason=bindparam("b_reason"),
                last_error=None,
                confirmed_at=func.now(),
            ),
            params,
        )
        events = []
        for (row, _), p in zip(finals, params, strict=True):
            events.append(
                (
                    TOPICS[p["b_status"]],
                    {
                        "idempotency_key": row.idempotency_key,
                        "intent_id": str(row.id),
                        "status": p["b_status"],
                        "chain_id": self.chain_id,
                        "from": self.address,
                        "to": row.to_address,
                        "nonce": row.nonce,
                        "tx_hash": p["b_hash"],
                        "block_number": p["b_block_number"],
                        "block_hash": p["b_block_hash"],
                        "gas_used": p["b_gas_used"],
                        "revert_reason": p["b_reason"],
                    },
                    row.idempotency_key,
                )
            )
            self._retry_at.pop(row.id, None)
            _finished_span(row, p)
        await publish_all(session, events)
