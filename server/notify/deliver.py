"""Tell a person something by e-mail and/or SMS: one notice, written to the outbox in the
caller's transaction (the worker sends it after the commit).

Every notice we send (appointment messages, call-back acknowledgements and visio links, handoff
sheet links) goes through ``deliver``, so the rule of who gets what lives in one place: an
e-mail when there is an address, an SMS when the phone is a mobile (a landline takes none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from server.contact import can_receive_sms
from server.notify import outbox
from server.notify.outbox import Attachment, Channel


async def deliver(
    db: AsyncSession,
    *,
    phone: str | None,
    email: str | None,
    key: Callable[[Channel], str],
    subject: str,
    body: str,
    sms: str,
    send_after: datetime,
    attachments: Sequence[Attachment] = (),
    appointment_id: str | None = None,
) -> None:
    """Enqueue the e-mail (`subject`, `body`, `attachments`) and the SMS (`sms`) of one notice,
    each under its idempotency key `key(channel)`."""
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
    if phone and can_receive_sms(phone):
        await outbox.enqueue(
            db,
            key=key(Channel.SMS),
            channel=Channel.SMS,
            recipient=phone,
            subject=None,
            body=sms,
            send_after=send_after,
            appointment_id=appointment_id,
        )
