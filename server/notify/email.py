"""E-mail transport: RFC 5322 messages written to files (default), logged, or sent over SMTP."""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib

from server.notify.base import SendError, spool_path, write_atomically
from server.notify.outbox import Attachment
from server.settings import Settings
from server.store.models import utcnow

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 20.0
QUIT_TIMEOUT_SECONDS = 5.0


class EmailBackend(Protocol):
    """Hands a built e-mail over; raises SendError."""

    async def send(self, message: EmailMessage, *, outbox_id: int) -> None:
        """Deliver or store one message."""
        ...

    async def close(self) -> None:
        """Release connections, if any."""
        ...


def message_id(key: str, sender: str) -> str:
    """A Message-ID derived from the outbox idempotency key: a re-sent message keeps its
    Message-ID, so a duplicate delivery can be recognised downstream."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<outbox.{digest}@{domain}>"


def _add_attachment(message: EmailMessage, attachment: Attachment) -> None:
    parsed = Message()
    parsed["Content-Type"] = attachment.content_type
    maintype, subtype = parsed.get_content_maintype(), parsed.get_content_subtype()
    params = {
        str(name): str(value)
        for name, value in parsed.get_params(header="Content-Type", failobj=[])[1:]
        if name.lower() != "charset"
    }
    if maintype == "text":
        message.add_attachment(
            attachment.content,
            subtype=subtype,
            charset="utf-8",
            filename=attachment.filename,
            params=params,
        )
    else:
        message.add_attachment(
            attachment.content.encode("utf-8"),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
            params=params,
        )


def build_email(
    *,
    key: str,
    sender: str,
    recipient: str,
    subject: str,
    body: str,
    attachments: Iterable[Attachment] = (),
    now: datetime,
) -> EmailMessage:
    """The RFC 5322 message: UTF-8 plain-text body, deterministic Message-ID, attachments."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(key, sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(body, charset="utf-8")
    for attachment in attachments:
        _add_attachment(message, attachment)
    return message


def masked_address(address: str) -> str:
    """An e-mail address fit for logs: the first letter and the domain (no personal data)."""
    local, _sep, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def _summary(message: EmailMessage) -> str:
    # The subject carries only the date; the recipient is masked: logs hold no contact data.
    to = masked_address(str(message["To"]))
    return f"to={to} subject={message['Subject']!r} id={message['Message-ID']}"


class FileEmailBackend:
    """Writes each message as ``<folder>/<timestamp>-<outbox id>.eml`` and logs it (the default,
    so that a demo shows its confirmations without any mail server)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage, *, outbox_id: int) -> None:
        """Write the .eml file."""
        path = spool_path(self.folder, utcnow(), outbox_id, ".eml")
        try:
            await asyncio.to_thread(write_atomically, path, message.as_bytes())
        except OSError as exc:
            raise SendError(f"cannot write {path}: {exc}") from exc
        log.info("e-mail written to %s: %s", path, _summary(message))

    async def close(self) -> None:
        """Nothing to release."""


class ConsoleEmailBackend:
    """Logs each message, body included, and sends nothing."""

    async def send(self, message: EmailMessage, *, outbox_id: int) -> None:
        """Log the message."""
        text = message.get_body(preferencelist=("plain",))
        body = text.get_content() if isinstance(text, EmailMessage) else ""
        log.info("e-mail (not sent, console backend): %s\n%s", _summary(message), body)

    async def close(self) -> None:
        """Nothing to release."""


class SmtpEmailBackend:
    """Sends through an SMTP server with aiosmtplib: STARTTLS, implicit TLS or plain (local
    relay only), with login when a username is set. One connection per message."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: str,
        username: str = "",
        password: str = "",
        local_hostname: str = "localhost",
        timeout: float = SMTP_TIMEOUT_SECONDS,
    ) -> None:
        if tls not in {"starttls", "tls", "none"}:
            raise ValueError(f"SMTP tls must be starttls, tls or none, got {tls!r}")
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        # Naming ourselves avoids socket.getfqdn(), which can hang on a host without reverse DNS.
        self.local_hostname = local_hostname
        self.timeout = timeout

    async def send(self, message: EmailMessage, *, outbox_id: int) -> None:
        """Send over SMTP; returns once the server has accepted the message (250 after DATA)."""
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            local_hostname=self.local_hostname,
            timeout=self.timeout,
        )
        where = f"SMTP {self.host}:{self.port}"
        try:
            await client.connect()
            if self.username:
                await client.login(self.username, self.password)
            await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            client.close()
            raise SendError(
                f"{where} refused the recipient: {detail}", permanent=all(c >= 500 for c in codes)
            ) from exc
        except aiosmtplib.SMTPDataError as exc:
            client.close()
            raise SendError(
                f"{where} refused the message: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # Sender refused, authentication failed, 4xx: the configuration or the server must
            # change, not the message; retrying later is right.
            client.close()
            raise SendError(f"{where} answered {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise SendError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        # Accepted: from here on nothing may raise, or the worker would send the message again.
        try:
            await asyncio.wait_for(client.quit(), QUIT_TIMEOUT_SECONDS)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()
        log.info("e-mail sent through %s: %s", where, _summary(message))

    async def close(self) -> None:
        """Nothing kept open between messages."""


def email_backend(settings: Settings) -> EmailBackend:
    """The backend named by EMAIL_BACKEND."""
    if settings.email_backend == "smtp":
        return SmtpEmailBackend(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            local_hostname=urlsplit(settings.base_url).hostname or "localhost",
        )
    if settings.email_backend == "console":
        return ConsoleEmailBackend()
    if settings.email_backend == "file":
        return FileEmailBackend(settings.data_dir / "mail")
    raise ValueError(f"unknown EMAIL_BACKEND {settings.email_backend!r}")
