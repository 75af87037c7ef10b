"""Notifications that could not be sent, as a coordinator sees them: their association's only,
with the recipient masked, and a retry that hands the message back to the worker.

An outbox row does not name its association; its idempotency key names what it is about
(``server/notify/outbox.py`` and the modules that call ``deliver``):

- ``appointment:<id>:<kind>[:…]:<channel>`` — an appointment (confirmation, reminder,
  cancellation, waitlist);
- ``callback:<id>:<kind>[:…]:<channel>`` — a call-back request (ack, visio link);
- ``sheet:<id>:<channel>`` — a handoff sheet's link.

Every id there is a 36-character UUID, so the owner is found by an equality on a fixed slice of
the key, in SQL. A message of any other shape belongs to no association and is shown to nobody
(``OWNERS`` is the one place to declare a new family).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from server.events import OutboxWritten, publish
from server.i18n import N_, _
from server.notify.outbox import Channel
from server.store.models import (
    Appointment,
    CallbackRequest,
    HandoffSheet,
    OutboxMessage,
    OutboxStatus,
)

UUID_LENGTH = 36
# Key prefix → the id and association columns of the row the message is about.
OWNERS: dict[str, tuple[InstrumentedAttribute[str], InstrumentedAttribute[int]]] = {
    "appointment:": (Appointment.id, Appointment.association_id),
    "callback:": (CallbackRequest.id, CallbackRequest.association_id),
    "sheet:": (HandoffSheet.id, HandoffSheet.association_id),
}
LIST_LIMIT = 200

KINDS = {
    "appointment:confirmation": N_("Confirmation de rendez-vous"),
    "appointment:reminder": N_("Rappel de rendez-vous"),
    "appointment:cancellation": N_("Annulation de rendez-vous"),
    "appointment:waitlist": N_("Créneau libéré (liste d'attente)"),
    "callback:ack": N_("Accusé de réception d'une demande de rappel"),
    "callback:visio": N_("Lien de visio après un rappel"),
    "sheet:": N_("Lien vers la fiche navette"),
}
CHANNELS = {Channel.EMAIL.value: N_("E-mail"), Channel.SMS.value: N_("SMS")}

_EMAIL = re.compile(r"[^\s<>\"'@:;,]+@([^\s<>\"'@:;,]+)")
_DIGITS = re.compile(r"\+?\d[\d .-]{4,}\d")


def of_association(association_id: int) -> ColumnElement[bool]:
    """The outbox rows about something of this association."""
    key = OutboxMessage.idempotency_key
    return or_(
        *(
            and_(
                key.startswith(prefix),
                exists().where(
                    owner_id == func.substr(key, len(prefix) + 1, UUID_LENGTH),
                    owner_association == association_id,
                ),
            )
            for prefix, (owner_id, owner_association) in OWNERS.items()
        )
    )


def mask_recipient(channel: str, recipient: str) -> str:
    """Enough to recognise a recipient, not to read it: a phone's last 2 digits, an e-mail's
    first letter and domain."""
    if channel == Channel.SMS.value:
        digits = [c for c in recipient if c.isdigit()]
        return "•• •• •• •• " + "".join(digits[-2:]) if len(digits) > 2 else "••"
    local, at, domain = recipient.rpartition("@")
    if not at:
        return "••"
    return f"{local[:1]}•••@{domain}"


def mask_text(text: str) -> str:
    """A transport's error with any e-mail address or phone-like number in it masked (an SMTP
    refusal quotes the address it refused)."""
    text = _EMAIL.sub(lambda m: f"•••@{m.group(1)}", text)
    return _DIGITS.sub(lambda m: "•••" + m.group(0)[-2:], text)


def kind_label(key: str) -> str:
    """What the message was, in French, from its idempotency key."""
    family, _sep, rest = key.partition(":")
    parts = rest.split(":")
    kind = parts[1] if len(parts) > 1 else ""
    label = KINDS.get(f"{family}:{kind}") or KINDS.get(f"{family}:")
    return _(label) if label else _("Message")


@dataclass(frozen=True)
class FailedNotice:
    """A notification given up after its last attempt, as the coordinator's page shows it."""

    id: int
    channel: str
    channel_label: str
    kind: str
    recipient: str  # masked
    created_at: datetime
    last_attempt_at: datetime
    attempts: int
    error: str  # masked


async def list_failed(
    db: AsyncSession, association_id: int, limit: int = LIST_LIMIT
) -> list[FailedNotice]:
    """The association's failed notifications, newest first (at most ``limit``)."""
    rows = await db.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.FAILED, of_association(association_id))
        .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
        .limit(limit)
    )
    return [
        FailedNotice(
            id=row.id,
            channel=row.channel,
            channel_label=_(CHANNELS.get(row.channel, row.channel)),
            kind=kind_label(row.idempotency_key),
            recipient=mask_recipient(row.channel, row.recipient),
            created_at=row.created_at,
            last_attempt_at=row.send_after,
            attempts=row.attempts,
            error=mask_text(row.last_error or ""),
        )
        for row in rows
    ]


async def retry(db: AsyncSession, association_id: int, message_id: int, now: datetime) -> bool:
    """Put a failed message of this association back to pending, due now, with a fresh count of
    attempts (the worker gives up on a message past MAX_ATTEMPTS); whether it was one. The
    worker is woken after the commit (``OutboxWritten``)."""
    result = await db.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == OutboxStatus.FAILED,
            of_association(association_id),
        )
        .values(status=OutboxStatus.PENDING, send_after=now, attempts=0, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    publish(db, OutboxWritten())
    return True
