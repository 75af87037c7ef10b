"""Transports of the outbox: e-mail (file, console, SMTP) and SMS (file, console, Brevo).

The booking code writes messages (French text) into the outbox; the worker hands each one to
``Notifier.send``, which builds the wire form and passes it to the backend chosen by settings.
"""

from __future__ import annotations

from datetime import datetime

from server.metrics import NOTIFICATIONS_FAILED, NOTIFICATIONS_SENT
from server.notify.base import SendError
from server.notify.email import EmailBackend, build_email, email_backend
from server.notify.outbox import Attachment, Channel
from server.notify.sms import Sms, SmsBackend, sms_backend
from server.settings import Settings
from server.store.models import OutboxMessage

__all__ = ["EmailBackend", "Notifier", "SendError", "Sms", "SmsBackend"]


class Notifier:
    """Sends one outbox message with the backend of its channel."""

    def __init__(self, *, email: EmailBackend, sms: SmsBackend, email_from: str) -> None:
        self.email = email
        self.sms = sms
        self.email_from = email_from

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        """The backends named by EMAIL_BACKEND and SMS_BACKEND."""
        return cls(
            email=email_backend(settings), sms=sms_backend(settings), email_from=settings.email_from
        )

    async def send(self, message: OutboxMessage, now: datetime) -> None:
        """Hand the message over; raises SendError (``permanent`` when retrying cannot help).
        Counted in ``permanence_notifications_sent`` / ``_failed`` by channel."""
        try:
            await self._send(message, now)
        except SendError as exc:
            NOTIFICATIONS_FAILED.labels(message.channel, str(exc.permanent).lower()).inc()
            raise
        NOTIFICATIONS_SENT.labels(message.channel).inc()

    async def _send(self, message: OutboxMessage, now: datetime) -> None:
        if message.channel == Channel.EMAIL:
            try:
                attachments = [Attachment.from_json(item) for item in message.attachments]
                email = build_email(
                    key=message.idempotency_key,
                    sender=self.email_from,
                    recipient=message.recipient,
                    subject=message.subject or "",
                    body=message.body,
                    attachments=attachments,
                    now=now,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise SendError(
                    f"outbox message {message.id} cannot be built into an e-mail: {exc!r}",
                    permanent=True,
                ) from exc
            await self.email.send(email, outbox_id=message.id)
        elif message.channel == Channel.SMS:
            await self.sms.send(Sms(message.recipient, message.body, outbox_id=message.id))
        else:
            raise SendError(f"unknown outbox channel {message.channel!r}", permanent=True)

    async def close(self) -> None:
        """Close the backends' connections."""
        await self.email.close()
        await self.sms.close()
