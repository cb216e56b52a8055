"""The interface every borrower message channel implements, and the log channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from offchain.platform.logging import get_logger

log = get_logger(__name__)


class SendError(Exception):
    pass


class TransientSendError(SendError):
    """The provider was unreachable or failed on its side: trying again later may work."""


class PermanentSendError(SendError):
    """The provider refused this message (bad address, rejected content): retrying won't help."""


@dataclass(frozen=True)
class OutgoingMessage:
    reference: str  # the notification id: providers that dedupe get it as their reference
    to: str | None
    subject: str
    body: str


class MessageSender(Protocol):
    name: str

    async def send(self, message: OutgoingMessage) -> str | None:
        """Deliver to the provider; returns the provider's message id when it gives one."""
        ...


class LogSender:
    """Development channel: one structured log line per message, with no address in it."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    async def send(self, message: OutgoingMessage) -> str | None:
        log.info(
            "borrower_message.logged",
            channel=self.name,
            reference=message.reference,
            subject=message.subject,
            body=message.body,
        )
        return None
