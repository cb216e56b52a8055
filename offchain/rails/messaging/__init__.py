"""Borrower message channels behind one small interface (MessageSender): SMTP email, an HTTP SMS
API, and a log channel for development. offchain.services.notifications.borrower picks one per
channel from settings."""

from offchain.rails.messaging.base import (
    LogSender,
    MessageSender,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from offchain.rails.messaging.sms import HttpSmsSender
from offchain.rails.messaging.smtp import SmtpSender

__all__ = [
    "HttpSmsSender",
    "LogSender",
    "MessageSender",
    "OutgoingMessage",
    "PermanentSendError",
    "SendError",
    "SmtpSender",
    "TransientSendError",
]
