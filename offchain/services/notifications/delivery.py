"""The webhook delivery worker: POST each due delivery, signed; retry with backoff; dead-letter.

Replicas share the work through the database: a round claims due deliveries with
`FOR UPDATE SKIP LOCKED` and leases them (moves `next_attempt_at` past the POST's timeout) in one
short transaction, then sends with no transaction open, then records each outcome. A worker that
dies mid-round leaves leased rows that fall due again when the lease ends: at-least-once
delivery, which is why every delivery carries the event id for partners to dedupe on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from offchain.domain.notifications import signing
from offchain.domain.notifications.envelope import envelope
from offchain.domain.notifications.retry import RetryPolicy
from offchain.persistence.notifications import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import NotificationsSettings
from offchain.services.notifications.intake import WAKEUP
from offchain.services.notifications.metrics import NotificationMetrics
from offchain.services.notifications.secrets import SecretBox, secret_box

log = get_logger(__name__)

USER_AGENT = "CaaS-Webhooks/1"
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
    kind: str  # delivered | http_error | timeout | network_error


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
        http: httpx.AsyncClient | None = None,
        box: SecretBox | None = None,
        metrics: NotificationMetrics | None = None,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy_from(settings)
        self.box = box or secret_box(settings)
        self.metrics = metrics or NotificationMetrics()
        self.wakeup = wakeup or asyncio.Event()
        self._own_http = http is None
        # No redirects: a 3xx is not an acknowledgement, and following one could leave the
        # URL the partner registered.
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.delivery_timeout_s, connect=min(5.0, settings.delivery_timeout_s)),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.delivery_concurrency * 2),
        )
        self._semaphore = asyncio.Semaphore(settings.delivery_concurrency)
        self._last_purge = 0.0

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                handled = await self.run_once()
                await self.observe_queue()
                if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                    await self.purge()
                failures = 0
            except Exception:
                failures += 1
                log.exception("webhook.worker_round_failed", attempt=failures)
                handled = 0
            if handled >= self.settings.delivery_batch:
                continue
            delay = self.settings.worker_poll_s if not failures else min(0.5 * 2**failures, 30.0)
            self.wakeup.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())]
            _, pending = await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    async def run_once(self) -> int:
        """Claim up to one batch of due deliveries and send them; returns how many were claimed."""
        jobs = await self.claim()
        if jobs:
            await asyncio.gather(*(self._send_and_record(job) for job in jobs))
        return len(jobs)

    async def claim(self) -> list[Job]:
        lease = timedelta(seconds=max(self.settings.delivery_lease_s, self.settings.delivery_timeout_s * 2))
        async with self.db.worker_session() as session:
            due = (
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= func.now())
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(self.settings.delivery_batch)
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

    async def _send_and_record(self, job: Job) -> None:
        async with self._semaphore:
            outcome = await self.send(job)
        try:
            await self.record(job, outcome)
        except Exception:
            # the lease makes it due again; the partner may see it twice, never zero times
            log.exception("webhook.record_failed", delivery_id=str(job.delivery_id))

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
            # stream: the status line is the answer; a huge or endless body is never read
            async with self.http.stream("POST", job.url, content=job.body, headers=headers) as response:
                status = response.status_code
        except httpx.TimeoutException as error:
            return Outcome(
                False, None, f"timeout: {type(error).__name__}", time.perf_counter() - started, "timeout"
            )
        except httpx.HTTPError as error:
            return Outcome(
                False,
                None,
                f"{type(error).__name__}: {error}"[:500],
                time.perf_counter() - started,
                "network_error",
            )
        seconds = time.perf_counter() - started
        if 200 <= status < 300:
            return Outcome(True, status, None, seconds, "delivered")
        return Outcome(False, status, f"endpoint answered {status}", seconds, "http_error")

    async def record(self, job: Job, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        self.metrics.attempts.labels(outcome.kind).inc()
        self.metrics.attempt_seconds.observe(outcome.seconds)
        async with self.db.worker_session() as session:
            session.add(
                WebhookAttempt(
                    partner_id=job.partner_id,
                    delivery_id=job.delivery_id,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    duration_ms=round(outcome.seconds * 1000, 3),
                )
            )
            values: dict[str, Any] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
            if outcome.delivered:
                values.update(status="delivered", delivered_at=now, next_attempt_at=None)
                self.metrics.event_age_seconds.observe(max(0.0, (now - job.event_created_at).total_seconds()))
            else:
                failures = job.failures + 1
                retry_at = self.policy.next_attempt(
                    failed_attempts=failures, window_started_at=job.window_started_at, now=now
                )
                values["failures"] = failures
                if retry_at is None:
                    values.update(status="dead", dead_at=now, next_attempt_at=None)
                    self.metrics.dead_lettered.inc()
                    log.warning(
                        "webhook.dead_lettered",
                        delivery_id=str(job.delivery_id),
                        event_id=str(job.event_id),
                        attempts=job.attempt,
                        error=outcome.error,
                    )
                else:
                    values["next_attempt_at"] = retry_at
            # Only the claim this worker holds: a replay or a delete since then wins.
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == job.delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.attempts == job.attempt,
                )
                .values(**values)
            )
        log.info(
            "webhook.attempted",
            delivery_id=str(job.delivery_id),
            event_type=job.event_type,
            attempt=job.attempt,
            outcome=outcome.kind,
            status_code=outcome.status_code,
            ms=round(outcome.seconds * 1000, 1),
        )

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
        metrics=metrics,
        wakeup=resources.extras.setdefault(WAKEUP, asyncio.Event()),
    )
    try:
        await worker.run(stop)
    finally:
        await worker.aclose()
