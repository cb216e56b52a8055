"""orchestration service: the ASGI app and its background jobs.

The transaction sender and the chain indexer join `BACKGROUND` as they are built; the outbox
relay already runs here, so events written anywhere reach Redis Streams. Several replicas may
run it: rows are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from offchain.eventbus import run_relay
from offchain.platform.app import AppResources, BackgroundTask, create_service_app
from offchain.platform.logging import get_logger
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES

log = get_logger(__name__)


async def outbox_relay(resources: AppResources, stop: asyncio.Event) -> None:
    if resources.db is None or resources.redis is None:
        log.warning("outbox.relay_disabled", reason="DATABASE_URL or REDIS_URL is not set")
        return
    await run_relay(resources.db, resources.redis, resources.settings.events, stop)


BACKGROUND: dict[str, BackgroundTask] = {"outbox_relay": outbox_relay}


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SERVICES["orchestration"], settings, background=BACKGROUND)
