"""Transaction sender: durable intents, and one single-writer worker per sending key.

A use case calls `submit(session, caller=..., deployment=..., idempotency_key=..., to=...,
data=...)` inside its own transaction, so the intent commits together with the state change that
wanted it; the same key always yields the same intent, hence exactly one on-chain effect. Keys
name the effect, e.g. `record_repayment:<payment ref>` or `create_loan:<loan id>`. The caller is
recorded on the intent, and only calls offchain.chain.allowlist allows that caller are recorded
(CallNotAllowed otherwise) or, whatever a row says, signed.

The worker of a sending key (`SenderWorker`) holds a PostgreSQL advisory lock for that key and
works in rounds (`step`), never waiting for one receipt before sending the next transaction:

1. track: only nonces below the account's mined transaction count can have a receipt, so
   receipts are fetched (one JSON-RPC batch) exactly for transactions known to be mined; a
   receipt `confirmations` deep makes the intent final, and its status and outbox event
   (`tx.confirmed` / `tx.reverted`, revert reason replayed with `eth_call` at the mined block)
   commit in one transaction;
2. bump: a transaction unmined `bump_after_s` after its broadcast is re-signed at the same nonce
   with fees raised by at least `bump_bps`; earlier hashes stay recorded, any of them may mine.
   One the node does not count as pending `rebroadcast_after_s` after its broadcast, or two
   blocks later (lost, or parked behind a gap that is not there), is re-signed then, once,
   without waiting that long;
3. send: pending intents are claimed in submission order, gas is estimated (one batch), nonces
   are assigned, transactions signed, and nonce + raw transaction + hash are committed *before*
   the batch is broadcast (one batch); the broadcast is recorded afterwards.

Crash safety: a worker killed anywhere restarts by rebroadcasting every signed-but-unmined raw
transaction. The same raw bytes have the same hash, so the node either already knows it, has
mined it ("nonce too low" -> the receipt settles it), or takes it now: one effect either way.

Nonces stay gap-free: a nonce is assigned only to a transaction whose estimate passed, in the
same commit as its signed bytes, and every signed transaction is (re)broadcast until a
transaction at its nonce is mined. An intent whose estimate reverts gets no nonce. Because an
estimate may fail only because an earlier transaction of ours is not mined yet, a revert is
final only once every nonce assigned before the intent was tried is mined; until then the
intent is retried. If some transaction we did not sign takes one of our nonces, the intent is
re-queued for a fresh nonce.

Modules, one reason to change each: `intents` (the table's statuses, submitting, outbox events),
`signing` (nonces, fees, EIP-1559 bytes), `metrics`, `base` (a worker's state), the rounds
`settle`, `bump`, `send` and `broadcast`, `worker` (the lock and the round), `runner` (one
worker per key; `python -m offchain.chain.sender`).
"""

from offchain.chain.sender.base import KILL_SWITCH_ENV
from offchain.chain.sender.intents import (
    BROADCAST,
    CONFIRMED,
    FAILED,
    MINED,
    PENDING,
    REVERTED,
    SIGNED,
    IdempotencyConflict,
    IntentCall,
    get_intent,
    submit,
    submit_intent,
    submit_many,
)
from offchain.chain.sender.metrics import SenderMetrics
from offchain.chain.sender.runner import run_senders, sending_keys
from offchain.chain.sender.worker import SenderWorker

__all__ = [
    "BROADCAST",
    "CONFIRMED",
    "FAILED",
    "KILL_SWITCH_ENV",
    "MINED",
    "PENDING",
    "REVERTED",
    "SIGNED",
    "IdempotencyConflict",
    "IntentCall",
    "SenderMetrics",
    "SenderWorker",
    "get_intent",
    "run_senders",
    "sending_keys",
    "submit",
    "submit_intent",
    "submit_many",
]
