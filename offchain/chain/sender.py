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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import coincurve
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, keccak
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Table, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from offchain.chain.allowlist import Allowlist, CallNotAllowed
from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.persistence.models import OutboxMessage, TxIntent
from offchain.platform.db import Database
from offchain.platform.logging import configure_logging, get_logger
from offchain.platform.settings import Environment, SenderSettings, Settings
from offchain.platform.tracing import tracer

log = get_logger(__name__)

PENDING = "pending"
SIGNED = "signed"
BROADCAST = "broadcast"
MINED = "mined"
CONFIRMED = "confirmed"
REVERTED = "reverted"
FAILED = "failed"
OPEN = (SIGNED, BROADCAST, MINED)
UNFINISHED = (PENDING, *OPEN)
TOPICS = {CONFIRMED: "tx.confirmed", REVERTED: "tx.reverted", FAILED: "tx.failed"}

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
# Rounds a consumed nonce may show no receipt of ours before we decide another tx took it.
_FOREIGN_NONCE_ROUNDS = 3

_t = cast(Table, TxIntent.__table__)


def _now() -> datetime:
    return datetime.now(UTC)


# --- submitting ------------------------------------------------------------------------------


class IdempotencyConflict(ValueError):
    """The key is taken by an intent with a different call."""

    def __init__(self, key: str, existing: TxIntent) -> None:
        super().__init__(f"idempotency key {key!r} already names a different transaction")
        self.key = key
        self.existing = existing


def normalize_address(value: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"not an address: {value!r}")
    return value.lower()


def normalize_data(data: bytes | str) -> str:
    if isinstance(data, bytes | bytearray):
        return "0x" + bytes(data).hex()
    text = data.lower()
    if not text.startswith("0x") or len(text) % 2:
        raise ValueError("calldata must be 0x-prefixed hex of whole bytes")
    bytes.fromhex(text[2:])  # raises on a non-hex digit
    return text


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


async def submit_intent(
    session: AsyncSession,
    *,
    caller: str,
    deployment: Deployment,
    idempotency_key: str,
    to: str,
    data: bytes | str,
    value: int = 0,
    sender: str | None = None,
    http: bool = False,
) -> tuple[TxIntent, bool]:
    """`submit`, also telling whether this call created the intent."""
    # A span in the caller's trace (the partner request or the consumer that wants the call
    # made), naming the intent the sender worker will sign and broadcast.
    with tracer().start_as_current_span(
        "caas.tx_intent.submit", attributes={"caas.tx_intent.key": idempotency_key}
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        intent, created = await _submit_intent(
            session,
            caller=caller,
            allowlist=Allowlist.of(deployment),
            idempotency_key=idempotency_key,
            to=to,
            data=data,
            value=value,
            sender=sender,
            trace_context=carrier.get("traceparent"),
            http=http,
        )
        if span.is_recording():
            span.set_attribute("caas.tx_intent.id", str(intent.id))
            span.set_attribute("caas.tx_intent.created", created)
        return intent, created


async def _submit_intent(
    session: AsyncSession,
    *,
    caller: str,
    allowlist: Allowlist,
    idempotency_key: str,
    to: str,
    data: bytes | str,
    value: int,
    sender: str | None,
    trace_context: str | None = None,
    http: bool = False,
) -> tuple[TxIntent, bool]:
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValueError("idempotency key must be 1-200 characters")
    if value < 0:
        raise ValueError("value must not be negative")
    to_address, calldata = normalize_address(to), normalize_data(data)
    allowlist.check(caller, to_address, calldata, value, http=http)  # CallNotAllowed: nothing recorded
    statement = (
        pg_insert(TxIntent)
        .values(
            idempotency_key=idempotency_key,
            to_address=to_address,
            data=calldata,
            value=value,
            from_address=normalize_address(sender) if sender else None,
            trace_context=trace_context,
            caller=caller,
        )
        # A concurrent insert of the same key waits for the first transaction, then does nothing.
        .on_conflict_do_nothing(index_elements=[TxIntent.idempotency_key])
        .returning(TxIntent)
    )
    created = (await session.execute(statement)).scalar_one_or_none()
    if created is not None:
        return created, True
    existing = await get_intent(session, idempotency_key)
    if existing is None:  # pragma: no cover - the conflicting row was committed before we looked
        raise RuntimeError("intent vanished after an insert conflict")
    if (existing.to_address, existing.data, existing.value, existing.caller) != (
        to_address,
        calldata,
        value,
        caller,
    ):
        raise IdempotencyConflict(idempotency_key, existing)
    return existing, False


async def submit(
    session: AsyncSession,
    *,
    caller: str,
    deployment: Deployment,
    idempotency_key: str,
    to: str,
    data: bytes | str,
    value: int = 0,
    sender: str | None = None,
) -> TxIntent:
    """Record the intent of service `caller` to call `to` with `data`, in the caller's transaction.

    The call must be one offchain.chain.allowlist allows `caller` on `deployment`
    (CallNotAllowed otherwise, and nothing is recorded). The same key returns the intent already
    recorded (whatever its status); the same key with a different call raises
    `IdempotencyConflict`. `sender` pins a sending key; by default the first sending key's worker
    to get to it carries it.
    """
    intent, _ = await submit_intent(
        session,
        caller=caller,
        deployment=deployment,
        idempotency_key=idempotency_key,
        to=to,
        data=data,
        value=value,
        sender=sender,
    )
    return intent


@dataclass(frozen=True)
class IntentCall:
    """One call for `submit_many`."""

    idempotency_key: str
    to: str
    data: bytes | str
    value: int = 0
    trace_context: str | None = None


async def submit_many(
    session: AsyncSession, calls: Sequence[IntentCall], *, caller: str, deployment: Deployment
) -> list[bool]:
    """`submit` for many calls of one caller in one statement (a batch of payments); `created`
    per call, in order.

    The same guarantees as `submit`, key by key: a key already recorded with the same call is
    left as it is (False), with a different call raises `IdempotencyConflict`; one call the
    allowlist refuses refuses the batch (CallNotAllowed, nothing recorded).
    """
    keys = [call.idempotency_key for call in calls]
    if len(set(keys)) != len(keys):
        raise ValueError("a batch names the same idempotency key twice")
    allowlist = Allowlist.of(deployment)
    rows = []
    for call in calls:
        if not call.idempotency_key or len(call.idempotency_key) > 200:
            raise ValueError("idempotency key must be 1-200 characters")
        if call.value < 0:
            raise ValueError("value must not be negative")
        row = {
            "idempotency_key": call.idempotency_key,
            "to_address": normalize_address(call.to),
            "data": normalize_data(call.data),
            "value": call.value,
            "from_address": None,
            "trace_context": call.trace_context,
            "caller": caller,
        }
        allowlist.check(caller, str(row["to_address"]), str(row["data"]), int(call.value))
        rows.append(row)
    if not rows:
        return []
    # in key order, as every batch: two batches sharing keys wait for each other, never deadlock
    rows.sort(key=lambda row: row["idempotency_key"])
    created = set(
        (
            await session.execute(
                pg_insert(TxIntent)
                .values(rows)
                .on_conflict_do_nothing(index_elements=[TxIntent.idempotency_key])
                .returning(TxIntent.idempotency_key)
            )
        ).scalars()
    )
    for row in rows:
        if row["idempotency_key"] in created:
            continue
        existing = await get_intent(session, row["idempotency_key"])
        if existing is None:  # pragma: no cover - the conflicting row was committed before we looked
            raise RuntimeError("intent vanished after an insert conflict")
        if (existing.to_address, existing.data, existing.value, existing.caller) != (
            row["to_address"],
            row["data"],
            row["value"],
            row["caller"],
        ):
            raise IdempotencyConflict(row["idempotency_key"], existing)
    return [key in created for key in keys]


async def get_intent(session: AsyncSession, idempotency_key: str) -> TxIntent | None:
    result = await session.execute(
        select(TxIntent)
        .where(TxIntent.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


# --- metrics ---------------------------------------------------------------------------------


class SenderMetrics:
    """Created unregistered, then registered into the hosting service's own registry."""

    def __init__(self) -> None:
        labels = ["address"]
        self.intents = Gauge(
            "caas_sender_intents", "Intents not final yet, by status.", [*labels, "status"], registry=None
        )
        self.next_nonce = Gauge(
            "caas_sender_next_nonce", "Next nonce the key will assign.", labels, registry=None
        )
        self.broadcasts = Counter(
            "caas_sender_broadcasts",
            "Signed transactions sent to the node (first send, rebroadcast, fee bump).",
            [*labels, "kind"],
            registry=None,
        )
        self.refused = Counter(
            "caas_sender_broadcast_refusals", "Broadcasts the node refused.", labels, registry=None
        )
        self.confirmations = Counter(
            "caas_sender_confirmations", "Intents confirmed on chain.", labels, registry=None
        )
        self.reverts = Counter(
            "caas_sender_reverts",
            "Intents that reverted on chain, or at gas estimation (then never sent).",
            [*labels, "stage"],
            registry=None,
        )
        self.fee_bumps = Counter(
            "caas_sender_fee_bumps", "Stuck transactions re-signed with higher fees.", labels, registry=None
        )

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (
            self.intents,
            self.next_nonce,
            self.broadcasts,
            self.refused,
            self.confirmations,
            self.reverts,
            self.fee_bumps,
        ):
            registry.register(metric)


# --- the worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainView:
    head: int
    mined_nonce: int  # eth_getTransactionCount(latest): our nonces below it are mined
    pending_nonce: int  # eth_getTransactionCount(pending)
    base_fee: int
    tip: int
    gas_limit: int  # of the latest block


@dataclass(frozen=True)
class SignedTx:
    id: uuid.UUID
    nonce: int
    raw_tx: str
    tx_hash: str


# a transaction the node does not count as pending two blocks after it was sent is taken as lost
# no sooner than this (a node that mines on every arrival passes two blocks at once)
_UNSEEN_MIN_S = 1.0


def sign_eip1559(
    key: coincurve.PrivateKey,
    *,
    chain_id: int,
    nonce: int,
    to: str,
    data: str,
    value: int,
    gas: int,
    max_fee: int,
    tip: int,
) -> tuple[bytes, bytes]:
    """(raw transaction, hash) of a type-2 (EIP-1559) call without an access list.

    The same bytes as eth_account's `sign_transaction` (RFC 6979 signatures are deterministic;
    tested), at a fifth of its CPU: its validation and formatters were a quarter of the
    orchestration service's CPU under a burst.
    """
    fields: list[Any] = [
        chain_id,
        nonce,
        tip,
        max_fee,
        gas,
        bytes.fromhex(to.removeprefix("0x")),
        value,
        bytes.fromhex(data.removeprefix("0x")),
        [],
    ]
    signature = key.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)
    r, s, y_parity = signature[:32], signature[32:64], signature[64]
    raw = b"\x02" + rlp.encode([*fields, y_parity, int.from_bytes(r, "big"), int.from_bytes(s, "big")])
    return raw, keccak(raw)


def advisory_lock_key(chain_id: int, address: str) -> int:
    """A signed 64-bit key per (chain, sending address) for pg_advisory_lock."""
    digest = keccak(text=f"caas.sender:{chain_id}:{address.lower()}")
    return int.from_bytes(digest[:8], "big", signed=True)


def bumped(value: int, bps: int) -> int:
    """`value` raised by `bps` basis points, rounded up, and at least by 1 wei."""
    return max(value + 1, -(-value * (10_000 + bps) // 10_000))


def _already_seen(error: RpcError) -> bool:
    message = error.message.lower()
    return any(marker in message for marker in _ALREADY_SEEN)


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True when `stop` is set."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def publish_all(session: AsyncSession, events: list[tuple[str, dict[str, Any], str]]) -> None:
    """Platform-wide outbox events (topic, payload, key) in one INSERT, in the caller's transaction.

    The same rows `offchain.eventbus.publish` writes (no partner, no request id: the sender acts
    for nobody in particular), in one statement: a round finalizes hundreds of intents, and one
    INSERT per event was most of its database time.
    """
    if events:
        await session.execute(
            insert(OutboxMessage).values(
                [
                    {"topic": topic, "key": key, "payload": payload, "headers": {}, "partner_id": None}
                    for topic, payload, key in events
                ]
            )
        )


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


class SenderWorker:
    """The single writer of one sending key: see the module docstring for a round."""

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
        self.account: LocalAccount = Account.from_key(private_key)
        self.address = self.account.address.lower()
        self._key = coincurve.PrivateKey(bytes(self.account.key))
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
                    await _sleep(stop, delay)
                    continue
                delay = self.settings.idle_poll_s
                if worked:
                    continue
                if until_idle and await self._is_idle():
                    return
                await _sleep(stop, delay)
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
                if await _sleep(stop, 1.0):
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

    def _kill_point(self, point: str) -> None:
        if self.kill_at == point:
            log.warning("sender.test_kill", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

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

    # 2. fee bumps --------------------------------------------------------------------------

    def _fees(self, view: ChainView) -> tuple[int, int]:
        """(max fee, priority fee) for a new transaction: room for the base fee to double."""
        max_fee = min(self.settings.max_fee_per_gas_wei, 2 * view.base_fee + view.tip)
        return max_fee, min(view.tip, max_fee)

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
        bps, cap = self.settings.bump_bps, self.settings.max_fee_per_gas_wei
        plans = []
        for row in stuck:
            tip = max(bumped(row.max_priority_fee_per_gas, bps), view.tip)
            max_fee = max(bumped(row.max_fee_per_gas, bps), 2 * view.base_fee + tip)
            if max_fee > cap:
                if bumped(row.max_fee_per_gas, bps) > cap:
                    log.warning("sender.bump_capped", key=row.idempotency_key, nonce=row.nonce, cap=cap)
                    continue
                max_fee = cap
            plans.append((row, max_fee, min(tip, max_fee)))
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

    # 3. new intents ------------------------------------------------------------------------

    async def _send_new(self, view: ChainView, in_flight: list[Any]) -> int:
        room = self.settings.max_in_flight - len(in_flight)
        # Unmined gas stays within `in_flight_blocks` blocks' worth: more than a block holds can
        # sit in the pool of a node that mines only when a transaction arrives (Anvil automine)
        # and, on any chain, cannot be included sooner anyway.
        gas_room = int(view.gas_limit * self.settings.in_flight_blocks) - sum(r.gas_limit for r in in_flight)
        if room <= 0 or (gas_room <= 0 and in_flight):
            return 0
        limit = min(self.settings.batch_size, room)
        if self._gas_per_tx:
            limit = max(1, min(limit, gas_room // self._gas_per_tx + 1))
        async with self.db.worker_session() as session:
            claimed = (
                await session.execute(
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
            ).all()
            if not claimed:
                return 0
            claimed, refused = self._allowed(claimed)
            if refused:
                await self._fail(session, refused)
                self.metrics.reverts.labels(self.address, "refused").inc(len(refused))
            if not claimed:
                return len(refused)
            highest = await session.scalar(
                select(func.max(_t.c.nonce)).where(
                    _t.c.chain_id == self.chain_id, _t.c.from_address == self.address
                )
            )
            # Our own record wins over the node's pending count (a signed tx may not have reached
            # the node yet); the node's wins when someone else used the key.
            nonce = max(-1 if highest is None else highest + 1, view.pending_nonce)
            estimates = await self.rpc.batch(
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
            if plans:
                self._gas_per_tx = sum(gas for _, _, gas in plans) // len(plans)
            max_fee, tip = self._fees(view)
            signed = await asyncio.to_thread(
                lambda: [
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
            )
            if signed:
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
        raw, tx_hash = sign_eip1559(
            self._key,
            chain_id=self.chain_id,
            nonce=nonce,
            to=to,
            data=data,
            value=value,
            gas=gas,
            max_fee=max_fee,
            tip=tip,
        )
        return SignedTx(id=intent_id, nonce=nonce, raw_tx="0x" + raw.hex(), tx_hash="0x" + tx_hash.hex())

    # broadcasting --------------------------------------------------------------------------

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


def sending_keys(settings: Settings) -> list[str]:
    """The configured sending keys; in development and tests Anvil's account #1 by default."""
    if settings.chain.sender_private_key is not None:
        return [settings.chain.sender_private_key.get_secret_value()]
    if settings.env in (Environment.DEVELOPMENT, Environment.TEST):
        from offchain.platform.devkeys import dev_roles

        return [dev_roles().sender.private_key]
    return []


def kill_switch(settings: Settings) -> str | None:
    if settings.env is Environment.PRODUCTION:
        return None
    return os.environ.get(KILL_SWITCH_ENV) or None


def build_workers(
    db: Database, rpc: JsonRpc, settings: Settings, *, metrics: SenderMetrics | None = None
) -> list[SenderWorker]:
    metrics = metrics or SenderMetrics()
    if not settings.chain.deployment_file:
        # what the key may sign is decided against the deployment's contracts: none, nothing
        raise ValueError("the sender needs DEPLOYMENT_FILE: it signs calls to its contracts only")
    allowlist = Allowlist.of(Deployment.load(settings.chain.deployment_file))
    return [
        SenderWorker(
            db=db,
            rpc=rpc,
            private_key=key,
            settings=settings.sender,
            allowlist=allowlist,
            metrics=metrics,
            kill_at=kill_switch(settings),
        )
        for key in sending_keys(settings)
    ]


async def run_senders(
    db: Database, settings: Settings, stop: asyncio.Event, *, metrics: SenderMetrics | None = None
) -> None:
    """One worker per sending key until `stop` (the orchestration service's background job)."""
    if not settings.chain.rpc_url:
        raise ValueError("CHAIN_RPC_URL is not set")
    rpc = JsonRpc(
        settings.chain.endpoints,  # CHAIN_RPC_URLS failover
        timeout_s=settings.chain.rpc_timeout_s,
        batch_size=settings.sender.rpc_batch_size,
    )
    try:
        workers = build_workers(db, rpc, settings, metrics=metrics)
        if not workers:
            log.warning("sender.disabled", reason="no sending key configured (SENDER_PRIVATE_KEY)")
            return
        await asyncio.gather(*(worker.run(stop) for worker in workers))
    finally:
        await rpc.aclose()


async def _main(until_idle: bool, within_s: float) -> None:
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    db = Database.from_settings(settings.database, application_name="caas-sender")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if until_idle:
            rpc = JsonRpc(settings.chain.rpc_url or "", timeout_s=settings.chain.rpc_timeout_s)
            try:
                for worker in build_workers(db, rpc, settings):
                    await worker.drain(within_s=within_s)
            finally:
                await rpc.aclose()
        else:
            await run_senders(db, settings, stop)
    finally:
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m offchain.chain.sender`: run the sending keys' workers on their own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--until-idle", action="store_true", help="exit once nothing is left to send")
    parser.add_argument("--timeout", type=float, default=300.0, help="with --until-idle: give up after this")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.until_idle, args.timeout))


if __name__ == "__main__":
    main()
