"""Email over SMTP (stdlib smtplib in a worker thread): STARTTLS and login when configured."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

from offchain.rails.messaging.base import OutgoingMessage, PermanentSendError, TransientSendError


class SmtpSender:
    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s

    def _build(self, message: OutgoingMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Message-ID"] = make_msgid(idstring=message.reference.replace("@", "_")[:60])
        email["X-Caas-Notification-Id"] = message.reference
        email.set_content(message.body)
        return email

    def _send_blocking(self, email: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls()
                smtp.ehlo()
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(email)

    async def send(self, message: OutgoingMessage) -> str | None:
        if not message.to or "@" not in message.to:
            raise PermanentSendError("no email address to send to")
        email = self._build(message)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._send_blocking, email), timeout=self.timeout_s * 3)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
            code = getattr(error, "smtp_code", None)
            # 5yz is the server saying no for good; 4yz (and refusals without a code) may pass later
            if isinstance(code, int) and 500 <= code < 600:
                raise PermanentSendError(f"smtp refused: {error}") from error
            if isinstance(error, smtplib.SMTPRecipientsRefused):
                codes = [c for c, _ in error.recipients.values()]
                if codes and all(500 <= c < 600 for c in codes):
                    raise PermanentSendError(f"smtp refused the recipient: {error}") from error
            raise TransientSendError(f"smtp: {error}") from error
        except (smtplib.SMTPException, OSError, TimeoutError) as error:
            raise TransientSendError(f"smtp: {error!r}") from error
        return str(email["Message-ID"])
