"""What health:8010 measures beyond "does it answer": the chain head, the indexer's checkpoint, the
outbox, the Redis Stream consumer groups and the transaction intents.

Each reader returns plain numbers (offchain.domain.health judges them). A reader whose store
is unreachable raises; the caller reports that check as down, since nothing can be vouched for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text

from offchain.domain.health import GroupBacklog
from offchain.eventbus.messages import StreamNames
from offchain.platform.db import Database

# intents the sender still owes a final answer for
UNFINISHED = ("pending", "signed", "broadcast", "mined")


@dataclass(frozen=True)
class ChainHead:
    chain_id: int
    number: int
    timestamp: int  # unix seconds of the head block

    @property
    def age_s(self) -> float:
        return time.time() - self.timestamp


async def read_chain_head(http: httpx.AsyncClient, rpc_url: str, *, timeout_s: float) -> ChainHead:
    """eth_chainId and the latest block in one JSON-RPC batch."""
    response = await http.post(
        rpc_url,
        json=[
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_getBlockByNumber", "params": ["latest", False]},
        ],
        timeout=timeout_s,
    )
    response.raise_for_status()
    answers = {item["id"]: item for item in response.json()}
    for item in answers.values():
        if "error" in item:
            raise RuntimeError(f"RPC error: {item['error']}")
    block = answers[2]["result"]
    return ChainHead(
        chain_id=int(answers[1]["result"], 16),
        number=int(block["number"], 16),
        timestamp=int(block["timestamp"], 16),
    )


_CHECKPOINT = text(
    "SELECT block_number FROM caas_indexer_checkpoints WHERE name = :name AND chain_id = :chain_id"
)
_OUTBOX = text(
    "SELECT count(*) AS unpublished, min(created_at) AS oldest FROM caas_outbox WHERE published_at IS NULL"
)
_INTENTS = text(
    "SELECT status, count(*) AS n, min(created_at) AS oldest FROM caas_tx_intents "
    "WHERE status = ANY(:unfinished) GROUP BY status"
)
_FAILED = text(
    "SELECT count(*) FROM caas_tx_intents "
    "WHERE status IN ('failed', 'reverted') AND updated_at > now() - interval '1 hour'"
)


@dataclass(frozen=True)
class DatabaseSignals:
    checkpoint: int | None
    outbox_unpublished: int
    outbox_oldest_age_s: float | None
    intents_by_status: dict[str, int]
    intent_oldest_age_s: float | None
    intents_failed_recently: int


def _age(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


async def read_database_signals(db: Database, *, indexer_name: str, chain_id: int | None) -> DatabaseSignals:
    """One worker transaction: these are platform-wide figures, across every partner's rows."""
    async with db.worker_session() as session:
        now = datetime.now(UTC)
        checkpoint = None
        if chain_id is not None:
            checkpoint = (
                await session.execute(_CHECKPOINT, {"name": indexer_name, "chain_id": chain_id})
            ).scalar_one_or_none()
        outbox = (await session.execute(_OUTBOX)).one()
        intents = (await session.execute(_INTENTS, {"unfinished": list(UNFINISHED)})).all()
        failed = int((await session.execute(_FAILED)).scalar_one())
    oldest_intent = min((row.oldest for row in intents), default=None)
    return DatabaseSignals(
        checkpoint=None if checkpoint is None else int(checkpoint),
        outbox_unpublished=int(outbox.unpublished),
        outbox_oldest_age_s=_age(outbox.oldest, now),
        intents_by_status={status: 0 for status in UNFINISHED} | {row.status: int(row.n) for row in intents},
        intent_oldest_age_s=_age(oldest_intent, now),
        intents_failed_recently=failed,
    )


async def _scan(redis: Redis, pattern: str) -> list[str]:
    return [key async for key in redis.scan_iter(match=pattern, count=1_000, _type="stream")]


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def _undelivered(redis: Redis, stream: str, group: dict[str, Any], *, cap: int) -> int:
    lag = group.get("lag")
    if lag is not None:  # Redis >= 7 keeps the count
        return int(lag)
    # Redis 6: count entries after the group's last delivered id, up to the cap
    entries = await redis.xrange(stream, min=f"({group['last-delivered-id']}", max="+", count=cap + 1)
    return len(entries or [])


async def read_stream_signals(
    redis: Redis, names: StreamNames, *, cap: int
) -> tuple[list[GroupBacklog], dict[str, int]]:
    """Every consumer group on the event streams with its backlog, and dead-letter lengths."""
    groups: list[GroupBacklog] = []
    for stream in sorted(await _scan(redis, names.topic("*"))):
        for group in await redis.xinfo_groups(stream):
            undelivered = await _undelivered(redis, stream, group, cap=cap)
            groups.append(
                GroupBacklog(
                    stream=stream.removeprefix(names.topic("")),
                    group=str(group["name"]),
                    pending=int(group["pending"]),
                    undelivered=undelivered,
                )
            )
    dead: dict[str, int] = {}
    prefix = names.dead_letter("")
    for stream in sorted(await _scan(redis, names.dead_letter("*"))):
        dead[stream.removeprefix(prefix)] = int(await redis.xlen(stream))
    return groups, dead
