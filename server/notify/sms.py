"""SMS transport: written to files (default), logged, or sent through Brevo's transactional SMS API.

Brevo (https://developers.brevo.com/docs/transactional-sms-endpoints): ``POST /v3/transactionalSMS/
send`` with the header ``api-key`` and a JSON body ``{"sender", "recipient", "content", "type":
"transactional", "unicodeEnabled"}``; a 2xx answer means accepted. The older ``…/transactionalSMS/
sms`` takes the same body but Brevo has deprecated it; ``BrevoSmsBackend(path=…)`` can select it.
The recipient is sent as the international number without "+" (``33612345678``), the form of
Brevo's own example; Brevo documents it only as "mobile number with the country code".
Brevo has no idempotency key for SMS: a retry after an unanswered request may send twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import phonenumbers

from server.notify.base import SendError, spool_path, write_atomically
from server.settings import Settings
from server.store.models import utcnow

log = logging.getLogger(__name__)

BREVO_BASE_URL = "https://api.brevo.com"
BREVO_SMS_PATH = "/v3/transactionalSMS/send"
BREVO_TIMEOUT_SECONDS = 15.0
_EXCERPT = 200

# GSM 03.38 basic set and extension table: text outside it must go out as Unicode (UCS-2).
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "\f^{}\\[~]|€"
)
# The extension table: each of these takes two septets (an escape, then the character).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# One part holds 160 GSM septets or 70 UCS-2 units; a longer message is cut into parts of 153 or
# 67 (the rest is the header that joins them again), each billed as one SMS.
_SINGLE = {False: 160, True: 70}
_PART = {False: 153, True: 67}


@dataclass(frozen=True)
class Sms:
    """One text message: an E.164 number (``+33612345678``) and its content."""

    recipient: str
    content: str
    outbox_id: int


class SmsBackend(Protocol):
    """Hands an SMS over; raises SendError."""

    async def send(self, sms: Sms) -> None:
        """Deliver or store one SMS."""
        ...

    async def close(self) -> None:
        """Release connections, if any."""
        ...


def international_digits(number: str) -> str:
    """``+33 6 12 34 56 78`` → ``33612345678``; SendError (permanent) if it is no valid number."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise SendError(f"not an international phone number: {exc}", permanent=True) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise SendError("not a valid phone number", permanent=True)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


def needs_unicode(text: str) -> bool:
    """Whether the text has characters outside the GSM 7-bit alphabet (ê, ç, ’, œ…)."""
    return any(char not in GSM7 for char in text)


def sms_parts(text: str) -> int:
    """How many SMS a text is sent (and billed) as: French fits GSM 7-bit (é, è, à are in it),
    Arabic, Dari, Ukrainian and Romanian (ș, ț, ă) go as UCS-2, two and a half times shorter."""
    unicode = needs_unicode(text)
    if unicode:
        units = len(text.encode("utf-16-le")) // 2
    else:
        units = len(text) + sum(char in GSM7_EXTENSION for char in text)
    if units <= _SINGLE[unicode]:
        return 1
    return -(-units // _PART[unicode])


def _masked(number: str) -> str:
    return number[:-4] + "····" if len(number) > 6 else "····"


class FileSmsBackend:
    """Writes each SMS as ``<folder>/<timestamp>-<outbox id>.txt`` and logs it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, sms: Sms) -> None:
        """Write the .txt file."""
        path = spool_path(self.folder, utcnow(), sms.outbox_id, ".txt")
        data = f"To: {sms.recipient}\n\n{sms.content}\n".encode()
        try:
            await asyncio.to_thread(write_atomically, path, data)
        except OSError as exc:
            raise SendError(f"cannot write {path}: {exc}") from exc
        log.info(
            "SMS written to %s: to=%s, %d characters",
            path,
            _masked(sms.recipient),
            len(sms.content),
        )

    async def close(self) -> None:
        """Nothing to release."""


class ConsoleSmsBackend:
    """Logs each SMS and sends nothing."""

    async def send(self, sms: Sms) -> None:
        """Log the SMS."""
        log.info("SMS (not sent, console backend): to=%s\n%s", _masked(sms.recipient), sms.content)

    async def close(self) -> None:
        """Nothing to release."""


class BrevoSmsBackend:
    """Brevo transactional SMS over HTTPS; ``base_url`` is a parameter so tests can play Brevo."""

    def __init__(
        self,
        *,
        api_key: str,
        sender: str,
        base_url: str = BREVO_BASE_URL,
        path: str = BREVO_SMS_PATH,
        timeout: float = BREVO_TIMEOUT_SECONDS,
    ) -> None:
        if not api_key:
            raise ValueError("the Brevo SMS backend needs an API key")
        self._api_key = api_key
        self.sender = sender
        self.url = base_url.rstrip("/") + path
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"BrevoSmsBackend(url={self.url!r}, sender={self.sender!r})"  # never the key

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[api key]")

    async def send(self, sms: Sms) -> None:
        """POST the SMS; SendError with the HTTP status and a body excerpt on a non-2xx answer."""
        recipient = international_digits(sms.recipient)
        payload = {
            "sender": self.sender,
            "recipient": recipient,
            "content": sms.content,
            "type": "transactional",
            "unicodeEnabled": needs_unicode(sms.content),
        }
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"api-key": self._api_key, "accept": "application/json"}
        try:
            async with self._session.post(self.url, json=payload, headers=headers) as response:
                text = await response.text(errors="replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(
                f"Brevo SMS request to {self.url} failed: {type(exc).__name__}: "
                f"{self._scrub(str(exc))}"
            ) from None
        if not 200 <= status < 300:
            excerpt = self._scrub(" ".join(text.split()))[:_EXCERPT]
            # 400: Brevo refuses this message (number, content): retrying cannot help. 401/402/403
            # (key, credits, sender) and 429/5xx may be fixed by waiting or by the administrator.
            raise SendError(f"Brevo answered HTTP {status}: {excerpt}", permanent=status == 400)
        log.info(
            "SMS accepted by Brevo: to=%s, %d characters, answer %s",
            _masked(recipient),
            len(sms.content),
            self._scrub(text)[:_EXCERPT],
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def sms_backend(settings: Settings) -> SmsBackend:
    """The backend named by SMS_BACKEND."""
    if settings.sms_backend == "brevo":
        return BrevoSmsBackend(
            api_key=settings.sms_api_key.get_secret_value(), sender=settings.sms_sender
        )
    if settings.sms_backend == "console":
        return ConsoleSmsBackend()
    if settings.sms_backend == "file":
        return FileSmsBackend(settings.data_dir / "sms")
    raise ValueError(f"unknown SMS_BACKEND {settings.sms_backend!r}")
