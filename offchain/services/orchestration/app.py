"""orchestration service: the ASGI app and its background jobs.

Background jobs: the outbox relay (events written anywhere reach Redis Streams), the
transaction sender and the chain indexer. Several replicas may
run it: rows are claimed with SKIP LOCKED. The sender runs one worker per sending key; replicas
queue on each key's advisory lock, so one of them sends and the others stand by.
"""

from __future__ import annotations

import asyncio
import functools

from fastapi import FastAPI

from offchain.chain.client import chain_of
from offchain.chain.indexer import ReorgTooDeepError, run_indexer
from offchain.chain.indexer.metrics import IndexerMetrics
from offchain.chain.sender import SenderMetrics, run_senders
from offchain.eventbus import run_relay
from offchain.platform.app import AppResources, BackgroundTask, create_service_app
from offchain.platform.logging import get_logger
from offchain.platform.settings import Settings
from offchain.services.orchestration import tx_intents
from offchain.services.registry import SERVICES

log = get_logger(__name__)


async def outbox_relay(resources: AppResources, stop: asyncio.Event) -> None:
    if resources.db is None or resources.redis is None:
        log.warning("outbox.relay_disabled", reason="DATABASE_URL or REDIS_URL is not set")
        return
    await run_relay(resources.db, resources.redis, resources.settings.events, stop)


async def tx_sender(
    resources: AppResources, stop: asyncio.Event, *, metrics: SenderMetrics | None = None
) -> None:
    settings = resources.settings
    if not settings.sender.enabled:
        log.info("sender.disabled", reason="SENDER__ENABLED=false")
        return
    if resources.db is None or not settings.chain.rpc_url or not settings.chain.deployment_file:
        # without the deployment there is nothing it may sign (offchain.chain.allowlist)
        log.warning("sender.disabled", reason="DATABASE_URL, CHAIN_RPC_URL or DEPLOYMENT_FILE is not set")
        return
    await run_senders(
        resources.db, settings, stop, metrics=metrics, deployment=chain_of(resources).deployment
    )


async def chain_indexer(
    resources: AppResources, stop: asyncio.Event, *, metrics: IndexerMetrics | None = None
) -> None:
    settings = resources.settings
    if not settings.indexer.enabled:
        log.info("indexer.disabled", reason="INDEXER__ENABLED=false")
        return
    if resources.db is None or not settings.chain.rpc_url or not settings.chain.deployment_file:
        log.warning("indexer.disabled", reason="DATABASE_URL, CHAIN_RPC_URL or DEPLOYMENT_FILE is not set")
        return
    try:
        await run_indexer(
            settings=settings,
            stop=stop,
            db=resources.db,
            metrics=metrics,
            deployment=chain_of(resources).deployment,
        )
    except ReorgTooDeepError as exc:
        # A restart would meet the same chain and fail the same way: stay down, visibly
        # (caas_indexer_halted = 1 and this line), until an operator re-indexes.
        log.critical("indexer.halted", error=str(exc))
        await stop.wait()


BACKGROUND: dict[str, BackgroundTask] = {
    "outbox_relay": outbox_relay,
    "tx_sender": tx_sender,
    "chain_indexer": chain_indexer,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    # The sender's metrics live in this app's own registry (its /metrics), so they are bound
    # to this app's sender job rather than created globally.
    sender_metrics = SenderMetrics()
    indexer_metrics = IndexerMetrics()
    background: dict[str, BackgroundTask] = {
        **BACKGROUND,
        "tx_sender": functools.partial(tx_sender, metrics=sender_metrics),
        "chain_indexer": functools.partial(chain_indexer, metrics=indexer_metrics),
    }
    app = create_service_app(
        SERVICES["orchestration"], settings, routers=[tx_intents.router], background=background
    )
    sender_metrics.register(app.state.metrics.registry)
    indexer_metrics.register(app.state.metrics.registry)
    return app
