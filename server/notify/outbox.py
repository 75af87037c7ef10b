"""The notification outbox: messages written in the same transaction as their cause, then claimed,
sent and marked by the worker (server/worker.py).

Delivery is at least once with a fence against the ordinary duplicates:

- ``enqueue`` is idempotent: the UNIQUE idempotency key turns a second enqueue into a no-op.
- ``claim_batch`` moves messages to ``sending`` with a lease and counts the attempt, atomically, so
  two workers never hold the same message. ``attempts`` doubles as a fencing token: ``mark_sent``
  and ``mark_failed`` only touch a row still held under the attempt they were claimed with, so a
  worker whose lease expired cannot overwrite the outcome of the worker that took over.
- A message whose worker died is claimed again once its lease has expired: nothing is lost.

Idempotency keys of appointment notifications follow ``appointment_key()``,
``appointment:<id>:<kind>[:<part>…]:<channel>``, which lets ``cancel_for_appointment`` select
pending messages by kind.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ScalarSelect, String, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from server.events import OutboxWritten, publish
from server.store.engine import begin_write
from server.store.models import OutboxMessage, OutboxStatus

# Delay before attempt n + 1 after the n-th attempt failed; the last value repeats.
BACKOFF: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
)
MAX_ATTEMPTS = 8  # 7 retries over about 16 hours, then the message is given up as `failed`
DEFAULT_LEASE = timedelta(minutes=5)


def _length(column: str) -> int:
    """The declared length of a String column of the outbox table."""
    kind = OutboxMessage.__table__.c[column].type
    assert isinstance(kind, String) and kind.length is not None
    return kind.length


_KEY_LENGTH = _length("idempotency_key")
_RECIPIENT_LENGTH = _length("recipient")
_SUBJECT_LENGTH = _length("subject")
_ERROR_LENGTH = _length("last_error")


class Channel(enum.StrEnum):
    """How a message travels."""

    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True)
class Attachment:
    """A text attachment of an e-mail, e.g. an .ics calendar (``text/calendar; method=PUBLISH``)."""

    filename: str
    content_type: str
    content: str

    def as_json(self) -> dict[str, str]:
        """The JSON form stored in OutboxMessage.attachments."""
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "content": self.content,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Attachment:
        """Read back the stored JSON form."""
        return cls(data["filename"], data["content_type"], data["content"])


def _kind_prefix(appointment_id: str, kind: str, *parts: str) -> str:
    for piece in (appointment_id, kind, *parts):
        if not piece or ":" in piece:
            raise ValueError(f"key parts must be non-empty and contain no ':', got {piece!r}")
    return ":".join(("appointment", appointment_id, kind, *parts)) + ":"


def appointment_key(appointment_id: str, kind: str, channel: Channel | str, *parts: str) -> str:
    """The idempotency key of an appointment notification, e.g.
    ``appointment:<id>:reminder:1440:20261201T1300Z:email``: put the appointment start among the
    ``parts`` of a reminder, so that a rescheduled appointment gets new keys."""
    return _kind_prefix(appointment_id, kind, *parts) + Channel(channel).value


def _insert_for(db: AsyncSession) -> type[postgresql.Insert] | type[sqlite.Insert]:
    """The dialect's INSERT construct, which knows ON CONFLICT."""
    name = db.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.Insert
    if name == "sqlite":
        return sqlite.Insert
    raise RuntimeError(f"the outbox supports SQLite and PostgreSQL, not {name}")


async def enqueue(
    db: AsyncSession,
    *,
    key: str,
    channel: Channel | str,
    recipient: str,
    subject: str | None,
    body: str,
    send_after: datetime,
    attachments: Iterable[Attachment] = (),
    appointment_id: str | None = None,
    withheld: str | None = None,
) -> OutboxMessage | None:
    """Add a message in the caller's transaction; None if a message with this key already exists.

    ``withheld`` (a reason such as ``recipient_cap``) stores the message as never to be sent
    (status ``withheld``): the person can be told, and an operator sees what was held back.

    ``INSERT … ON CONFLICT (idempotency_key) DO NOTHING`` rather than a savepoint around a plain
    INSERT: no exception, no savepoint, and on PostgreSQL a concurrent insert of the same key waits
    for the other transaction and then does nothing (or inserts if that one rolled back), instead of
    aborting. The worker is woken after the commit (``OutboxWritten``) rather than at its next
    poll.
    """
    channel = Channel(channel)
    files = [a.as_json() for a in attachments]
    if not key or len(key) > _KEY_LENGTH:
        raise ValueError(f"idempotency key must be 1 to {_KEY_LENGTH} characters, got {key!r}")
    if not recipient or len(recipient) > _RECIPIENT_LENGTH:
        raise ValueError(f"recipient must be 1 to {_RECIPIENT_LENGTH} characters")
    if channel is Channel.EMAIL and not subject:
        raise ValueError("an e-mail needs a subject")
    if subject is not None and len(subject) > _SUBJECT_LENGTH:
        raise ValueError(f"subject is longer than {_SUBJECT_LENGTH} characters")
    if channel is Channel.SMS and (subject is not None or files):
        raise ValueError("an SMS has neither subject nor attachments")
    if send_after.tzinfo is None:
        raise ValueError("send_after must be a timezone-aware datetime")
    if not body:
        raise ValueError("a message needs a body")
    statement = (
        _insert_for(db)(OutboxMessage)
        .values(
            idempotency_key=key,
            channel=channel.value,
            recipient=recipient,
            subject=subject,
            body=body,
            attachments=files,
            send_after=send_after,
            appointment_id=appointment_id,
            status=OutboxStatus.PENDING if withheld is None else OutboxStatus.WITHHELD,
            last_error=None if withheld is None else f"withheld: {withheld}"[:_ERROR_LENGTH],
        )
        .on_conflict_do_nothing(index_elements=[OutboxMessage.idempotency_key])
        .returning(OutboxMessage)
    )
    message = (await db.scalars(statement)).one_or_none()
    if message is not None and withheld is None:
        publish(db, OutboxWritten())
    return message


async def exists(db: AsyncSession, key: str) -> bool:
    """Whether a message with this idempotency key was already written."""
    found = await db.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key))
    return found is not None


async def hold_recipient(db: AsyncSession, recipient: str) -> None:
    """Serialise, until the transaction ends, the writers of messages to this recipient, so
    that two concurrent requests cannot both pass a per-recipient cap. PostgreSQL: a
    transaction-level advisory lock on a hash of the recipient; SQLite: the write lock
    (BEGIN IMMEDIATE), which every writer takes anyway."""
    if db.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(b"outbox-recipient:" + recipient.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        await db.execute(select(func.pg_advisory_xact_lock(key)))
    else:
        await begin_write(db)


async def sms_count(db: AsyncSession, recipient: str, start: datetime, end: datetime) -> int:
    """SMS to this number due in ``[start, end)`` that are, or will be, sent (cancelled and
    withheld ones do not count; failed ones may have cost, they do)."""
    count = await db.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.recipient == recipient,
            OutboxMessage.channel == Channel.SMS.value,
            OutboxMessage.send_after >= start,
            OutboxMessage.send_after < end,
            OutboxMessage.status.not_in([OutboxStatus.CANCELLED, OutboxStatus.WITHHELD]),
        )
    )
    return int(count or 0)


async def withheld_sms(
    db: AsyncSession, *, appointment_id: str | None = None, key_prefix: str | None = None
) -> str | None:
    """Why an SMS of this appointment (or of these keys) was held back, if one was: the
    reason stored by ``enqueue(withheld=…)`` of the newest such message."""
    query = select(OutboxMessage.last_error).where(
        OutboxMessage.channel == Channel.SMS.value,
        OutboxMessage.status == OutboxStatus.WITHHELD,
    )
    if appointment_id is not None:
        query = query.where(OutboxMessage.appointment_id == appointment_id)
    if key_prefix is not None:
        query = query.where(OutboxMessage.idempotency_key.startswith(key_prefix, autoescape=True))
    if appointment_id is None and key_prefix is None:
        raise ValueError("name the appointment or the key prefix")
    error = await db.scalar(query.order_by(OutboxMessage.id.desc()).limit(1))
    return error.removeprefix("withheld: ") if error else None


async def cancel_for_appointment(db: AsyncSession, appointment_id: str, *kinds: str) -> int:
    """Cancel the appointment's messages of these kinds not yet claimed; how many were cancelled.

    Kinds are required so that cancelling the reminders of a cancelled appointment cannot also
    cancel the cancellation notice enqueued in the same transaction. A message already being sent
    (``sending``) is left alone: it is on its way.
    """
    if not kinds:
        raise ValueError("name the kinds to cancel: cancel_for_appointment(db, id, 'reminder')")
    prefixes = [_kind_prefix(appointment_id, kind) for kind in kinds]
    same_kind = [OutboxMessage.idempotency_key.startswith(p, autoescape=True) for p in prefixes]
    result = await db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.appointment_id == appointment_id)
        .where(OutboxMessage.status == OutboxStatus.PENDING)
        .where(or_(*same_kind))
        .values(status=OutboxStatus.CANCELLED, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Due and pending, or held by a worker whose lease has run out."""
    return or_(
        and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.send_after <= now),
        and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until < now),
    )


async def claim_batch(
    db: AsyncSession, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
) -> list[OutboxMessage]:
    """Take up to ``limit`` due messages for this worker until ``now + lease``; commit right after.

    Claiming sets ``status='sending'``, ``lease_until=now+lease`` and ``attempts=attempts+1``.

    - PostgreSQL, two statements in the caller's transaction: ``SELECT id … ORDER BY send_after
      LIMIT n FOR UPDATE SKIP LOCKED`` locks the rows it picks and passes over rows another claimer
      holds (a row whose claim already committed is re-checked on its newest version under READ
      COMMITTED and dropped); then ``UPDATE … WHERE id IN (<those ids>) RETURNING``, on rows this
      transaction has locked. Not one ``UPDATE … WHERE id IN (SELECT … SKIP LOCKED LIMIT n)``:
      the planner may rescan that subquery (nested loop), and each rescan skips the rows the same
      statement has just updated, so it can claim more than ``n`` rows (seen here: 10 for 4).
    - SQLite has no row locks (SQLAlchemy silently drops FOR UPDATE), so one statement:
      ``UPDATE … WHERE id IN (SELECT id … LIMIT n) AND <claimable> RETURNING``. A statement runs
      under the database's single write lock, so the subquery (evaluated once, into a list) and
      the SET see no other writer in between; a second claimer waits for the lock (busy_timeout),
      then sees these rows ``sending`` with a live lease and takes others. The repeated
      <claimable> condition keeps a row from being claimed twice even if the two parts were run
      separately.
    """
    if limit <= 0:
        return []
    candidates = (
        select(OutboxMessage.id)
        .where(_claimable(now))
        .order_by(OutboxMessage.send_after, OutboxMessage.id)
        .limit(limit)
    )
    chosen: Sequence[int] | ScalarSelect[int]
    if db.get_bind().dialect.name == "postgresql":
        chosen = (await db.scalars(candidates.with_for_update(skip_locked=True))).all()
        if not chosen:
            return []
    else:
        chosen = candidates.scalar_subquery()
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(chosen))
        .where(_claimable(now))
        .values(
            status=OutboxStatus.SENDING,
            lease_until=now + lease,
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    claimed = list((await db.scalars(statement)).all())
    claimed.sort(key=lambda message: (message.send_after, message.id))
    return claimed


def _held(message: OutboxMessage) -> ColumnElement[bool]:
    """The row is still held under the claim this object came from."""
    return and_(
        OutboxMessage.id == message.id,
        OutboxMessage.status == OutboxStatus.SENDING,
        OutboxMessage.attempts == message.attempts,
    )


async def mark_sent(db: AsyncSession, message: OutboxMessage, now: datetime) -> bool:
    """Record the delivery; False if this claim was lost (lease expired and re-claimed)."""
    result = await db.execute(
        update(OutboxMessage)
        .where(_held(message))
        .values(status=OutboxStatus.SENT, sent_at=now, lease_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def retry_at(attempts: int, now: datetime, max_attempts: int = MAX_ATTEMPTS) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None to give up."""
    if attempts >= max_attempts:
        return None
    return now + BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


async def mark_failed(
    db: AsyncSession, message: OutboxMessage, error: str, *, retry_at: datetime | None
) -> bool:
    """Put the message back for ``retry_at``, or give it up as failed when None; False if this
    claim was lost."""
    values: dict[str, object] = {"lease_until": None, "last_error": error[:_ERROR_LENGTH]}
    if retry_at is None:
        values["status"] = OutboxStatus.FAILED
    else:
        values.update(status=OutboxStatus.PENDING, send_after=retry_at)
    result = await db.execute(
        update(OutboxMessage)
        .where(_held(message))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release(db: AsyncSession, messages: Sequence[OutboxMessage]) -> int:
    """Hand claimed but unsent messages back at once (clean shutdown), not counting the attempt."""
    released = 0
    for message in messages:
        result = await db.execute(
            update(OutboxMessage)
            .where(_held(message))
            .values(
                status=OutboxStatus.PENDING,
                lease_until=None,
                attempts=OutboxMessage.attempts - 1,
            )
            .execution_options(synchronize_session=False)
        )
        released += int(result.rowcount)  # type: ignore[attr-defined]
    return released
