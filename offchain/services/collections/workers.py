"""The collections service's background job: the daily close of business at
`COLLECTIONS__RUN_AT` (lender's timezone), which also catches up every date missed since the last
completed run. Replicas may all run it: each loan is settled under its own advisory lock, and a
loan already settled for a date is skipped.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta

from sqlalchemy import func, select

from offchain.chain.client import chain_of
from offchain.persistence.collections import CobRun
from offchain.platform.app import AppResources
from offchain.platform.logging import get_logger
from offchain.platform.settings import Environment, Settings
from offchain.platform.stopping import wait_or_stop
from offchain.services.collections import cob
from offchain.services.collections.context import Collections

log = get_logger(__name__)


def schedule_enabled(settings: Settings) -> bool:
    enabled = settings.collections.schedule_enabled
    return settings.env is not Environment.TEST if enabled is None else enabled


async def daily_cob(resources: AppResources, stop: asyncio.Event) -> None:
    settings = resources.settings
    if not schedule_enabled(settings):
        log.info("cob.schedule_disabled")
        return
    if resources.db is None or not settings.chain.rpc_url or not settings.chain.deployment_file:
        log.warning("cob.schedule_disabled", reason="DATABASE_URL, CHAIN_RPC_URL or DEPLOYMENT_FILE unset")
        return
    collections = Collections.from_settings(settings, resources.db, chain_of(resources).deployment)
    hour, minute = (int(part) for part in settings.collections.run_at.split(":"))
    try:
        while not stop.is_set():
            local_now = datetime.now(collections.tz)
            # before the run time, the last date due for a close of business is yesterday
            until = local_now.date() - timedelta(days=0 if local_now.time() >= time(hour, minute) else 1)
            async with resources.db.worker_session() as session:
                last = await session.scalar(
                    select(func.max(CobRun.business_date)).where(CobRun.status == "completed")
                )
            if last is None or last < until:
                await cob.catch_up(collections, until)
            await wait_or_stop(stop, settings.collections.poll_s)
    finally:
        await collections.aclose()
