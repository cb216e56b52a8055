"""The platform's HealthStatus (DESIGN §4), probed live on every request.

SME services are probed at their configured URLs (the simulator by default), CaaS services
through their own `/health/ready`, and the dependencies directly -- so a broken service cannot
hide a broken database, and vice versa. Beyond "it answers", `queues` says whether work flows:
the indexer's lag behind the head, the outbox relay, the Redis Stream consumer groups and the
transaction sender; any of them past its threshold (HealthSettings) makes the platform
`degraded`, as does a stale chain head when the chain has a block time. All probes run
concurrently under one timeout each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from offchain.chain.jsonrpc import JsonRpc
from offchain.domain import health as rules
from offchain.eventbus.messages import StreamNames
from offchain.platform.app import AppResources
from offchain.platform.probes import (
    NOT_CONFIGURED,
    ProbeResult,
    probe_database,
    probe_redis,
    probe_service,
    probe_url,
    resolved,
    worst,
)
from offchain.services.health.metrics import HealthMetrics
from offchain.services.health.signals import (
    ChainHead,
    DatabaseSignals,
    read_chain_head,
    read_database_signals,
    read_stream_signals,
)
from offchain.services.registry import SERVICES

T = TypeVar("T")


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]


async def _measure(work: Awaitable[T], timeout_s: float) -> tuple[T | _Failed, float]:
    started = time.perf_counter()
    try:
        value: T | _Failed = await asyncio.wait_for(work, timeout_s)
    except Exception as exc:
        value = _Failed(exc)
    return value, round((time.perf_counter() - started) * 1000, 1)


def _verdict(verdict: rules.Verdict, latency_ms: float | None) -> ProbeResult:
    return ProbeResult(verdict.status, latency_ms, verdict.detail)


def _deployment_chain_id(resources: AppResources) -> int | None:
    """The chain the indexer checkpoints under, known even while the node is away."""
    if "chain_id" not in resources.extras:
        path = resources.settings.chain.deployment_file
        try:
            resources.extras["chain_id"] = int(json.loads(path.read_text())["chain_id"]) if path else None
        except (OSError, ValueError, KeyError):
            return None
    return resources.extras["chain_id"]


async def _failover_endpoints(settings: Any, primary: ProbeResult, probe_s: float) -> ProbeResult:
    """CHAIN_RPC_URLS: `degraded` while any endpoint is down (the service fails over meanwhile)."""
    rpc = JsonRpc(settings.chain.endpoints, timeout_s=probe_s)
    try:
        states = await rpc.probe(timeout_s=probe_s)
    finally:
        await rpc.aclose()
    down = [f"{s['endpoint']} ({s['detail']})" for s in states if not s["up"]]
    if not down or len(down) == len(states):
        return primary
    detail = f"{len(states) - len(down)}/{len(states)} RPC endpoints up; down: {', '.join(down)}"
    return ProbeResult("degraded", primary.latency_ms, detail)


async def _chain_and_database(
    resources: AppResources, metrics: HealthMetrics | None
) -> tuple[ProbeResult, dict[str, ProbeResult]]:
    settings = resources.settings
    timeout = settings.services.probe_timeout_s
    rpc = settings.chain.rpc_url
    head: ChainHead | _Failed | None = None
    chain_latency: float | None = None
    if rpc:
        head, chain_latency = await _measure(read_chain_head(resources.http, rpc, timeout_s=timeout), timeout)
    chain_id = head.chain_id if isinstance(head, ChainHead) else _deployment_chain_id(resources)

    signals: DatabaseSignals | _Failed | None = None
    db_latency: float | None = None
    if resources.db is not None:
        reading = read_database_signals(resources.db, indexer_name=settings.indexer.name, chain_id=chain_id)
        signals, db_latency = await _measure(reading, timeout)

    # dependencies.blockchain: reachable, and not stale when a block time says it should move
    if head is None:
        blockchain = NOT_CONFIGURED
    elif isinstance(head, _Failed):
        blockchain = ProbeResult("down", chain_latency, head.detail)
        if len(settings.chain.endpoints) > 1:  # the services fail over to the others meanwhile
            blockchain = await _failover_endpoints(settings, blockchain, timeout)
    else:
        max_age = settings.health.max_head_age_s
        judged = rules.judge_head(number=head.number, age_s=head.age_s, max_age_s=max_age)
        if judged.status == "healthy" and chain_latency and chain_latency > settings.services.slow_probe_ms:
            judged = rules.Verdict("degraded", f"slow ({chain_latency} ms); {judged.detail}")
        blockchain = _verdict(judged, chain_latency)
        if blockchain.status == "healthy" and len(settings.chain.endpoints) > 1:
            blockchain = await _failover_endpoints(settings, blockchain, timeout)
        if metrics is not None:
            metrics.head_block.set(head.number)
            metrics.head_age.set(max(0.0, head.age_s))

    queues: dict[str, ProbeResult] = {}
    if signals is None:
        queues |= dict.fromkeys(("indexer", "outbox", "tx_intents"), NOT_CONFIGURED)
        return blockchain, queues
    if isinstance(signals, _Failed):
        down = ProbeResult("down", db_latency, f"database: {signals.detail}")
        queues |= dict.fromkeys(("indexer", "outbox", "tx_intents"), down)
        return blockchain, queues

    h = settings.health
    if isinstance(head, ChainHead):
        lag = (
            None
            if signals.checkpoint is None
            else rules.indexer_lag(
                head=head.number, confirmations=settings.indexer.confirmations, checkpoint=signals.checkpoint
            )
        )
        queues["indexer"] = _verdict(
            rules.judge_indexer(lag=lag, checkpoint=signals.checkpoint, max_lag=h.max_indexer_lag_blocks),
            db_latency,
        )
        if metrics is not None:
            metrics.indexer_lag.set(-1 if lag is None else lag)
    else:
        queues["indexer"] = ProbeResult(
            "down", db_latency, f"head unknown ({blockchain.detail}); checkpoint {signals.checkpoint}"
        )
    queues["outbox"] = _verdict(
        rules.judge_outbox(
            unpublished=signals.outbox_unpublished,
            oldest_age_s=signals.outbox_oldest_age_s,
            max_age_s=h.max_outbox_age_s,
        ),
        db_latency,
    )
    unfinished = sum(signals.intents_by_status.values())
    queues["tx_intents"] = _verdict(
        rules.judge_intents(
            unfinished=unfinished,
            oldest_age_s=signals.intent_oldest_age_s,
            failed_recently=signals.intents_failed_recently,
            max_age_s=h.max_intent_age_s,
        ),
        db_latency,
    )
    if metrics is not None:
        metrics.outbox_unpublished.set(signals.outbox_unpublished)
        metrics.outbox_oldest.set(signals.outbox_oldest_age_s or 0)
        for status, count in signals.intents_by_status.items():
            metrics.intents.labels(status).set(count)
        metrics.intent_oldest.set(signals.intent_oldest_age_s or 0)
        metrics.intents_failed.set(signals.intents_failed_recently)
    return blockchain, queues


async def _streams(resources: AppResources, metrics: HealthMetrics | None) -> ProbeResult:
    if resources.redis is None:
        return NOT_CONFIGURED
    settings = resources.settings
    cap = settings.health.max_stream_backlog
    read, latency = await _measure(
        read_stream_signals(resources.redis, StreamNames(settings.events.stream_prefix), cap=cap),
        settings.services.probe_timeout_s,
    )
    if isinstance(read, _Failed):
        return ProbeResult("down", latency, f"redis: {read.detail}")
    groups, dead = read
    if metrics is not None:
        metrics.observe_streams(groups, dead)
    return _verdict(rules.judge_streams(groups, dead, max_backlog=cap), latency)


async def platform_health(resources: AppResources, metrics: HealthMetrics | None = None) -> dict[str, Any]:
    settings = resources.settings
    timeout = settings.services.probe_timeout_s
    slow_ms = settings.services.slow_probe_ms
    http = resources.http

    sme: dict[str, Awaitable[ProbeResult]] = {
        name: probe_url(http, url, timeout_s=timeout, slow_ms=slow_ms) if url else resolved(NOT_CONFIGURED)
        for name, url in settings.rails.sme_service_urls().items()
    }
    caas: dict[str, Awaitable[ProbeResult]] = {
        name: probe_service(http, settings.service_url(name, spec.port), timeout_s=timeout, slow_ms=slow_ms)
        for name, spec in SERVICES.items()
    }
    direct: dict[str, Awaitable[ProbeResult]] = {
        "database": probe_database(resources.db.engine, timeout_s=timeout, slow_ms=slow_ms)
        if resources.db
        else resolved(NOT_CONFIGURED),
        "redis": probe_redis(resources.redis, timeout_s=timeout, slow_ms=slow_ms)
        if resources.redis
        else resolved(NOT_CONFIGURED),
    }
    groups = {"smeServices": sme, "caasServices": caas, "dependencies": direct}
    flat = [(group, name, probe) for group, probes in groups.items() for name, probe in probes.items()]
    results, (blockchain, queues), streams = await asyncio.gather(
        asyncio.gather(*(probe for _, _, probe in flat)),
        _chain_and_database(resources, metrics),
        _streams(resources, metrics),
    )

    report: dict[str, dict[str, Any]] = {group: {} for group in groups}
    for (group, name, _), result in zip(flat, results, strict=True):
        report[group][name] = result.as_dict()
    report["dependencies"]["blockchain"] = blockchain.as_dict()
    queues = {**queues, "streams": streams}
    report["queues"] = {name: result.as_dict() for name, result in queues.items()}
    body = {
        "status": worst([*results, blockchain, *queues.values()]),
        "checkedAt": datetime.now(UTC).isoformat(),
        **report,
    }
    if metrics is not None:
        metrics.observe_report(body)
    return body
