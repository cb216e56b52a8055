"""The webhook delivery worker: POST each due delivery, signed; retry with backoff; dead-letter.

Replicas share the work through the database: a worker claims due deliveries with
`FOR UPDATE SKIP LOCKED` and leases them (moves `next_attempt_at` past the POST's timeout) in one
short transaction, sends with no transaction open, and records outcomes in batches. It keeps up
to `delivery_concurrency` POSTs in flight and claims more as soon as any finishes, so a partner
endpoint that hangs until its timeout holds one slot, never the whole worker.
A worker that dies leaves leased rows that fall due again when the lease ends: at-least-once
delivery, which is why every delivery carries the event id for partners to dedupe on.

Where a delivery may go is offchain.platform.outbound's policy, checked at every send: the URL
itself (address literals), then every address its host resolves to, inside aiohttp's own
resolution (GuardedResolver), so the POST connects only to checked addresses. What a partner
reads back about an attempt (GET /v1/events) is its status and timing and a coarse reason
(timeout, connection failed, refused, the HTTP status), never what the other end answered or
the network error's text: those are logged for operators.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
from sqlalchemy import DateTime, SmallInteger, Table, Text, bindparam, delete, func, insert, select, update

from offchain.domain.notifications import signing
from offchain.domain.notifications.envelope import envelope
from offchain.domain.notifications.retry import RetryPolicy
from offchain.persistence.notifications import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.outbound import GuardedResolver, OutboundPolicy, UrlRefused
from offchain.platform.settings import NotificationsSettings
from offchain.services.notifications.intake import WAKEUP
from offchain.services.notifications.metrics import NotificationMetrics
from offchain.services.notifications.secrets import SecretBox, secret_box

log = get_logger(__name__)

USER_AGENT = "CaaS-Webhooks/1"

_deliveries = cast(Table, WebhookDelivery.__table__)
_attempts = cast(Table, WebhookAttempt.__table__)
# One statement for every outcome (executemany). Only the claim this worker holds is updated: a
# replay (new window) or a delete (cancelled) since the claim wins over the late outcome.
# A failure after an earlier success keeps delivered_at.
_RECORD = (
    update(_deliveries)
    .where(
        _deliveries.c.id == bindparam("d_id"),
        _deliveries.c.status == "pending",
        _deliveries.c.attempts == bindparam("d_attempt"),
        _deliveries.c.window_started_at == bindparam("d_window", type_=DateTime(timezone=True)),
    )
    .values(
        status=bindparam("d_status"),
        failures=bindparam("d_failures"),
        next_attempt_at=bindparam("d_next", type_=DateTime(timezone=True)),
        delivered_at=func.coalesce(
            bindparam("d_delivered", type_=DateTime(timezone=True)), _deliveries.c.delivered_at
        ),
        dead_at=bindparam("d_dead", type_=DateTime(timezone=True)),
        last_status_code=bindparam("d_code", type_=SmallInteger()),
        last_error=bindparam("d_error", type_=Text()),
        updated_at=func.now(),
    )
)
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Job:
    delivery_id: uuid.UUID
    partner_id: uuid.UUID
    attempt: int
    failures: int
    window_started_at: datetime
    url: str | None
    secrets: tuple[str, ...]
    event_id: uuid.UUID
    event_type: str
    event_created_at: datetime
    body: bytes


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None
    error: str | None
    seconds: float
    kind: str  # delivered | http_error | timeout | network_error | refused


def policy_from(settings: NotificationsSettings) -> RetryPolicy:
    return RetryPolicy(
        base_s=settings.retry_base_s,
        max_interval_s=settings.retry_max_interval_s,
        window_s=settings.retry_window_s,
        jitter=settings.retry_jitter,
    )


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        settings: NotificationsSettings,
        *,
        outbound: OutboundPolicy | None = None,
        box: SecretBox | None = None,
        metrics: NotificationMetrics | None = None,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy_from(settings)
        # where deliveries may go: strict unless the caller passes the deployment's policy
        # (OutboundPolicy.from_settings, which allows loopback only where the settings say so)
        self.outbound = outbound or OutboundPolicy()
        self.box = box or secret_box(settings)
        self.metrics = metrics or NotificationMetrics()
        self.wakeup = wakeup or asyncio.Event()
        # aiohttp, made on the first send in the running loop: under a burst httpx cost the
        # notifications service ~3x the CPU per POST
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=settings.delivery_timeout_s, connect=min(5.0, settings.delivery_timeout_s)
        )
        self._last_purge = 0.0

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _aiohttp(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    # every address a host resolves to is checked before aiohttp connects to it
                    resolver=GuardedResolver(self.outbound),
                    limit=self.settings.delivery_concurrency * 2,
                    # idle connections let go before a server's usual 5 s keep-alive closes them
                    # under a new POST
                    keepalive_timeout=3.0,
                ),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def run(self, stop: asyncio.Event) -> None:
        outcomes: asyncio.Queue[tuple[Job, Outcome]] = asyncio.Queue()
        recorder = asyncio.create_task(self._record_from(outcomes))
        in_flight: set[asyncio.Task[None]] = set()
        failures, last_observed = 0, 0.0
        try:
            while not stop.is_set():
                free = self.settings.delivery_concurrency - len(in_flight)
                jobs: list[Job] = []
                if free > 0:
                    try:
                        jobs = await self.claim(limit=min(free, self.settings.delivery_batch))
                        failures = 0
                    except Exception:
                        failures += 1
                        log.exception("webhook.claim_failed", attempt=failures)
                for job in jobs:
                    task = asyncio.create_task(self._send_into(job, outcomes))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if time.monotonic() - last_observed > 1.0:
                    last_observed = time.monotonic()
                    await self._housekeeping()
                if jobs and len(in_flight) < self.settings.delivery_concurrency:
                    continue  # more may be due right now
                await self._wait(stop, in_flight, failures)
        finally:
            if in_flight:
                _, unfinished = await asyncio.wait(in_flight, timeout=self.settings.delivery_timeout_s + 1)
                for task in unfinished:
                    task.cancel()  # their leases run out and another worker sends them
            await outcomes.join()
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)

    async def _wait(self, stop: asyncio.Event, in_flight: set[asyncio.Task[None]], failures: int) -> None:
        """Until stop, new work (wakeup), a free slot when all are busy, or the next poll."""
        self.wakeup.clear()
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self.wakeup.wait()),
        ]
        if len(in_flight) >= self.settings.delivery_concurrency:
            waiters += list(in_flight)
        delay = self.settings.worker_poll_s if not failures else min(0.5 * 2**failures, 30.0)
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters[:2]:
            waiter.cancel()

    async def _housekeeping(self) -> None:
        try:
            await self.observe_queue()
            if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                await self.purge()
        except Exception:
            log.exception("webhook.housekeeping_failed")

    async def _send_into(self, job: Job, outcomes: asyncio.Queue[tuple[Job, Outcome]]) -> None:
        await outcomes.put((job, await self.send(job)))

    async def _record_from(self, outcomes: asyncio.Queue[tuple[Job, Outcome]]) -> None:
        """Record outcomes as they come, everything waiting at that moment in one transaction."""
        while True:
            batch = [await outcomes.get()]
            while not outcomes.empty() and len(batch) < 500:
                batch.append(outcomes.get_nowait())
            try:
                await self.record(batch)
            except Exception:
                # the leases make them due again: a partner may see one twice, never zero times
                log.exception("webhook.record_failed", deliveries=len(batch))
            finally:
                for _ in batch:
                    outcomes.task_done()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries, send them all, record them; returns how many."""
        jobs = await self.claim(limit=self.settings.delivery_batch)
        if jobs:
            sent = await asyncio.gather(*(self.send(job) for job in jobs))
            await self.record(list(zip(jobs, sent, strict=True)))
        return len(jobs)

    async def claim(self, *, limit: int) -> list[Job]:
        lease = timedelta(seconds=max(self.settings.delivery_lease_s, self.settings.delivery_timeout_s * 2))
        async with self.db.worker_session() as session:
            due = (
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= func.now())
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claimed = (
                (
                    await session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id.in_(due.scalar_subquery()))
                        .values(
                            attempts=WebhookDelivery.attempts + 1,
                            next_attempt_at=func.now() + lease,
                            last_attempt_at=func.now(),
                        )
                        .returning(WebhookDelivery.id)
                        .execution_options(synchronize_session=False)
                    )
                )
                .scalars()
                .all()
            )
            if not claimed:
                return []
            rows = (
                await session.execute(
                    select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
                    .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(WebhookDelivery.id.in_(claimed))
                    .execution_options(populate_existing=True)
                )
            ).all()
            jobs = [self._job(delivery, event, endpoint) for delivery, event, endpoint in rows]
            gone = [job.delivery_id for job in jobs if job.url is None]
            if gone:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(gone))
                    .values(status="cancelled", next_attempt_at=None, last_error="endpoint deleted")
                )
        return [job for job in jobs if job.url is not None]

    def _job(self, delivery: WebhookDelivery, event: WebhookEvent, endpoint: WebhookEndpoint) -> Job:
        secrets: tuple[str, ...] = ()
        if endpoint.deleted_at is None:
            secrets = (self.box.decrypt(endpoint.secret_ciphertext),)
            expires = endpoint.previous_secret_expires_at
            if endpoint.previous_secret_ciphertext and expires and expires > datetime.now(UTC):
                secrets += (self.box.decrypt(endpoint.previous_secret_ciphertext),)
        payload = envelope(
            event_id=str(event.id), event_type=event.type, created_at=event.created_at, data=event.data
        )
        return Job(
            delivery_id=delivery.id,
            partner_id=delivery.partner_id,
            attempt=delivery.attempts,
            failures=delivery.failures,
            window_started_at=delivery.window_started_at,
            url=endpoint.url if endpoint.deleted_at is None else None,
            secrets=secrets,
            event_id=event.id,
            event_type=event.type,
            event_created_at=event.created_at,
            body=encode_body(payload),
        )

    async def send(self, job: Job) -> Outcome:
        assert job.url is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.HEADER: signing.signature_header(job.secrets, job.body),
            "Caas-Event-Id": str(job.event_id),
            "Caas-Event-Type": job.event_type,
            "Caas-Delivery-Id": str(job.delivery_id),
            "Caas-Delivery-Attempt": str(job.attempt),
        }
        started = time.perf_counter()
        try:
            # address literals here (aiohttp resolves nothing for them), names in the resolver
            self.outbound.parse(job.url)
            status = await self._post(job.url, job.body, headers)
        except UrlRefused as refusal:
            return self._refused(job, refusal, started)
        except TimeoutError:
            return Outcome(False, None, "timeout", time.perf_counter() - started, "timeout")
        except (aiohttp.ClientError, OSError) as error:
            cause = getattr(error, "os_error", None)
            if isinstance(cause, UrlRefused):
                return self._refused(job, cause, started)
            log.info(
                "webhook.network_error",
                delivery_id=str(job.delivery_id),
                error=f"{type(error).__name__}: {error}"[:500],
            )
            return Outcome(False, None, "connection failed", time.perf_counter() - started, "network_error")
        seconds = time.perf_counter() - started
        if 200 <= status < 300:
            return Outcome(True, status, None, seconds, "delivered")
        return Outcome(False, status, f"endpoint answered {status}", seconds, "http_error")

    def _refused(self, job: Job, refusal: UrlRefused, started: float) -> Outcome:
        log.warning("webhook.refused_address", delivery_id=str(job.delivery_id), reason=str(refusal))
        return Outcome(False, None, f"refused: {refusal}"[:200], time.perf_counter() - started, "refused")

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The status of a POST. The status line is the answer: a huge or endless body is never
        read (a small one is, so the connection is kept). No redirects: a 3xx is not an
        acknowledgement, and following one could leave the URL the partner registered."""
        async with self._aiohttp().post(
            url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
        ) as answer:
            if answer.content_length is not None and answer.content_length <= 65_536:
                await answer.read()
            return answer.status

    async def record(self, results: list[tuple[Job, Outcome]]) -> None:
        """Write attempts and delivery states of many sends in one transaction."""
        now = datetime.now(UTC)
        attempts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for job, outcome in results:
            self.metrics.attempts.labels(outcome.kind).inc()
            self.metrics.attempt_seconds.observe(outcome.seconds)
            attempts.append(
                {
                    "partner_id": job.partner_id,
                    "delivery_id": job.delivery_id,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "duration_ms": round(outcome.seconds * 1000, 3),
                }
            )
            row = {
                "d_id": job.delivery_id,
                "d_attempt": job.attempt,
                "d_window": job.window_started_at,
                "d_status": "pending",
                "d_failures": job.failures,
                "d_next": None,
                "d_delivered": None,
                "d_dead": None,
                "d_code": outcome.status_code,
                "d_error": outcome.error,
            }
            if outcome.delivered:
                row.update(d_status="delivered", d_delivered=now)
                self.metrics.event_age_seconds.observe(max(0.0, (now - job.event_created_at).total_seconds()))
            else:
                row["d_failures"] = job.failures + 1
                row["d_next"] = self.policy.next_attempt(
                    failed_attempts=job.failures + 1, window_started_at=job.window_started_at, now=now
                )
                if row["d_next"] is None:
                    row.update(d_status="dead", d_dead=now)
                    self.metrics.dead_lettered.inc()
                    log.warning(
                        "webhook.dead_lettered",
                        delivery_id=str(job.delivery_id),
                        event_id=str(job.event_id),
                        attempts=job.attempt,
                        error=outcome.error,
                    )
            updates.append(row)
            log.info(
                "webhook.attempted",
                delivery_id=str(job.delivery_id),
                event_type=job.event_type,
                attempt=job.attempt,
                outcome=outcome.kind,
                status_code=outcome.status_code,
                ms=round(outcome.seconds * 1000, 1),
            )
        async with self.db.worker_session() as session:
            await session.execute(insert(_attempts), attempts)
            await session.execute(_RECORD, updates)

    async def observe_queue(self) -> None:
        async with self.db.worker_session() as session:
            row = (
                await session.execute(
                    select(
                        func.count(),
                        func.min(WebhookDelivery.next_attempt_at).filter(
                            WebhookDelivery.next_attempt_at <= func.now()
                        ),
                        func.now(),
                    ).where(WebhookDelivery.status == "pending")
                )
            ).one()
        pending, oldest_due, now = row
        self.metrics.pending.set(pending)
        self.metrics.lag_seconds.set(max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0)

    async def purge(self) -> int:
        """Delete events past the retention (their deliveries and attempts go with them)."""
        self._last_purge = time.monotonic()
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.event_retention_days)
        async with self.db.worker_session() as session:
            result = await session.execute(delete(WebhookEvent).where(WebhookEvent.created_at < cutoff))
        purged = int(getattr(result, "rowcount", 0) or 0)
        if purged:
            log.info("webhook.events_purged", count=purged, older_than=cutoff.isoformat())
        return purged


async def run_delivery_worker(
    resources: AppResources, stop: asyncio.Event, *, metrics: NotificationMetrics | None = None
) -> None:
    """Background job of the notifications service (offchain.platform.app.BackgroundTask)."""
    if resources.db is None:
        await stop.wait()
        return
    worker = DeliveryWorker(
        resources.db,
        resources.settings.notifications,
        outbound=OutboundPolicy.from_settings(resources.settings),
        metrics=metrics,
        wakeup=resources.extras.setdefault(WAKEUP, asyncio.Event()),
    )
    try:
        await worker.run(stop)
    finally:
        await worker.aclose()
