"""Borrower messages on real servers: SMTP against a local aiosmtpd server, SMS against a local
HTTP server, and the `notification.borrower.requested` consumer end to end through the outbox."""

from __future__ import annotations

import asyncio
import time
import uuid
from email import message_from_bytes
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from eventually import eventually_async
from http_receiver import receiver

from offchain.eventbus import publish, run_relay
from offchain.persistence.notifications import BorrowerNotification
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.rails.messaging import (
    HttpSmsSender,
    OutgoingMessage,
    PermanentSendError,
    SmtpSender,
    TransientSendError,
)
from offchain.services.notifications.app import create_app

pytestmark = pytest.mark.asyncio
MONEY = {"value": 1_500_000, "currency": "NGN"}


class Mailbox:
    """aiosmtpd handler: keeps what it accepts; refuses recipients at `refused.example`."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "message": message_from_bytes(envelope.content),
            }
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(free_port):
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


def smtp_sender(controller) -> SmtpSender:
    return SmtpSender(
        host=controller.hostname, port=controller.port, sender="CaaS <no-reply@caas.test>", starttls=False
    )


def outgoing(to: str | None, reference: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        reference=reference or f"n-{uuid.uuid4()}", to=to, subject="Repayment due", body="Please pay."
    )


# -- adapters against real servers --------------------------------------------------------------


async def test_smtp__message_reaches_the_server(smtp_server):
    controller, mailbox = smtp_server
    reference = f"n-{uuid.uuid4()}"
    provider_id = await smtp_sender(controller).send(outgoing("ada@borrower.example", reference))
    [received] = mailbox.messages
    assert received["to"] == ["ada@borrower.example"]
    assert received["message"]["Subject"] == "Repayment due"
    assert received["message"]["X-Caas-Notification-Id"] == reference
    assert received["message"].get_payload().strip() == "Please pay."
    assert provider_id == received["message"]["Message-ID"]


async def test_smtp__refused_recipient_is_permanent(smtp_server):
    controller, mailbox = smtp_server
    with pytest.raises(PermanentSendError):
        await smtp_sender(controller).send(outgoing("nobody@refused.example"))
    with pytest.raises(PermanentSendError):
        await smtp_sender(controller).send(outgoing(None))
    assert mailbox.messages == []


async def test_smtp__server_down_is_transient(free_port):
    sender = SmtpSender(host="127.0.0.1", port=free_port(), sender="x@caas.test", starttls=False, timeout_s=2)
    with pytest.raises(TransientSendError):
        await sender.send(outgoing("ada@borrower.example"))


async def test_sms__posts_the_message_and_reads_the_provider_id():
    with receiver() as rec:
        async with httpx.AsyncClient() as http:
            sender = HttpSmsSender(http=http, url=rec.url + "/ok/sms", sender="CaaS", api_key="sms-key-1")
            provider_id = await sender.send(outgoing("+2348012345678", "n-1"))
    [request] = rec.requests
    assert request.headers["Authorization"] == "Bearer sms-key-1"
    assert request.json() == {
        "to": "+2348012345678",
        "from": "CaaS",
        "message": "Please pay.",
        "reference": "n-1",
    }
    assert provider_id == "msg-1"


async def test_sms__4xx_permanent_5xx_and_unreachable_transient(free_port):
    with receiver() as rec:
        async with httpx.AsyncClient() as http:
            with pytest.raises(PermanentSendError, match="400"):
                await HttpSmsSender(http=http, url=rec.url + "/bad", sender="CaaS").send(outgoing("+234801"))
            with pytest.raises(TransientSendError, match="500"):
                await HttpSmsSender(http=http, url=rec.url + "/down", sender="CaaS").send(outgoing("+234801"))
            unreachable = HttpSmsSender(http=http, url=f"http://127.0.0.1:{free_port()}/sms", sender="CaaS")
            with pytest.raises(TransientSendError):
                await unreachable.send(outgoing("+234801"))
            with pytest.raises(PermanentSendError):
                await HttpSmsSender(http=http, url=rec.url + "/ok", sender="CaaS").send(outgoing(None))


# -- the consumer, end to end -------------------------------------------------------------------


@pytest.fixture
def sms_receiver():
    with receiver() as rec:
        yield rec


@pytest_asyncio.fixture
async def service(settings: Settings, db: Database, redis, smtp_server, sms_receiver):
    controller, _ = smtp_server
    tuned = settings.model_copy(
        update={
            "notifications": settings.notifications.model_copy(
                update={
                    "email_adapter": "smtp",
                    "smtp_host": controller.hostname,
                    "smtp_port": controller.port,
                    "smtp_starttls": False,
                    "sms_adapter": "http",
                    "sms_url": sms_receiver.url + "/ok/sms",
                }
            )
        }
    )
    app = create_app(tuned)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app):
        relay = asyncio.create_task(run_relay(db, redis, tuned.events, stop))
        yield app
        stop.set()
        await relay


async def request_message(
    db: Database, notification_id: str, *, channel: str, template: str, data: dict
) -> None:
    """What collections publishes (offchain.services.collections.usecases), field for field."""
    partner = uuid.UUID(int=1)
    async with db.worker_session() as session:
        await publish(
            session,
            "notification.borrower.requested",
            {
                "notification_id": notification_id,
                "partner_id": str(partner),
                "loan_id": str(uuid.uuid4()),
                "sme_user_id": "sme-user-7",
                "channel": channel,
                "template": template,
                "data": data,
            },
            key=notification_id,
            partner_id=partner,
        )


async def notification(db: Database, notification_id: str) -> BorrowerNotification | None:
    async with db.worker_session() as session:
        return await session.get(BorrowerNotification, notification_id)


async def settled(db: Database, notification_id: str, within: float = 20.0) -> BorrowerNotification:
    return await eventually_async(
        lambda: notification(db, notification_id),
        what=f"notification {notification_id} settled",
        within_s=within,
        every=0.05,
        accept=lambda row: row is not None and row.status in ("sent", "rejected"),
        describe=lambda row: repr(row and row.status),
    )


def due_data(**extra) -> dict:
    return {
        "chain_loan_id": "0x" + "ab" * 32,
        "business_date": "2026-11-24",
        "installment": 1,
        "due_date": "2026-12-01",
        "days_before": 7,
        "amount_due": MONEY,
        **extra,
    }


async def test_consumer__sms_sent_once_per_notification_id(service, db, sms_receiver):
    note = f"note-{uuid.uuid4()}"
    await request_message(
        db, note, channel="sms", template="repayment_due", data=due_data(phone="+2348000000001")
    )
    row = await settled(db, note)
    assert row.status == "sent" and row.provider_ref == "msg-1" and row.attempts == 1
    # the producer publishes it again (its COB re-ran): handled, and nothing more is sent
    duplicates = service.state.notification_metrics.borrower_messages.labels("sms", "duplicate")
    before = duplicates._value.get()
    await request_message(
        db, note, channel="sms", template="repayment_due", data=due_data(phone="+2348000000001")
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if duplicates._value.get() > before:
            break
        await asyncio.sleep(0.05)
    assert duplicates._value.get() == before + 1
    [sms] = sms_receiver.to("/ok/sms")
    assert sms.json()["to"] == "+2348000000001" and sms.json()["reference"] == note
    assert "NGN 15,000.00" in sms.json()["message"] and "2026-12-01" in sms.json()["message"]


async def test_consumer__email_over_smtp(service, db, smtp_server):
    _, mailbox = smtp_server
    note = f"note-{uuid.uuid4()}"
    data = {"installment": 1, "days_past_due": 9, "bucket": "1-30", "amount_due": MONEY, "outstanding": MONEY}
    await request_message(
        db, note, channel="email", template="collection_initiated", data={**data, "email": "b@x.example"}
    )
    row = await settled(db, note)
    assert row.status == "sent"
    [mail] = [m for m in mailbox.messages if m["message"]["X-Caas-Notification-Id"] == note]
    assert mail["to"] == ["b@x.example"]
    assert "9 day(s) past due" in mail["message"].get_payload()


async def test_consumer__provider_outage_retried_by_the_bus(settings, db, redis, sms_receiver, smtp_server):
    flaky = sms_receiver.url + f"/flaky/1/{uuid.uuid4().hex}"
    tuned = settings.model_copy(
        update={
            "notifications": settings.notifications.model_copy(
                update={"sms_adapter": "http", "sms_url": flaky}
            )
        }
    )
    app = create_app(tuned)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app):
        relay = asyncio.create_task(run_relay(db, redis, tuned.events, stop))
        note = f"note-{uuid.uuid4()}"
        await request_message(
            db, note, channel="sms", template="repayment_due", data=due_data(phone="+2348000000002")
        )
        row = await settled(db, note)
        stop.set()
        await relay
    assert row.status == "sent" and row.attempts == 2
    assert len(sms_receiver.to(flaky.removeprefix(sms_receiver.url))) == 2


@pytest.mark.parametrize(
    ("channel", "template", "data", "reason"),
    [
        ("sms", "birthday_card", due_data(phone="+234"), "unknown template"),
        ("sms", "repayment_due", due_data(), "no phone"),
        ("sms", "collection_initiated", {"phone": "+234"}, "needs"),
        ("pigeon", "repayment_due", due_data(), "not available"),
    ],
)
async def test_consumer__refusals_are_final_and_send_nothing(
    service, db, sms_receiver, channel, template, data, reason
):
    note = f"note-{uuid.uuid4()}"
    await request_message(db, note, channel=channel, template=template, data=data)
    row = await settled(db, note)
    assert row.status == "rejected" and reason in row.last_error
    assert sms_receiver.to("/ok/sms") == []


async def test_consumer__log_channel_in_development(service, db):
    note = f"note-{uuid.uuid4()}"
    await request_message(db, note, channel="log", template="repayment_due", data=due_data())
    assert (await settled(db, note)).status == "sent"
    metrics = (
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=service), base_url="http://n").get(
            "/metrics"
        )
    ).text
    assert 'caas_borrower_messages_total{channel="log",outcome="sent"}' in metrics


async def test_messenger__recipient_from_the_sme_platform_when_the_request_names_none(
    db, smtp_server, free_port
):
    """Collections sends no contact details: the SME platform is asked at send time (nothing stored)."""
    from simulator_support import ServerThread

    from offchain.eventbus.messages import Event
    from offchain.rails.simulator.app import create_app as simulator_app
    from offchain.rails.simulator.config import SimulatorConfig
    from offchain.rails.sme.contacts import SmeContactsClient
    from offchain.services.notifications.borrower import BorrowerMessenger

    controller, mailbox = smtp_server
    data = {"installment": 1, "days_past_due": 9, "bucket": "1-30", "amount_due": MONEY, "outstanding": MONEY}
    with ServerThread(simulator_app(SimulatorConfig()), free_port()) as simulator:
        async with httpx.AsyncClient() as http:
            messenger = BorrowerMessenger(
                db, {"email": smtp_sender(controller)}, contacts=SmeContactsClient(simulator.url, http=http)
            )

            def request(user: str) -> Event:
                return Event(
                    id=1,
                    topic="notification.borrower.requested",
                    payload={
                        "notification_id": f"note-{uuid.uuid4()}",
                        "partner_id": str(uuid.uuid4()),
                        "loan_id": str(uuid.uuid4()),
                        "sme_user_id": user,
                        "channel": "email",
                        "template": "collection_initiated",
                        "data": data,
                    },
                )

            assert await messenger.handle(request("bright-bakery-ltd")) == "sent"
            contact = (await http.get(f"{simulator.url}/sme/users/bright-bakery-ltd/contact")).json()
            assert [m["to"] for m in mailbox.messages] == [[contact["email"]]]
            # a user the SME platform does not know: refused for good, nothing sent
            assert await messenger.handle(request("unknown-user-1")) == "rejected"
            assert len(mailbox.messages) == 1
