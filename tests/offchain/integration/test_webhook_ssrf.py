"""Partner webhook URLs can reach no internal address: refused at registration, and refused
again at delivery whatever the stored URL or its DNS says now (real app, real HTTP receiver).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from http_receiver import receiver
from sqlalchemy import func, select

from offchain.eventbus import publish, run_relay
from offchain.persistence.notifications import WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.notifications.app import create_app
from offchain.services.notifications.secrets import secret_box

pytestmark = pytest.mark.asyncio
SECRET = Settings().auth.jwt_secret.get_secret_value()

# The attempts of issue 14 and every other spelling of an internal address.
REFUSED = [
    "http://127.0.0.1:18080/hook",
    "http://localhost:18080/hook",
    "http://localhost.:18080/hook",
    "http://0.0.0.0:18080/hook",
    "http://[::1]:18080/hook",
    "http://0x7f000001:18080/hook",
    "http://2130706433:18080/hook",
    "http://0177.0.0.1:18080/hook",
    "http://127.1:18080/hook",
    "http://0:18080/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:18080/hook",
    "http://10.1.2.3/hook",
    "http://100.64.0.9/hook",
    "http://[fd00::1]/hook",
    *[f"http://127.0.0.1:{port}/v1/tx-intents" for port in range(8000, 8011)],
]


def token(partner: uuid.UUID) -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.issue_token(SECRET, partner_id=partner)}


def _loopback_hostname() -> str | None:
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return name if infos and all(i[4][0] in ("127.0.0.1", "::1") for i in infos) else None


def _fast(settings: Settings, *, allow_loopback: bool) -> Settings:
    return settings.model_copy(
        update={
            "notifications": settings.notifications.model_copy(
                update={"worker_poll_s": 0.05, "retry_base_s": 0.05, "delivery_timeout_s": 2.0}
            ),
            "outbound": settings.outbound.model_copy(update={"allow_loopback": allow_loopback}),
        }
    )


@pytest_asyncio.fixture
async def strict(settings: Settings, db: Database, redis: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The notifications app as a deployment runs it: no loopback deliveries."""
    tuned = _fast(settings, allow_loopback=False)
    app = create_app(tuned)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app):
        relay = asyncio.create_task(run_relay(db, redis, tuned.events, stop))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://notifications"
        ) as http:
            yield http
        stop.set()
        await relay


async def _endpoints(db: Database, partner: uuid.UUID) -> int:
    async with db.worker_session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.partner_id == partner)
            )
            or 0
        )


async def test_registration_refuses_every_internal_spelling(strict: httpx.AsyncClient, db: Database) -> None:
    partner = uuid.uuid4()
    urls = list(REFUSED)
    name = _loopback_hostname()
    if name is not None:
        urls.append(f"http://{name}:18080/hook")  # a DNS name that resolves to loopback
    for url in urls:
        response = await strict.post(
            "/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]}, headers=token(partner)
        )
        assert response.status_code == 422, (url, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == "body.url", url
    assert await _endpoints(db, partner) == 0  # nothing was stored
    ok = await strict.post(
        "/v1/webhook-endpoints",
        json={"url": "https://8.8.8.8/hooks", "event_types": ["*"]},
        headers=token(partner),
    )
    assert ok.status_code == 201, ok.text


async def _store_endpoint(db: Database, settings: Settings, partner: uuid.UUID, url: str) -> uuid.UUID:
    """An endpoint row as if its URL had passed registration and its DNS changed afterwards."""
    async with db.partner_session(partner) as session:
        row = WebhookEndpoint(
            partner_id=partner,
            url=url,
            event_types=["*"],
            secret_ciphertext=secret_box(settings.notifications).encrypt("whsec_test"),
        )
        session.add(row)
        await session.flush()
        return row.id


async def _deliveries(db: Database, partner: uuid.UUID) -> list[WebhookDelivery]:
    async with db.worker_session() as session:
        return list(
            (
                await session.execute(select(WebhookDelivery).where(WebhookDelivery.partner_id == partner))
            ).scalars()
        )


async def _emit(db: Database, partner: uuid.UUID) -> int:
    async with db.worker_session() as session:
        return await publish(
            session, "credit.loan.repaid", {"loan_id": str(uuid.uuid4())}, partner_id=partner
        )


async def test_delivery_connects_only_to_checked_addresses(
    strict: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The stored URL points at loopback (a literal, and a name that resolves there): the worker
    refuses it at the send itself, the receiver sees nothing, the partner sees why, not what."""
    partner = uuid.uuid4()
    name = _loopback_hostname() or "localhost"
    with receiver() as rec:
        port = int(rec.url.rsplit(":", 1)[1])
        await _store_endpoint(db, settings, partner, f"http://127.0.0.1:{port}/literal")
        await _store_endpoint(db, settings, partner, f"http://{name}:{port}/by-name")
        await _emit(db, partner)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            attempted = [d for d in await _deliveries(db, partner) if d.attempts >= 1 and d.last_error]
            if len(attempted) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(attempted) == 2, [(d.attempts, d.last_error) for d in await _deliveries(db, partner)]
        assert rec.requests == []  # never connected
    assert all(d.last_error and d.last_error.startswith("refused:") for d in attempted)
    assert all(d.last_status_code is None for d in attempted)

    async with db.worker_session() as session:
        event_id = await session.scalar(select(WebhookEvent.id).where(WebhookEvent.partner_id == partner))
    shown = (await strict.get(f"/v1/events/{event_id}", headers=token(partner))).json()
    for delivery in shown["deliveries"]:
        # status, timing and a coarse reason: no response body, no network error text
        assert set(delivery) == {
            "endpoint_id",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "dead_at",
        }
        assert delivery["last_error"].startswith("refused:")


async def test_loopback_only_by_the_explicit_setting_and_never_the_platform_ports(
    settings: Settings, db: Database, redis: Any
) -> None:
    """With OUTBOUND_ALLOW_LOOPBACK (development), a local receiver gets its deliveries; the
    platform's own ports stay refused, at registration and at delivery."""
    tuned = _fast(settings, allow_loopback=True)
    app = create_app(tuned)
    stop = asyncio.Event()
    partner = uuid.uuid4()
    async with app.router.lifespan_context(app):
        relay = asyncio.create_task(run_relay(db, redis, tuned.events, stop))
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://notifications"
            ) as http:
                refused = await http.post(
                    "/v1/webhook-endpoints",
                    json={"url": "http://127.0.0.1:8008/v1/tx-intents", "event_types": ["*"]},
                    headers=token(partner),
                )
                assert refused.status_code == 422, refused.text
                with receiver() as rec:
                    created = await http.post(
                        "/v1/webhook-endpoints",
                        json={"url": rec.url + "/local", "event_types": ["*"]},
                        headers=token(partner),
                    )
                    assert created.status_code == 201, created.text
                    await _store_endpoint(db, settings, partner, "http://127.0.0.1:8007/v1/events")
                    await _emit(db, partner)
                    deadline = time.monotonic() + 20
                    while not rec.to("/local") and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread's server
                        await asyncio.sleep(0.1)
                    assert len(rec.to("/local")) == 1
            while time.monotonic() < deadline:
                to_platform = [d for d in await _deliveries(db, partner) if d.last_error]
                if to_platform:
                    break
                await asyncio.sleep(0.1)
            assert to_platform and to_platform[0].last_error.startswith("refused:")
        finally:
            stop.set()
            await relay
