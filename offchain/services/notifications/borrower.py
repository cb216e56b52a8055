"""Borrower messages: `notification.borrower.requested` => a rendered template on a channel.

Payload (the producer's contract, e.g. collections):
    {"notification_id": str, "partner_id": str, "loan_id": str, "sme_user_id": str,
     "channel": "sms" | "email" | "log", "template": str, "data": {...}}
The recipient is `data.phone` (sms) or `data.email` (email), else the SME platform's contact
details for `sme_user_id`, fetched at send time (nothing stored). One message per notification_id:
its row is locked while sending and marked `sent` in the same transaction, so duplicates and
concurrent replicas send nothing more. A provider outage marks it `failed` and raises, and the bus
redelivers it (bounded by EVENTS__MAX_DELIVERIES, then its dead-letter stream); a refusal
(bad address, unknown template, missing data) marks it `rejected`, which is final.
A crash after the provider accepted but before the commit sends it again on redelivery: at
least once, in that narrow window.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from offchain.domain.notifications.templates import TemplateError, render
from offchain.eventbus.messages import Event
from offchain.eventbus.service import run_consumer
from offchain.persistence.notifications import BorrowerNotification
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import Environment, Settings
from offchain.rails.messaging import (
    HttpSmsSender,
    LogSender,
    MessageSender,
    OutgoingMessage,
    PermanentSendError,
    SmtpSender,
    TransientSendError,
)
from offchain.rails.sme.contacts import ContactNotFound, ContactsUnavailable, SmeContactsClient
from offchain.rails.sme.http import SmeRefused
from offchain.services.notifications.metrics import NotificationMetrics

log = get_logger(__name__)

TOPIC = "notification.borrower.requested"
GROUP = "notifications.borrower"
CHANNELS = ("sms", "email", "log")
_RECIPIENT_KEY = {"sms": "phone", "email": "email"}


class ChannelNotConfigured(RuntimeError):
    pass


def build_senders(settings: Settings, http: httpx.AsyncClient) -> dict[str, MessageSender]:
    """One sender per channel, from settings; the log channel stands in only outside production."""
    config = settings.notifications
    senders: dict[str, MessageSender] = {"log": LogSender()}
    development = settings.env is not Environment.PRODUCTION
    if config.email_adapter == "smtp":
        if not config.smtp_host:
            raise ChannelNotConfigured("NOTIFICATIONS__EMAIL_ADAPTER=smtp needs SMTP_HOST")
        senders["email"] = SmtpSender(
            host=config.smtp_host,
            port=config.smtp_port,
            sender=config.smtp_from,
            username=config.smtp_username,
            password=config.smtp_password.get_secret_value() if config.smtp_password else None,
            starttls=config.smtp_starttls,
            timeout_s=config.message_timeout_s,
        )
    elif development:
        senders["email"] = LogSender("email")
    if config.sms_adapter == "http":
        if not config.sms_url:
            raise ChannelNotConfigured("NOTIFICATIONS__SMS_ADAPTER=http needs SMS_URL")
        senders["sms"] = HttpSmsSender(
            http=http,
            url=config.sms_url,
            sender=config.sms_sender,
            api_key=config.sms_api_key.get_secret_value() if config.sms_api_key else None,
            timeout_s=config.message_timeout_s,
        )
    elif development:
        senders["sms"] = LogSender("sms")
    return senders


class RetryLater(Exception):
    """Raised after the failure is recorded, so the bus delivers the request again."""


@dataclass
class BorrowerMessenger:
    db: Database
    senders: dict[str, MessageSender]
    metrics: NotificationMetrics | None = None
    # where a recipient comes from when the request names none: the SME platform, at send time
    contacts: SmeContactsClient | None = None

    async def _recipient(self, channel: str, data: dict[str, Any], sme_user_id: Any) -> str | None:
        key = _RECIPIENT_KEY.get(channel)
        if key is None:
            return None
        if data.get(key):
            return str(data[key])
        if self.contacts is None or not sme_user_id:
            return None
        try:
            contact = await self.contacts.contact(str(sme_user_id))
        except ContactNotFound as error:
            raise PermanentSendError(f"the SME platform does not know user {sme_user_id}") from error
        except ContactsUnavailable as error:
            raise TransientSendError(str(error)) from error
        except SmeRefused as error:
            raise PermanentSendError(f"the SME platform refused the contact lookup: {error}") from error
        value = getattr(contact, key)
        return str(value) if value else None

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.borrower_messages.labels(channel, outcome).inc()

    async def handle(self, event: Event) -> str:
        """Send the requested message once; returns the notification's status afterwards."""
        payload: dict[str, Any] = event.payload
        notification_id = payload.get("notification_id")
        if not isinstance(notification_id, str) or not notification_id:
            log.error("borrower_message.invalid", outbox_id=event.id, reason="no notification_id")
            return "invalid"
        try:
            partner_id = uuid.UUID(str(payload.get("partner_id") or event.partner_id))
        except ValueError:
            log.error("borrower_message.invalid", notification_id=notification_id, reason="bad partner_id")
            return "invalid"
        channel = str(payload.get("channel", ""))
        template = str(payload.get("template", ""))
        raw_data = payload.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        loan_id = payload.get("loan_id")
        retry_error: str | None = None
        async with self.db.worker_session() as session:
            await session.execute(
                insert(BorrowerNotification)
                .values(
                    notification_id=notification_id,
                    partner_id=partner_id,
                    loan_id=str(loan_id) if loan_id is not None else None,
                    sme_user_id=payload.get("sme_user_id"),
                    channel=channel[:16],
                    template=template[:100],
                )
                .on_conflict_do_nothing()
            )
            # the lock serialises duplicates: the second one waits, then sees `sent`
            row = (
                await session.execute(
                    select(BorrowerNotification)
                    .where(BorrowerNotification.notification_id == notification_id)
                    .with_for_update()
                )
            ).scalar_one()
            if row.status in ("sent", "rejected"):
                self._count(channel, "duplicate")
                return row.status
            row.attempts += 1
            try:
                sender = self.senders.get(channel)
                if sender is None:
                    raise PermanentSendError(
                        f"channel {channel!r} is not available; known: {sorted(self.senders)}"
                    )
                message = render(template, data, loan_id=str(loan_id) if loan_id is not None else None)
                to = await self._recipient(channel, data, payload.get("sme_user_id"))
                row.provider_ref = await sender.send(
                    OutgoingMessage(
                        reference=notification_id, to=to, subject=message.subject, body=message.body
                    )
                )
                row.status, row.sent_at, row.last_error = "sent", datetime.now(UTC), None
            except (TemplateError, PermanentSendError) as error:
                row.status, row.last_error = "rejected", str(error)[:1000]
            except TransientSendError as error:
                row.status, row.last_error = "failed", str(error)[:1000]
                retry_error = row.last_error
            status = row.status
        self._count(channel, status)
        log.info(
            "borrower_message.handled",
            notification_id=notification_id,
            channel=channel,
            template=template,
            status=status,
        )
        if retry_error is not None:
            raise RetryLater(retry_error)
        return status


async def run_borrower_messages(
    resources: AppResources, stop: asyncio.Event, *, metrics: NotificationMetrics | None = None
) -> None:
    """Background job of the notifications service (offchain.platform.app.BackgroundTask)."""
    if resources.db is None or resources.redis is None:
        await stop.wait()
        return
    settings = resources.settings
    messenger = BorrowerMessenger(
        resources.db,
        build_senders(settings, resources.http),
        metrics,
        contacts=SmeContactsClient.from_settings(settings.rails, http=resources.http),
    )

    async def handle(event: Event) -> None:
        await messenger.handle(event)

    await run_consumer(resources, stop, group=GROUP, topics=[TOPIC], handler=handle)
