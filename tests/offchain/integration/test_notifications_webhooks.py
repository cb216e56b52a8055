"""Partner webhooks end to end on real PostgreSQL, Redis and HTTP: outbox -> relay -> intake ->
signed POSTs to a real local endpoint, retried on a (compressed) schedule, dead-lettered, listed,
replayed; partner isolation; the routes on the gateway too."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eventually import eventually_async
from http_receiver import Receiver, receiver
from sqlalchemy import func, select, update

from offchain.eventbus import StreamNames, publish, replay, run_relay
from offchain.eventbus.messages import Event
from offchain.persistence.credit import IdempotencyKey
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import OutboxMessage
from offchain.persistence.notifications import WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.outbound import OutboundPolicy
from offchain.platform.settings import DatabaseSettings, Settings
from offchain.services.gateway.app import create_app as create_gateway
from offchain.services.notifications.app import create_app
from offchain.services.notifications.delivery import DeliveryWorker, Job
from offchain.services.notifications.intake import store_event, store_events
from offchain.services.notifications.schemas import EndpointIn
from offchain.services.notifications.secrets import secret_box
from offchain.services.notifications.usecases import create_endpoint as create
from offchain.services.notifications.usecases import replay_event as replay_usecase

SECRET = Settings().auth.jwt_secret.get_secret_value()
# deliveries to this module's loopback receivers, opted in as the setting does (not the platform's ports)
LOOPBACK = OutboundPolicy(allow_loopback=True, require_https=False)
WINDOW_S = 3.0
pytestmark = pytest.mark.asyncio


def token(partner_id: uuid.UUID, permissions=auth.ALL_PERMISSIONS) -> dict[str, str]:
    return {
        "Authorization": "Bearer " + auth.issue_token(SECRET, partner_id=partner_id, permissions=permissions)
    }


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    """The 3-day schedule compressed to seconds: same code path, same shape."""
    return settings.model_copy(
        update={
            "notifications": settings.notifications.model_copy(
                update={
                    "retry_base_s": 0.05,
                    "retry_max_interval_s": 0.4,
                    "retry_window_s": WINDOW_S,
                    "worker_poll_s": 0.05,
                    "delivery_timeout_s": 2.0,
                    "delivery_lease_s": 5.0,
                }
            ),
            # the receivers here listen on loopback: opted in explicitly (never in production)
            "outbound": settings.outbound.model_copy(update={"allow_loopback": True}),
        }
    )


@pytest_asyncio.fixture
async def service(tuned: Settings, db: Database, redis):
    """The notifications app (its consumer and delivery worker running) and an outbox relay."""
    app = create_app(tuned)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app):
        relay = asyncio.create_task(run_relay(db, redis, tuned.events, stop))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as http:
            yield http
        stop.set()
        await relay


@pytest.fixture(scope="module")
def own_database_url(make_database) -> str:
    url = make_database()
    upgrade(url)
    return url


@pytest_asyncio.fixture
async def own_db(own_database_url: str):
    """A database of its own for tests that drive DeliveryWorker directly: a bare worker claims
    every due delivery, including those other tests' dead endpoints still retry."""
    database = Database.from_settings(DatabaseSettings(url=own_database_url), application_name="caas-tests")
    yield database
    await database.dispose()


@pytest.fixture
def endpoint_receiver():
    with receiver() as rec:
        yield rec


@pytest.fixture
def partner() -> uuid.UUID:
    return uuid.uuid4()


async def until(check: Callable[[], Awaitable[Any]], within: float = 20.0, what: str = "condition") -> Any:
    """Webhook deliveries are quick: a short default wait, polled often."""
    return await eventually_async(check, what=what, within_s=within, every=0.05)


async def create_endpoint(http, partner, url: str, event_types=("*",), **extra) -> dict:
    response = await http.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": list(event_types), **extra},
        headers=token(partner),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def emit(db: Database, partner: uuid.UUID, topic: str = "credit.loan.repaid", **payload) -> int:
    async with db.worker_session() as session:
        return await publish(
            session,
            topic,
            payload or {"loan_id": str(uuid.uuid4()), "repaid": {"value": 1_000_00, "currency": "NGN"}},
            key="k",
            partner_id=partner,
        )


async def events_of(http, partner, **params) -> list[dict]:
    response = await http.get("/v1/events", params=params, headers=token(partner))
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def event_for_outbox(db: Database, outbox_id: int) -> WebhookEvent | None:
    async with db.worker_session() as session:
        return (
            await session.execute(select(WebhookEvent).where(WebhookEvent.outbox_id == outbox_id))
        ).scalar_one_or_none()


def verify_documented(secret: str, header: str, body: bytes, tolerance_s: int = 300) -> bool:
    """The recipe in offchain.domain.notifications.signing, written out as a partner would."""
    parts = [part.split("=", 1) for part in header.split(",")]
    timestamp = int(next(value for name, value in parts if name == "t"))
    signatures = [value for name, value in parts if name == "v1"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - timestamp) <= tolerance_s
    return fresh and any(hmac.compare_digest(expected, s) for s in signatures)


# -- delivery ----------------------------------------------------------------------------------


async def test_delivery__signed_envelope_verifies_with_the_documented_recipe(
    service, db, partner, endpoint_receiver: Receiver
):
    url = f"{endpoint_receiver.url}/ok/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(service, partner, url, ["credit.loan.repaid"])
    assert endpoint["secret"].startswith("whsec_")
    loan_id = str(uuid.uuid4())
    outbox_id = await emit(db, partner, loan_id=loan_id, repaid={"value": 5_000_00, "currency": "NGN"})
    [received] = await until(lambda: _async(endpoint_receiver.to(url.removeprefix(endpoint_receiver.url))))
    assert verify_documented(endpoint["secret"], received.headers["Caas-Signature"], received.body)
    assert not verify_documented("whsec_wrong", received.headers["Caas-Signature"], received.body)
    assert not verify_documented(endpoint["secret"], received.headers["Caas-Signature"], received.body + b" ")
    body = received.json()
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["type"] == "credit.loan.repaid"
    assert body["data"] == {"loan_id": loan_id, "repaid": {"value": 5_000_00, "currency": "NGN"}}
    assert received.headers["Caas-Event-Id"] == body["id"]
    assert received.headers["Caas-Event-Type"] == "credit.loan.repaid"
    stored = await event_for_outbox(db, outbox_id)
    assert stored is not None and str(stored.id) == body["id"]
    assert body["id"] in {e["id"] for e in await events_of(service, partner)}
    await until(lambda: _delivered(service, partner, body["id"]), what="delivered state")


async def _async(value):
    return value


def _requests_for(receiver_: Receiver, path: str, event_id: uuid.UUID) -> list:
    return [r for r in receiver_.to(path) if r.headers["Caas-Event-Id"] == str(event_id)]


async def _deliveries_to(db: Database, endpoint_id: str) -> int:
    async with db.worker_session() as session:
        return await session.scalar(
            select(func.count()).where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
        )


async def _intake_settled(redis, names: StreamNames, db: Database, partner: uuid.UUID) -> bool:
    """The webhook intake has read and acknowledged all of the stream, and no delivery is pending."""
    stream = names.topic("credit.loan.repaid")
    last = (await redis.xinfo_stream(stream))["last-generated-id"]
    groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
    intake = groups.get("notifications.webhooks")  # offchain.services.notifications.intake.GROUP
    if intake is None or intake["last-delivered-id"] != last or intake["pending"] != 0:
        return False
    async with db.worker_session() as session:
        pending = await session.scalar(
            select(func.count()).where(
                WebhookDelivery.partner_id == partner, WebhookDelivery.status == "pending"
            )
        )
    return pending == 0


async def _delivered(http, partner, event_id) -> bool:
    response = await http.get(f"/v1/events/{event_id}", headers=token(partner))
    deliveries = response.json()["deliveries"]
    return bool(deliveries) and all(d["status"] == "delivered" for d in deliveries)


async def test_delivery__only_subscribed_types_are_sent(service, db, partner, endpoint_receiver):
    path = f"/ok/{uuid.uuid4().hex}"
    await create_endpoint(service, partner, endpoint_receiver.url + path, ["credit.loan.defaulted"])
    repaid = await emit(db, partner, "credit.loan.repaid", loan_id="a")
    defaulted = await emit(db, partner, "credit.loan.defaulted", loan_id="b")
    await until(lambda: _async(endpoint_receiver.to(path)))
    # stored in the same transaction as its deliveries (none): nothing can ever send it
    await until(lambda: event_for_outbox(db, repaid), what="the unsubscribed event stored")
    received = endpoint_receiver.to(path)
    assert [r.json()["type"] for r in received] == ["credit.loan.defaulted"]
    assert (await event_for_outbox(db, defaulted)) is not None
    listed = {e["type"]: e for e in await events_of(service, partner)}
    assert listed["credit.loan.repaid"]["deliveries"] == []  # stored and listable, sent nowhere


async def test_flaky_endpoint__delivered_by_the_retry_schedule(service, db, partner, endpoint_receiver):
    path = f"/flaky/3/{uuid.uuid4().hex}"
    await create_endpoint(service, partner, endpoint_receiver.url + path)
    outbox_id = await emit(db, partner)
    event = await until(lambda: event_for_outbox(db, outbox_id))
    await until(lambda: _delivered(service, partner, str(event.id)), what="delivery after retries")
    received = endpoint_receiver.to(path)
    assert len(received) == 4  # three 503s, then the 200
    assert len({r.headers["Caas-Event-Id"] for r in received}) == 1
    assert [int(r.headers["Caas-Delivery-Attempt"]) for r in received] == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    # exponential: nominal 0.05, 0.1, 0.2 s, each within +/-20 % jitter (plus polling slack)
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08 and gaps[2] >= 0.16
    [delivery] = (await service.get(f"/v1/events/{event.id}", headers=token(partner))).json()["deliveries"]
    assert delivery["attempts"] == 4 and delivery["last_status_code"] == 200


async def test_dead_endpoint__dead_lettered_at_the_end_of_the_window(service, db, partner, endpoint_receiver):
    path = f"/down/{uuid.uuid4().hex}"
    await create_endpoint(service, partner, endpoint_receiver.url + path)
    outbox_id = await emit(db, partner)
    event = await until(lambda: event_for_outbox(db, outbox_id))

    async def dead():
        response = await service.get(f"/v1/events/{event.id}", headers=token(partner))
        [delivery] = response.json()["deliveries"]
        return delivery if delivery["status"] == "dead" else None

    delivery = await until(dead, within=WINDOW_S + 20, what="dead letter")
    received = endpoint_receiver.to(path)
    assert len(received) == delivery["attempts"] >= 5
    span = received[-1].at - received[0].at
    # it kept trying for most of the window, and never past its end
    assert WINDOW_S * 0.5 <= span <= WINDOW_S + 0.5
    assert delivery["last_status_code"] == 500 and delivery["next_attempt_at"] is None
    # a later event's first attempt at the same endpoint: the worker has claimed since the dead letter
    marker_outbox = await emit(db, partner, loan_id="marker")
    marker = await until(lambda: event_for_outbox(db, marker_outbox), what="the marker event stored")
    await until(
        lambda: _async(_requests_for(endpoint_receiver, path, marker.id)), what="the marker's attempt"
    )
    assert len(_requests_for(endpoint_receiver, path, event.id)) == len(
        received
    )  # nothing after the dead letter
    metrics = (await service.get("/metrics")).text
    assert "caas_webhook_deliveries_dead_lettered_total" in metrics
    assert 'caas_webhook_delivery_attempts_total{outcome="http_error"}' in metrics


async def test_replay__resends_to_every_subscribed_endpoint_or_to_one(
    service, db, partner, endpoint_receiver
):
    first, second = f"/ok/{uuid.uuid4().hex}", f"/ok/{uuid.uuid4().hex}"
    one = await create_endpoint(service, partner, endpoint_receiver.url + first)
    await create_endpoint(service, partner, endpoint_receiver.url + second, ["credit.loan.repaid"])
    outbox_id = await emit(db, partner)
    event = await until(lambda: event_for_outbox(db, outbox_id))
    await until(lambda: _delivered(service, partner, str(event.id)))

    replayed = await service.post(f"/v1/events/{event.id}/replay", headers=token(partner))
    assert replayed.status_code == 202, replayed.text
    assert len(replayed.json()["deliveries"]) == 2
    await until(
        lambda: _async(len(endpoint_receiver.to(first)) == 2 and len(endpoint_receiver.to(second)) == 2)
    )

    only = await service.post(
        f"/v1/events/{event.id}/replay", json={"endpoint_id": one["id"]}, headers=token(partner)
    )
    assert only.status_code == 202
    await until(lambda: _async(len(endpoint_receiver.to(first)) == 3))
    # the replay's delivery recorded and none left pending: nothing more is on its way to `second`
    await until(
        lambda: _delivered(service, partner, str(event.id)), what="no delivery pending after the replay"
    )
    assert len(endpoint_receiver.to(second)) == 2
    ids = {r.headers["Caas-Event-Id"] for r in endpoint_receiver.to(first) + endpoint_receiver.to(second)}
    assert ids == {str(event.id)}


async def test_replay__revives_a_dead_delivery_with_a_new_window(service, db, partner):
    flips = {"up": False}

    def behaviour(path: str, count: int):
        return (200, {}) if flips["up"] else (500, None)

    with receiver(behaviour) as rec:
        endpoint = await create_endpoint(service, partner, rec.url + "/hook")
        outbox_id = await emit(db, partner)
        event = await until(lambda: event_for_outbox(db, outbox_id))

        async def status():
            response = await service.get(f"/v1/events/{event.id}", headers=token(partner))
            return response.json()["deliveries"][0]["status"]

        await until(lambda: _eq(status(), "dead"), within=WINDOW_S + 20)
        flips["up"] = True
        response = await service.post(
            f"/v1/events/{event.id}/replay", json={"endpoint_id": endpoint["id"]}, headers=token(partner)
        )
        assert response.json()["deliveries"][0]["status"] == "pending"
        await until(lambda: _eq(status(), "delivered"))


async def _eq(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_duplicate_outbox_delivery__one_event_one_delivery_per_endpoint(
    service, db, redis, tuned, partner, endpoint_receiver
):
    a, b = f"/ok/{uuid.uuid4().hex}", f"/ok/{uuid.uuid4().hex}"
    await create_endpoint(service, partner, endpoint_receiver.url + a)
    await create_endpoint(service, partner, endpoint_receiver.url + b)
    outbox_id = await emit(db, partner)
    event = await until(lambda: event_for_outbox(db, outbox_id))
    await until(lambda: _async(endpoint_receiver.to(a) and endpoint_receiver.to(b)))
    # the same outbox row on the stream twice more (a relay crash, an operator's replay) ...
    names = StreamNames(tuned.events.stream_prefix)
    await replay(db, redis, names, first_id=outbox_id, last_id=outbox_id)
    await replay(db, redis, names, first_id=outbox_id, last_id=outbox_id)
    # ... and straight into the intake, past the consumer's own dedupe
    async with db.worker_session() as session:
        row = await session.get(OutboxMessage, outbox_id)
        duplicate = Event(
            id=outbox_id,
            topic=row.topic,
            payload=row.payload,
            partner_id=str(partner),
            created_at=row.created_at.isoformat(),
        )
        assert await store_event(session, duplicate) == 0
    await until(
        lambda: _intake_settled(redis, names, db, partner), what="the intake past the replayed copies"
    )
    async with db.worker_session() as session:
        stored = await session.scalar(select(func.count()).where(WebhookEvent.outbox_id == outbox_id))
        deliveries = await session.scalar(select(func.count()).where(WebhookDelivery.event_id == event.id))
    assert stored == 1 and deliveries == 2
    assert len(endpoint_receiver.to(a)) == 1 and len(endpoint_receiver.to(b)) == 1


async def test_a_burst_read_at_once__each_event_stored_and_delivered_once(
    service, db, redis, tuned, partner, endpoint_receiver
):
    """Events that reach the intake together go through it as one batch (one transaction), the
    same outbox row twice in it included: one stored event and one delivery each."""
    path = f"/ok/{uuid.uuid4().hex}"
    await create_endpoint(service, partner, endpoint_receiver.url + path)
    async with db.worker_session() as session:  # committed together: relayed in one go
        ids = [
            await publish(
                session, "credit.loan.repaid", {"loan_id": str(uuid.uuid4()), "n": n}, partner_id=partner
            )
            for n in range(30)
        ]
    names = StreamNames(tuned.events.stream_prefix)
    await replay(db, redis, names, first_id=ids[3], last_id=ids[5])  # some of them twice
    await until(lambda: _async(len(endpoint_receiver.to(path)) >= 30))
    await until(
        lambda: _intake_settled(redis, names, db, partner), what="the intake past the replayed copies"
    )
    async with db.worker_session() as session:
        stored = (
            await session.execute(
                select(WebhookEvent.outbox_id, func.count())
                .where(WebhookEvent.outbox_id.in_(ids))
                .group_by(WebhookEvent.outbox_id)
            )
        ).all()
    assert sorted(stored) == [(outbox_id, 1) for outbox_id in ids]
    assert len(endpoint_receiver.to(path)) == 30


# -- API: endpoints, isolation, listing ----------------------------------------------------------


async def test_endpoints__create_list_get_delete_and_idempotency(service, db, partner):
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["credit.loan.repaid", "credit.loan.repaid"]}
    headers = {**token(partner), "Idempotency-Key": f"create-{uuid.uuid4()}"}
    created = await service.post("/v1/webhook-endpoints", json=body, headers=headers)
    assert created.status_code == 201
    again = await service.post("/v1/webhook-endpoints", json=body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == created.json()  # same endpoint, same one-time secret: not a second endpoint
    endpoint = created.json()
    assert endpoint["event_types"] == ["credit.loan.repaid"]
    async with db.partner_session(partner) as session:
        stored = (
            await session.execute(
                select(IdempotencyKey.response_body).where(IdempotencyKey.key == headers["Idempotency-Key"])
            )
        ).scalar_one()
    assert endpoint["secret"] not in json.dumps(stored)  # kept for replays, sealed
    listing = (await service.get("/v1/webhook-endpoints", headers=token(partner))).json()["data"]
    assert [e["id"] for e in listing] == [endpoint["id"]]
    assert "secret" not in listing[0]
    fetched = await service.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=token(partner))
    assert fetched.status_code == 200 and "secret" not in fetched.json()
    deleted = await service.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=token(partner))
    assert deleted.status_code == 204
    assert (await service.get("/v1/webhook-endpoints", headers=token(partner))).json()["data"] == []
    gone = await service.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=token(partner))
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "event_types": ["*"]}, "body.url"),
        ({"url": "http://user:pw@example.com/x", "event_types": ["*"]}, "body.url"),
        # an unknown type is a schema violation now (the OpenAPI enumerates them): named by index
        ({"url": "https://example.com/x", "event_types": ["credit.loan.exploded"]}, "body.event_types.0"),
        ({"url": "https://example.com/x", "event_types": []}, "body.event_types"),
    ],
)
async def test_endpoints__invalid_input_is_a_problem_naming_the_field(service, partner, body, field):
    response = await service.post("/v1/webhook-endpoints", json=body, headers=token(partner))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_endpoints__need_the_webhook_permission(service, partner):
    others = tuple(p for p in auth.ALL_PERMISSIONS if p != auth.WEBHOOK_MANAGE)
    for method, path in [
        ("post", "/v1/webhook-endpoints"),
        ("get", "/v1/webhook-endpoints"),
        ("get", "/v1/events"),
        ("post", f"/v1/events/{uuid.uuid4()}/replay"),
    ]:
        kwargs = {"json": {"url": "https://example.com", "event_types": ["*"]}} if method == "post" else {}
        response = await getattr(service, method)(path, headers=token(partner, others), **kwargs)
        assert response.status_code == 403, (method, path)
        assert response.json()["required_permission"] == auth.WEBHOOK_MANAGE


async def test_isolation__another_partner_cannot_see_change_or_replay(
    service, db, partner, endpoint_receiver
):
    path = f"/ok/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(service, partner, endpoint_receiver.url + path)
    outbox_id = await emit(db, partner)
    event = await until(lambda: event_for_outbox(db, outbox_id))
    await until(lambda: _async(endpoint_receiver.to(path)))
    stranger = uuid.uuid4()
    assert str(event.id) not in {e["id"] for e in await events_of(service, stranger)}
    assert (await service.get(f"/v1/events/{event.id}", headers=token(stranger))).status_code == 404
    replay_ = await service.post(f"/v1/events/{event.id}/replay", headers=token(stranger))
    assert replay_.status_code == 404
    for method, suffix in [("get", ""), ("delete", ""), ("post", "/rotate-secret")]:
        response = await getattr(service, method)(
            f"/v1/webhook-endpoints/{endpoint['id']}{suffix}", headers=token(stranger)
        )
        assert response.status_code == 404, (method, suffix)
    # the stranger's own endpoint cannot be aimed at the partner's event either
    own = await create_endpoint(service, stranger, endpoint_receiver.url + "/ok/stranger")
    aimed = await service.post(
        f"/v1/events/{event.id}/replay", json={"endpoint_id": own["id"]}, headers=token(stranger)
    )
    assert aimed.status_code == 404
    # the partner's delivery recorded, none pending, none ever queued for the stranger's endpoint
    await until(lambda: _delivered(service, partner, str(event.id)), what="the partner's delivery recorded")
    assert await _deliveries_to(db, own["id"]) == 0
    assert len(endpoint_receiver.to(path)) == 1 and endpoint_receiver.to("/ok/stranger") == []


async def test_listing__last_30_days_only_with_type_since_and_cursor(service, db, tuned, partner):
    now = datetime.now(UTC)
    ages = {"old": 31, "recent": 29, "new": 1}
    async with db.worker_session() as session:
        for n, (name, days) in enumerate(ages.items()):
            session.add(
                WebhookEvent(
                    partner_id=partner,
                    outbox_id=-(10**12) - int(uuid.uuid4().int % 10**9) - n,
                    type="credit.repayment.due" if name != "new" else "credit.repayment.missed",
                    data={"name": name},
                    created_at=now - timedelta(days=days),
                )
            )
    listed = await events_of(service, partner)
    assert [e["data"]["name"] for e in listed] == ["new", "recent"]
    due = await events_of(service, partner, type="credit.repayment.due")
    assert [e["data"]["name"] for e in due] == ["recent"]
    since = (now - timedelta(days=2)).isoformat()
    assert [e["data"]["name"] for e in await events_of(service, partner, since=since)] == ["new"]
    # `since` cannot reach past the 30 days
    since_old = (now - timedelta(days=40)).isoformat()
    assert [e["data"]["name"] for e in await events_of(service, partner, since=since_old)] == [
        "new",
        "recent",
    ]
    page = (await service.get("/v1/events", params={"limit": 1}, headers=token(partner))).json()
    assert [e["data"]["name"] for e in page["data"]] == ["new"] and page["next_cursor"]
    rest = (
        await service.get(
            "/v1/events", params={"limit": 1, "cursor": page["next_cursor"]}, headers=token(partner)
        )
    ).json()
    assert [e["data"]["name"] for e in rest["data"]] == ["recent"] and rest["next_cursor"] is None
    bad = await service.get("/v1/events", params={"cursor": "nonsense"}, headers=token(partner))
    assert bad.status_code == 400


async def test_rotate_secret__old_secret_signs_too_during_the_overlap(
    service, db, partner, endpoint_receiver
):
    path = f"/ok/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(service, partner, endpoint_receiver.url + path)
    rotated = await service.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={}, headers=token(partner)
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != endpoint["secret"] and rotated.json()["previous_secret_expires_at"]
    await emit(db, partner)
    [first] = await until(lambda: _async(endpoint_receiver.to(path)))
    assert first.headers["Caas-Signature"].count("v1=") == 2
    assert verify_documented(new_secret, first.headers["Caas-Signature"], first.body)
    assert verify_documented(endpoint["secret"], first.headers["Caas-Signature"], first.body)

    at_once = await service.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"expire_previous_in_s": 0},
        headers=token(partner),
    )
    newest = at_once.json()["secret"]
    await emit(db, partner)
    await until(lambda: _async(len(endpoint_receiver.to(path)) == 2))
    second = endpoint_receiver.to(path)[1]
    assert second.headers["Caas-Signature"].count("v1=") == 1
    assert verify_documented(newest, second.headers["Caas-Signature"], second.body)
    assert not verify_documented(new_secret, second.headers["Caas-Signature"], second.body)


async def test_delete_endpoint__cancels_its_pending_deliveries(service, db, partner):
    with receiver() as rec:
        endpoint = await create_endpoint(service, partner, rec.url + "/down/x")
        outbox_id = await emit(db, partner)
        event = await until(lambda: event_for_outbox(db, outbox_id))
        await until(lambda: _async(rec.to("/down/x")))
        deleted = await service.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=token(partner))
        assert deleted.status_code == 204
        tried = len(rec.to("/down/x"))
        # a later event to another endpoint arrives: the worker has claimed since the delete
        await create_endpoint(service, partner, rec.url + "/ok/marker")
        await emit(db, partner, loan_id="marker")
        await until(lambda: _async(rec.to("/ok/marker")), what="the marker delivered")
        assert len(rec.to("/down/x")) <= tried + 1  # at most the one in flight at the moment of delete
        [delivery] = (await service.get(f"/v1/events/{event.id}", headers=token(partner))).json()[
            "deliveries"
        ]
        assert delivery["status"] == "cancelled"


async def test_secrets_are_encrypted_at_rest(service, db, partner):
    endpoint = await create_endpoint(service, partner, "https://example.com/hook")
    async with db.worker_session() as session:
        row = await session.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
    assert endpoint["secret"] not in row.secret_ciphertext
    assert endpoint["secret"].removeprefix("whsec_") not in row.secret_ciphertext


async def test_gateway_serves_the_same_routes(tuned, partner):
    app = create_gateway(tuned)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            created = await http.post(
                "/v1/webhook-endpoints",
                json={"url": "https://partner.example.com/hooks", "event_types": ["*"]},
                headers=token(partner),
            )
            assert created.status_code == 201, created.text
            assert "RateLimit-Limit" in created.headers  # the gateway's rate limits apply
            listed = await http.get("/v1/webhook-endpoints", headers=token(partner))
            assert [e["id"] for e in listed.json()["data"]] == [created.json()["id"]]
            assert (await http.get("/v1/events", headers=token(partner))).status_code == 200
            # managing endpoints is a privileged action: in the audit log, the secret never is
            log = (await http.get("/v1/audit/log", headers=token(partner))).json()["data"]
            [entry] = [e for e in log if e["action"] == "webhook_endpoint.create"]
            assert entry["subject_id"] == created.json()["id"]
            assert "secret" not in entry["details"]["after"] and created.json()["secret"] not in str(entry)


async def test_two_workers_share_due_deliveries_without_doubles(tuned, own_db, partner, endpoint_receiver):
    """Replicas claim with FOR UPDATE SKIP LOCKED: every delivery is POSTed once, by one of them."""

    path = f"/ok/{uuid.uuid4().hex}"
    settings = tuned.notifications.model_copy(update={"delivery_batch": 7, "delivery_concurrency": 4})
    async with own_db.partner_session(partner) as session:
        await create(
            session=session,
            partner_id=partner,
            body=EndpointIn(url=endpoint_receiver.url + path, event_types=["credit.repayment.due"]),
            box=secret_box(settings),
            outbound=LOOPBACK,
        )
    async with own_db.worker_session() as session:
        for n in range(60):
            event = Event(
                id=-(10**13) - int(uuid.uuid4().int % 10**9),
                topic="credit.repayment.due",
                payload={"n": n},
                partner_id=str(partner),
                created_at=datetime.now(UTC).isoformat(),
            )
            assert await store_event(session, event) == 1
    workers = [DeliveryWorker(own_db, settings, outbound=LOOPBACK) for _ in range(2)]
    try:
        claimed = [0, 0]

        async def drain(index: int) -> None:
            while handled := await workers[index].run_once():
                claimed[index] += handled

        await asyncio.gather(drain(0), drain(1))
    finally:
        for worker in workers:
            await worker.aclose()
    received = endpoint_receiver.to(path)
    numbers = sorted(r.json()["data"]["n"] for r in received)
    assert numbers == list(range(60))  # each once
    assert sum(claimed) == 60 and all(claimed), claimed  # and both workers took a share


async def test_lease__a_claim_whose_worker_died_is_sent_by_another(tuned, own_db, partner, endpoint_receiver):
    path = f"/ok/{uuid.uuid4().hex}"
    settings = tuned.notifications.model_copy(update={"delivery_timeout_s": 0.1, "delivery_lease_s": 0.3})
    async with own_db.partner_session(partner) as session:
        await create(
            session=session,
            partner_id=partner,
            body=EndpointIn(url=endpoint_receiver.url + path, event_types=["credit.loan.repaid"]),
            box=secret_box(settings),
            outbound=LOOPBACK,
        )
    async with own_db.worker_session() as session:
        event = Event(
            id=-(10**13) - int(uuid.uuid4().int % 10**9),
            topic="credit.loan.repaid",
            payload={"crash": True},
            partner_id=str(partner),
            created_at=datetime.now(UTC).isoformat(),
        )
        await store_event(session, event)
    crashed, survivor = (
        DeliveryWorker(own_db, settings, outbound=LOOPBACK),
        DeliveryWorker(own_db, settings, outbound=LOOPBACK),
    )
    try:
        assert len(await crashed.claim(limit=10)) == 1  # ... and then it dies without sending
        assert await survivor.run_once() == 0  # leased: not due for anyone else yet
        await asyncio.sleep(0.4)
        assert await survivor.run_once() == 1
    finally:
        await crashed.aclose()
        await survivor.aclose()
    [received] = endpoint_receiver.to(path)
    assert received.headers["Caas-Delivery-Attempt"] == "2"


async def test_hanging_endpoint__times_out_without_holding_up_the_others(service, db, tuned, partner):
    """The app's worker (delivery_timeout_s from settings) against an endpoint that never answers in time."""

    def behaviour(path: str, count: int):
        if path.startswith("/slow"):
            time.sleep(3.0)  # the server thread hangs past the worker's 2 s timeout
        return 200, {}

    with receiver(behaviour) as rec:
        await create_endpoint(service, partner, rec.url + "/slow", ["credit.loan.repaid"])
        await create_endpoint(service, partner, rec.url + "/fast", ["credit.loan.repaid"])
        started = time.monotonic()
        outbox_ids = [await emit(db, partner) for _ in range(3)]
        await until(lambda: _async(len(rec.to("/fast")) == 3), what="fast endpoint served")
        assert time.monotonic() - started < 2.0  # not behind the slow endpoint's 2 s timeouts
        event = await until(lambda: event_for_outbox(db, outbox_ids[0]))

        async def timed_out():
            response = await service.get(f"/v1/events/{event.id}", headers=token(partner))
            slow = [d for d in response.json()["deliveries"] if d["last_error"]]
            return slow[0] if slow else None

        slow = await until(timed_out, within=15, what="a recorded timeout")
        assert slow["last_error"].startswith("timeout") and slow["last_status_code"] is None


async def test_purge__events_past_retention_go_with_their_deliveries(tuned, own_db, partner):
    old_outbox = -(10**13) - int(uuid.uuid4().int % 10**9)
    async with own_db.partner_session(partner) as session:
        endpoint = await create(
            session=session,
            partner_id=partner,
            body=EndpointIn(url="http://127.0.0.1:9/x", event_types=["*"]),
            box=secret_box(tuned.notifications),
            outbound=LOOPBACK,
        )
    async with own_db.worker_session() as session:
        for outbox_id, days in ((old_outbox, 40), (old_outbox - 1, 20)):
            await store_event(
                session,
                Event(
                    id=outbox_id,
                    topic="credit.loan.repaid",
                    payload={"days": days},
                    partner_id=str(partner),
                    created_at=(datetime.now(UTC) - timedelta(days=days)).isoformat(),
                ),
            )
    worker = DeliveryWorker(own_db, tuned.notifications, outbound=LOOPBACK)
    try:
        assert await worker.purge() >= 1
    finally:
        await worker.aclose()
    assert await event_for_outbox(own_db, old_outbox) is None
    kept = await event_for_outbox(own_db, old_outbox - 1)
    assert kept is not None
    async with own_db.worker_session() as session:
        endpoint_deliveries = await session.scalar(
            select(func.count()).where(WebhookDelivery.endpoint_id == endpoint.id)
        )
    assert endpoint_deliveries == 1  # the purged event's delivery went with it
    async with own_db.worker_session() as session:  # nothing left due for the next bare worker
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint.id)
            .values(status="cancelled")
        )


async def test_replay_during_an_attempt_in_flight_is_not_swallowed(tuned, own_db, partner, endpoint_receiver):
    path = f"/ok/{uuid.uuid4().hex}"
    settings = tuned.notifications
    async with own_db.partner_session(partner) as session:
        await create(
            session=session,
            partner_id=partner,
            body=EndpointIn(url=endpoint_receiver.url + path, event_types=["credit.loan.repaid"]),
            box=secret_box(settings),
            outbound=LOOPBACK,
        )
    outbox_id = -(10**13) - int(uuid.uuid4().int % 10**9)
    async with own_db.worker_session() as session:
        await store_event(
            session,
            Event(
                id=outbox_id,
                topic="credit.loan.repaid",
                payload={"race": True},
                partner_id=str(partner),
                created_at=datetime.now(UTC).isoformat(),
            ),
        )
    event = await event_for_outbox(own_db, outbox_id)
    worker = DeliveryWorker(own_db, settings, outbound=LOOPBACK)
    try:
        [job] = [j for j in await worker.claim(limit=50) if j.event_id == event.id]
        outcome = await worker.send(job)  # delivered ...
        async with own_db.partner_session(partner) as session:  # ... while the partner asks for a replay
            await replay_usecase(
                session=session, partner_id=partner, event_id=event.id, endpoint_id=None, listing_days=30
            )
        await worker.record([(job, outcome)])  # the late outcome must not settle the replay
        assert await worker.run_once() == 1
    finally:
        await worker.aclose()
    assert len(endpoint_receiver.to(path)) == 2


@pytest.mark.asyncio
async def test_send__only_a_2xx_acknowledges__redirects_not_followed__unreachable_is_a_network_error(
    own_db: Database, settings: Settings
) -> None:
    def behaviour(path: str, count: int) -> tuple[int, dict[str, Any] | None]:
        return (302, None) if path.startswith("/moved") else (200, {"ok": True, "pad": "x" * 100_000})

    worker = DeliveryWorker(own_db, settings.notifications, outbound=LOOPBACK)

    def job(url: str) -> Job:
        now = datetime.now(UTC)
        return Job(
            delivery_id=uuid.uuid4(),
            partner_id=uuid.uuid4(),
            attempt=1,
            failures=0,
            window_started_at=now,
            url=url,
            secrets=("whsec_test",),
            event_id=uuid.uuid4(),
            event_type="credit.loan.repaid",
            event_created_at=now,
            body=b'{"ok":true}',
        )

    try:
        with receiver(behaviour) as endpoint:
            # twice each: the second POST goes over the connection the first one left
            answers = [
                await worker.send(job(endpoint.url + path)) for path in ("/ok", "/ok", "/moved", "/moved")
            ]
            arrived = [r.path for r in endpoint.requests]
        unreachable = await worker.send(job(f"http://127.0.0.1:{_closed_port()}/hook"))
    finally:
        await worker.aclose()

    assert [(a.delivered, a.status_code, a.kind) for a in answers] == [
        (True, 200, "delivered"),
        (True, 200, "delivered"),
        (False, 302, "http_error"),
        (False, 302, "http_error"),
    ]
    assert arrived == ["/ok", "/ok", "/moved", "/moved"]  # the redirect was not followed
    assert (unreachable.delivered, unreachable.status_code, unreachable.kind) == (
        False,
        None,
        "network_error",
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_store_events__the_rows_store_event_makes__in_one_statement(db: Database) -> None:
    # Two partners side by side, the same events: one stored event by event (store_event), one in
    # one statement (store_events). An event goes to its partner's live endpoints that take its
    # type (by name or "*"); a deleted endpoint or another type gets nothing; a platform-wide
    # event is not stored; an outbox id stored before is a no-op.
    kinds = {
        "named": ["credit.loan.repaid"],
        "all": ["*"],
        "other": ["credit.loan.approved"],
        "deleted": ["credit.loan.repaid"],
    }
    topics = ["credit.loan.repaid", "credit.loan.approved", "credit.loan.defaulted", "credit.loan.repaid"]
    partners = {"one_by_one": uuid.uuid4(), "batched": uuid.uuid4()}
    endpoint_names: dict[uuid.UUID, str] = {}
    async with db.worker_session() as session:
        for partner in partners.values():
            for name, types in kinds.items():
                row = WebhookEndpoint(
                    partner_id=partner,
                    url=f"http://127.0.0.1:9/{name}",
                    event_types=types,
                    secret_ciphertext="x",
                    deleted_at=datetime.now(UTC) if name == "deleted" else None,
                )
                session.add(row)
                await session.flush()
                endpoint_names[row.id] = name
    base = -(10**14) - int(uuid.uuid4().int % 10**9) * 100
    outbox_ids = {"one_by_one": base, "batched": base + 50}

    def events(kind: str) -> list[Event]:
        return [
            Event(
                id=outbox_ids[kind] + n,
                topic=topic,
                payload={"k": n, "loan_id": "L-1"},
                partner_id=None if n == 3 else str(partners[kind]),  # the last one platform-wide
                created_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            )
            for n, topic in enumerate(topics)
        ]

    async def rows(kind: str) -> list[tuple[Any, ...]]:
        async with db.worker_session() as session:
            found = await session.execute(
                select(WebhookEvent.outbox_id, WebhookEvent.type, WebhookEvent.data, WebhookEvent.created_at)
                .add_columns(WebhookDelivery.endpoint_id, WebhookDelivery.status)
                .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id, isouter=True)
                .where(WebhookEvent.partner_id == partners[kind])
            )
            return sorted(
                (o - outbox_ids[kind], t, json.dumps(d, sort_keys=True), c, endpoint_names.get(e), st)
                for o, t, d, c, e, st in found.all()
            )

    async with db.worker_session() as session:
        expected = [await store_event(session, event) for event in events("one_by_one")]
    async with db.worker_session() as session:
        first = await store_events(session, events("batched")[:1])
    async with db.worker_session() as session:
        queued = await store_events(session, events("batched"))  # the first one again

    assert expected == [2, 2, 1, 0]
    assert (first, queued) == (2, 3)  # the first one again: nothing more
    assert await rows("batched") == await rows("one_by_one")
    assert {name for *_, name, _ in await rows("batched")} == {"named", "all", "other"}
