"""Tell a person something by e-mail and/or SMS: one notice, written to the outbox in the
caller's transaction (the worker sends it after the commit).

Every notice we send (appointment messages, call-back acknowledgements and visio links, handoff
sheet links) goes through ``deliver``, so the rule of who gets what lives in one place: an
e-mail when there is an address, an SMS when the phone is a mobile (a landline takes none).

SMS cost money and land on a phone whose owner may never have asked for them (nobody verifies
the number typed on a public form), so every SMS passes ``SmsGate`` when it is written, where
the person can still be told:

- the number must belong to PHONE_REGIONS (forms refuse others; this catches older data);
- at most SMS_PER_RECIPIENT_PER_DAY SMS per number and per day (the day it is due, in
  TIMEZONE), counted in the outbox across every flow, so that booking and cancelling in a loop
  cannot flood a phone;
- the global budget BUDGET_SMS (``RateLimiter.spend("sms")``), which raises the alert.

An SMS that does not pass is stored ``withheld`` with its reason (never sent; the booking or
request itself goes on), counted in ``permanence_sms_withheld{reason}``; the e-mail of the same
notice still goes where an address was given, and ``outbox.withheld_sms`` lets the
confirmation page say it plainly.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from server.contact import can_receive_sms, in_regions
from server.metrics import SMS_WITHHELD
from server.notify import outbox
from server.notify.outbox import Attachment, Channel
from server.notify.sms import sms_parts
from server.settings import Settings

log = logging.getLogger(__name__)


class SmsBudget(Protocol):
    """The global SMS budget: ``RateLimiter.spend("sms")`` (server/ratelimit.py), shared by
    every server process through Redis when REDIS_URL is set."""

    async def spend(self, family: Literal["sms"], cost: int = 1) -> bool:
        """Count ``cost`` SMS: True while the budget lasts; False (and an alert) once spent."""
        ...


class Withheld(enum.StrEnum):
    """Why an SMS was not sent."""

    REGION = "region"
    RECIPIENT_CAP = "recipient_cap"
    BUDGET = "budget"


@dataclass(frozen=True)
class SmsGate:
    """The rules every SMS passes when it is written: allowed regions, the per-recipient daily
    cap and the global budget (None only where no server runs: the CLI, tests of rules)."""

    regions: tuple[str, ...]
    per_recipient_per_day: int
    timezone: str
    budget: SmsBudget | None

    @classmethod
    def of(cls, settings: Settings, budget: SmsBudget | None) -> SmsGate:
        """The gate of these settings (PHONE_REGIONS, SMS_PER_RECIPIENT_PER_DAY, TIMEZONE)."""
        return cls(
            regions=settings.phone_regions,
            per_recipient_per_day=settings.sms_per_recipient_per_day,
            timezone=settings.timezone,
            budget=budget,
        )

    def day_of(self, moment: datetime) -> tuple[datetime, datetime]:
        """The local day (TIMEZONE) around ``moment``, as its first and next day's first
        instants (23 or 25 hours on the days the clocks change)."""
        zone = ZoneInfo(self.timezone)
        day = moment.astimezone(zone).date()
        start = datetime.combine(day, time(0), tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        return start, end

    async def check(
        self, db: AsyncSession, phone: str, send_after: datetime, parts: int = 1
    ) -> Withheld | None:
        """None if one more SMS to ``phone`` due at ``send_after`` may be written (and then
        counts its ``parts`` against the global budget: what the provider bills); else why not."""
        if not in_regions(phone, self.regions):
            return Withheld.REGION
        await outbox.hold_recipient(db, phone)
        start, end = self.day_of(send_after)
        if await outbox.sms_count(db, phone, start, end) >= self.per_recipient_per_day:
            return Withheld.RECIPIENT_CAP
        if self.budget is not None and not await self.budget.spend("sms", parts):
            return Withheld.BUDGET
        return None


@dataclass(frozen=True)
class Delivery:
    """What became of a notice: whether an e-mail and an SMS are on their way, and why its SMS
    will not be sent, if so."""

    email: bool = False
    sms: bool = False
    sms_withheld: Withheld | None = None

    @property
    def reaches(self) -> bool:
        """Whether the person gets the notice at all (by e-mail or SMS)."""
        return self.email or self.sms


async def deliver(
    db: AsyncSession,
    *,
    gate: SmsGate,
    phone: str | None,
    email: str | None,
    key: Callable[[Channel], str],
    subject: str,
    body: str,
    sms: str,
    send_after: datetime,
    attachments: Sequence[Attachment] = (),
    appointment_id: str | None = None,
) -> Delivery:
    """Enqueue the e-mail (`subject`, `body`, `attachments`) and the SMS (`sms`) of one notice,
    each under its idempotency key `key(channel)`; the SMS only if it passes the gate."""
    if email:
        await outbox.enqueue(
            db,
            key=key(Channel.EMAIL),
            channel=Channel.EMAIL,
            recipient=email,
            subject=subject,
            body=body,
            send_after=send_after,
            attachments=attachments,
            appointment_id=appointment_id,
        )
    if not phone or not can_receive_sms(phone):
        return Delivery(email=bool(email))
    sms_key = key(Channel.SMS)
    if await outbox.exists(db, sms_key):
        # Written already (idempotent): neither counted nor spent again.
        return Delivery(email=bool(email), sms=True)
    withheld = await gate.check(db, phone, send_after, sms_parts(sms))
    if withheld is not None:
        SMS_WITHHELD.labels(withheld.value).inc()
        # The kind of notice, never the number: ``appointment:<id>:confirmation:sms``.
        log.warning("SMS withheld (%s), e-mail %s: %s", withheld, bool(email), sms_key)
    await outbox.enqueue(
        db,
        key=sms_key,
        channel=Channel.SMS,
        recipient=phone,
        subject=None,
        body=sms,
        send_after=send_after,
        appointment_id=appointment_id,
        withheld=None if withheld is None else withheld.value,
    )
    return Delivery(email=bool(email), sms=withheld is None, sms_withheld=withheld)
