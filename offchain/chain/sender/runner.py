"""Running the sender: one worker per sending key, in a service or as `python -m offchain.chain.sender`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

from offchain.chain.allowlist import Allowlist
from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender.base import KILL_SWITCH_ENV, log
from offchain.chain.sender.metrics import SenderMetrics
from offchain.chain.sender.worker import SenderWorker
from offchain.platform.db import Database
from offchain.platform.logging import configure_logging
from offchain.platform.settings import Environment, Settings


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
    db: Database,
    rpc: JsonRpc,
    settings: Settings,
    *,
    metrics: SenderMetrics | None = None,
    deployment: Deployment | None = None,
) -> list[SenderWorker]:
    """One worker per sending key; `deployment`: the app's (loaded once), else DEPLOYMENT_FILE's."""
    metrics = metrics or SenderMetrics()
    if not settings.chain.deployment_file:
        # what the key may sign is decided against the deployment's contracts: none, nothing
        raise ValueError("the sender needs DEPLOYMENT_FILE: it signs calls to its contracts only")
    allowlist = Allowlist.of(deployment or Deployment.load(settings.chain.deployment_file))
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
    db: Database,
    settings: Settings,
    stop: asyncio.Event,
    *,
    metrics: SenderMetrics | None = None,
    deployment: Deployment | None = None,
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
        workers = build_workers(db, rpc, settings, metrics=metrics, deployment=deployment)
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
            rpc = JsonRpc(settings.chain.endpoints, timeout_s=settings.chain.rpc_timeout_s)
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
    parser = argparse.ArgumentParser(
        description="Transaction sender: durable intents, and one single-writer worker per sending key."
    )
    parser.add_argument("--until-idle", action="store_true", help="exit once nothing is left to send")
    parser.add_argument("--timeout", type=float, default=300.0, help="with --until-idle: give up after this")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.until_idle, args.timeout))
