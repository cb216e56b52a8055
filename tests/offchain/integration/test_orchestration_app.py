"""orchestration:8008 runs the outbox relay as a background job of its app."""

from __future__ import annotations

import time
import uuid

from fastapi.testclient import TestClient

from offchain.eventbus import StreamNames, publish
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.orchestration.app import create_app


def test_orchestration_runs_the_relay(settings: Settings) -> None:
    topic = f"test.{uuid.uuid4().hex[:10]}"
    names = StreamNames(settings.events.stream_prefix)
    fast = settings.model_copy(update={"events": settings.events.model_copy(update={"relay_idle_s": 0.05})})

    async def publish_one() -> int:
        database = Database.from_settings(settings.database)
        try:
            async with database.worker_session() as session:
                return await publish(session, topic, {"n": 1})
        finally:
            await database.dispose()

    with TestClient(create_app(fast)) as client:
        event_id = client.portal.call(publish_one)
        redis = client.app.state.resources.redis  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        entries: list = []
        while not entries and time.monotonic() < deadline:
            entries = client.portal.call(redis.xrange, names.topic(topic))
            time.sleep(0.05)
    assert [int(fields["outbox_id"]) for _, fields in entries] == [event_id]
