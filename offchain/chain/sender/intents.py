"""Intents: the `caas_tx_intents` rows a use case records in its own transaction, and their statuses.

`submit`, `submit_intent` and `submit_many` record (idempotently, by key) what a service wants
called; only calls offchain.chain.allowlist allows that caller are recorded. `publish_all` writes
the outbox events the worker emits when an intent becomes final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_utils import is_address
from opentelemetry import propagate
from sqlalchemy import Table, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.allowlist import Allowlist
from offchain.chain.contracts import Deployment
from offchain.persistence.models import OutboxMessage, TxIntent
from offchain.platform.tracing import tracer

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

TX_INTENTS = cast(Table, TxIntent.__table__)


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
    rows: list[dict[str, Any]] = []
    for call in calls:
        if not call.idempotency_key or len(call.idempotency_key) > 200:
            raise ValueError("idempotency key must be 1-200 characters")
        if call.value < 0:
            raise ValueError("value must not be negative")
        row: dict[str, Any] = {
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
