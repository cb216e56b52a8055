"""What every round of a sender worker shares: its key, settings, RPC client and bookkeeping."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from offchain.chain.allowlist import Allowlist
from offchain.chain.jsonrpc import JsonRpc, RpcError
from offchain.chain.sender.intents import TX_INTENTS as _t
from offchain.chain.sender.metrics import SenderMetrics
from offchain.chain.sender.signing import SignedTx, Signer, new_fees
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import SenderSettings

log = get_logger("offchain.chain.sender")

# Test-only crash switch: "before_broadcast" or "after_broadcast" makes the worker SIGKILL itself
# at that point of the real code path (ignored in production).
KILL_SWITCH_ENV = "CAAS_SENDER_TEST_KILL_AT"
KILL_POINTS = ("before_broadcast", "after_broadcast")

# Broadcast answers that mean the node has (or had) a transaction at this nonce: the receipt
# tracking settles which one mined, so these count as broadcast rather than refused.
_ALREADY_SEEN = (
    "already known",
    "known transaction",
    "already imported",
    "already exists",
    "nonce too low",
    "replacement transaction underpriced",
)


@dataclass(frozen=True)
class ChainView:
    head: int
    mined_nonce: int  # eth_getTransactionCount(latest): our nonces below it are mined
    pending_nonce: int  # eth_getTransactionCount(pending)
    base_fee: int
    tip: int
    gas_limit: int  # of the latest block


def _already_seen(error: RpcError) -> bool:
    message = error.message.lower()
    return any(marker in message for marker in _ALREADY_SEEN)


def _raise_first_error(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, RpcError):
            raise result


_OPEN_COLUMNS = (
    _t.c.id,
    _t.c.trace_context,
    _t.c.idempotency_key,
    _t.c.status,
    _t.c.nonce,
    _t.c.to_address,
    _t.c.data,
    _t.c.value,
    _t.c.gas_limit,
    _t.c.max_fee_per_gas,
    _t.c.max_priority_fee_per_gas,
    _t.c.tx_hash,
    _t.c.previous_tx_hashes,
    _t.c.block_number,
    _t.c.block_hash,
    _t.c.broadcast_at,
)


class WorkerBase:
    """The state of one sending key's worker; the rounds (settle, bump, send, broadcast) extend it."""

    def __init__(
        self,
        *,
        db: Database,
        rpc: JsonRpc,
        private_key: str,
        settings: SenderSettings,
        allowlist: Allowlist,
        metrics: SenderMetrics | None = None,
        kill_at: str | None = None,
    ) -> None:
        if kill_at is not None and kill_at not in KILL_POINTS:
            raise ValueError(f"{KILL_SWITCH_ENV} must be one of {KILL_POINTS}")
        self.db = db
        # checked again before signing, whatever path wrote the row (offchain.chain.allowlist)
        self.allowlist = allowlist
        self.rpc = rpc
        self.settings = settings
        self.signer = Signer(private_key)
        self.account = self.signer.account
        self.address = self.signer.address
        self.metrics = metrics or SenderMetrics()
        self.kill_at = kill_at
        self.chain_id = 0
        self._lock_conn: AsyncConnection | None = None
        # intent id -> the nonce our mined count must reach before its estimate revert is final
        self._estimate_barrier: dict[uuid.UUID, int] = {}
        self._unexplained: dict[uuid.UUID, int] = {}  # intent id -> rounds its nonce had no receipt of ours
        self._retry_at: dict[uuid.UUID, float] = {}  # refused broadcasts: monotonic time of the next try
        self._head = 0  # the chain head of this round's view
        self._sent_head: dict[uuid.UUID, int] = {}  # intent id -> the head when its tx was sent
        self._gauges_at = 0.0
        self._next_nonce = 0
        self._gas_per_tx = 0  # running estimate, to claim about as many intents as fit

    def _kill_point(self, point: str) -> None:
        if self.kill_at == point:
            log.warning("sender.test_kill", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _fees(self, view: ChainView) -> tuple[int, int]:
        """(max fee, priority fee) for a new transaction: room for the base fee to double."""
        return new_fees(self.settings, base_fee=view.base_fee, tip=view.tip)

    def _sign(
        self,
        *,
        nonce: int,
        to: str,
        data: str,
        value: int,
        gas: int,
        max_fee: int,
        tip: int,
        intent_id: uuid.UUID,
    ) -> SignedTx:
        return self.signer.sign(
            chain_id=self.chain_id,
            nonce=nonce,
            to=to,
            data=data,
            value=value,
            gas=gas,
            max_fee=max_fee,
            tip=tip,
            intent_id=intent_id,
        )
