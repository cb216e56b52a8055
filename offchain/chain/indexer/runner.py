"""Running the indexer: what the orchestration service and `caas index` call."""

from __future__ import annotations

import asyncio

from offchain.chain.contracts import Deployment
from offchain.chain.indexer.loans import ChainIndexer
from offchain.chain.indexer.metrics import IndexerMetrics
from offchain.chain.indexer.types import CatchUpSummary, IndexerError
from offchain.chain.jsonrpc import JsonRpc, hex_int
from offchain.platform.db import Database
from offchain.platform.settings import Settings


async def run_indexer(
    *,
    settings: Settings,
    stop: asyncio.Event,
    db: Database | None = None,
    metrics: IndexerMetrics | None = None,
    once: bool = False,
    deployment: Deployment | None = None,
) -> CatchUpSummary | None:
    """What the orchestration service and `caas index` run: connect, check that the node serves
    the chain the deployment file describes, take the single-writer lock, then index until
    `stop` (or, with `once`, until caught up with head - confirmations)."""
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise IndexerError("CHAIN_RPC_URL and DEPLOYMENT_FILE must be set to index the chain")
    if db is None and not settings.database.url:
        raise IndexerError("DATABASE_URL must be set to index the chain")
    try:
        deployment = deployment or Deployment.load(settings.chain.deployment_file)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexerError(
            f"cannot read the deployment file {settings.chain.deployment_file}: {exc!r}"
        ) from exc
    own_db = db is None
    database = db or Database.from_settings(settings.database, application_name="caas-indexer")
    rpc = JsonRpc(
        settings.chain.endpoints or [settings.chain.rpc_url or ""],  # CHAIN_RPC_URLS failover
        timeout_s=settings.chain.rpc_timeout_s,
        batch_size=settings.indexer.rpc_batch_size,
    )
    try:
        chain_id = hex_int(await rpc.call("eth_chainId"))
        if chain_id != deployment.chain_id:
            raise IndexerError(
                f"node serves chain {chain_id}, the deployment file is for chain {deployment.chain_id}"
            )
        indexer = ChainIndexer(
            db=database, rpc=rpc, deployment=deployment, settings=settings.indexer, metrics=metrics
        )
        if not once:
            await indexer.run(stop)
            return None
        async with indexer.lock(stop) as held:
            if not held:
                return None
            return await indexer.catch_up(stop=stop)
    finally:
        await rpc.aclose()
        if own_db:
            await database.dispose()
