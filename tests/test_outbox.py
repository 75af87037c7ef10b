"""The notification outbox and its worker, on SQLite and PostgreSQL, with real transports: a real
SMTP server (aiosmtpd), a local HTTP server playing Brevo, files, and the worker as a real
process that is killed and restarted."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db import make_sessionmaker
from server.notify import Notifier, SendError, outbox
from server.notify.email import (
    ConsoleEmailBackend,
    FileEmailBackend,
    SmtpEmailBackend,
    message_id,
)
from server.notify.outbox import Attachment, Channel
from server.notify.sms import BrevoSmsBackend, ConsoleSmsBackend, FileSmsBackend, Sms
from server.runtime import SESSIONMAKER_KEY
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import (
    Appointment,
    Association,
    Motif,
    OutboxMessage,
    OutboxStatus,
    Role,
    User,
    VisitKind,
    utcnow,
)
from server.worker import Worker
from tests.conftest import Running, free_port
from tests.smtp_server import LocalSmtpServer, RecordingHandler

ROOT = Path(__file__).resolve().parent.parent
SENDER = "Permanence numérique <permanence@asso.example>"
ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//visio-permanence//FR\r\nMETHOD:PUBLISH\r\n"
    "BEGIN:VEVENT\r\nUID:rdv-1@asso.example\r\nDTSTAMP:20261130T090000Z\r\n"
    "DTSTART:20261201T130000Z\r\nDTEND:20261201T140000Z\r\nSUMMARY:Rendez-vous visio\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
CALENDAR = Attachment("rendez-vous.ics", "text/calendar; method=PUBLISH", ICS)
BODY = "Bonjour Zoé,\n\nVotre rendez-vous est confirmé : mardi 1er décembre à 14 h.\n"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the fresh test database."""
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine, settings)
    await engine.dispose()


@pytest.fixture
async def smtp() -> AsyncIterator[LocalSmtpServer]:
    """A real SMTP server on 127.0.0.1 and an ephemeral port."""
    async with LocalSmtpServer(RecordingHandler()) as server:
        yield server


def smtp_notifier(smtp: LocalSmtpServer, tmp_path: Path) -> Notifier:
    """E-mail over SMTP (no TLS) to the local server; SMS to files."""
    return Notifier(
        email=SmtpEmailBackend(host="127.0.0.1", port=smtp.port, tls="none", timeout=5),
        sms=FileSmsBackend(tmp_path / "sms"),
        email_from=SENDER,
    )


async def add_email(
    db: AsyncSession, key: str, *, send_after: datetime | None = None, **extra: Any
) -> OutboxMessage | None:
    """Enqueue a French e-mail due now (or at ``send_after``)."""
    return await outbox.enqueue(
        db,
        key=key,
        channel=Channel.EMAIL,
        recipient=extra.pop("recipient", "zoe@example.org"),
        subject=extra.pop("subject", "Votre rendez-vous est confirmé"),
        body=BODY,
        send_after=send_after or utcnow() - timedelta(seconds=1),
        **extra,
    )


async def statuses(sessionmaker: async_sessionmaker[AsyncSession]) -> Counter[str]:
    """How many outbox rows are in each status."""
    async with sessionmaker() as db:
        rows = await db.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        return Counter({str(status): int(count) for status, count in rows.all()})


async def one(sessionmaker: async_sessionmaker[AsyncSession], key: str) -> OutboxMessage:
    """The outbox row with this key, fresh from the database."""
    async with sessionmaker() as db:
        return (
            await db.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        ).one()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Poll a condition held in another process or in the database (no event to await there)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


# --- enqueue -----------------------------------------------------------------------------------


async def test_enqueue_twice_with_one_key_keeps_one_message(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as db:
        first = await add_email(db, "k1", attachments=[CALENDAR])
        second = await add_email(db, "k1", subject="Autre sujet")
    assert first is not None and first.id and first.status == OutboxStatus.PENDING
    assert first.attachments == [CALENDAR.as_json()] and first.attempts == 0
    assert second is None
    async with sessionmaker.begin() as db:
        assert await add_email(db, "k1") is None  # in a later transaction too
    row = await one(sessionmaker, "k1")
    assert row.subject == "Votre rendez-vous est confirmé"
    assert await statuses(sessionmaker) == {"pending": 1}


async def test_concurrent_enqueues_of_one_key_insert_exactly_one(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async def attempt() -> bool:
        async with sessionmaker.begin() as db:
            return await add_email(db, "same-key") is not None

    results = await asyncio.gather(*(attempt() for _ in range(12)))
    assert results.count(True) == 1
    assert await statuses(sessionmaker) == {"pending": 1}


async def test_enqueue_belongs_to_the_callers_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as db, db.begin():
        assert await add_email(db, "rolled-back") is not None
        await db.rollback()
    assert await statuses(sessionmaker) == {}
    async with sessionmaker.begin() as db:
        assert await add_email(db, "rolled-back") is not None


async def test_enqueue_refuses_malformed_messages(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    async with sessionmaker.begin() as db:
        with pytest.raises(ValueError, match="subject"):
            await outbox.enqueue(
                db,
                key="a",
                channel="email",
                recipient="x@y.fr",
                subject=None,
                body="b",
                send_after=now,
            )
        with pytest.raises(ValueError, match="neither subject nor attachments"):
            await outbox.enqueue(
                db,
                key="b",
                channel="sms",
                recipient="+33612345678",
                subject="s",
                body="b",
                send_after=now,
            )
        with pytest.raises(ValueError, match="timezone-aware"):
            await add_email(db, "c", send_after=datetime(2026, 12, 1, 13))
        with pytest.raises(ValueError, match="'fax'"):
            await outbox.enqueue(
                db, key="d", channel="fax", recipient="x", subject=None, body="b", send_after=now
            )
        with pytest.raises(ValueError, match="idempotency key"):
            await add_email(db, "k" * 201)


# --- claims ------------------------------------------------------------------------------------


async def test_concurrent_claimers_take_disjoint_messages(
    database_url: str, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as db:
        for n in range(120):
            await add_email(db, f"m{n}")
    now = utcnow()
    engines = [make_engine(database_url) for _ in range(6)]

    async def claimer(maker: async_sessionmaker[AsyncSession]) -> list[int]:
        taken: list[int] = []
        while True:
            async with maker.begin() as db:
                batch = await outbox.claim_batch(db, now, 7, timedelta(minutes=5))
            if not batch:
                return taken
            assert len(batch) <= 7
            taken += [message.id for message in batch]

    try:
        results = await asyncio.gather(*(claimer(make_sessionmaker(e, settings)) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    taken = [message_id for result in results for message_id in result]
    assert len(taken) == len(set(taken)) == 120
    async with sessionmaker() as db:
        rows = (await db.scalars(select(OutboxMessage))).all()
    # Each row was updated by exactly one claim: a second claim would have made attempts 2.
    assert {(row.status, row.attempts) for row in rows} == {(OutboxStatus.SENDING, 1)}


@pytest.mark.parametrize("backend", ["postgresql"])  # FOR UPDATE SKIP LOCKED is PostgreSQL's
async def test_postgresql_claim_skips_rows_locked_by_an_uncommitted_claim(
    database_url: str, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as db:
        for n in range(10):
            await add_email(db, f"m{n}")
    now = utcnow()
    other_engine = make_engine(database_url)
    try:
        async with sessionmaker.begin() as first:
            held = await outbox.claim_batch(first, now, 4)
            # `first` has not committed: its 4 rows are locked and still look pending to others.
            async with make_sessionmaker(other_engine, settings).begin() as second:
                # Without SKIP LOCKED this would wait for `first` forever (a deadlock here).
                others = await asyncio.wait_for(outbox.claim_batch(second, now, 10), 5)
    finally:
        await other_engine.dispose()
    assert len(held) == 4 and len(others) == 6
    assert {m.id for m in held}.isdisjoint(m.id for m in others)


@pytest.mark.parametrize("backend", ["sqlite"])  # the single-writer lock is SQLite's
async def test_sqlite_claim_waits_for_the_writer_then_takes_other_rows(
    database_url: str, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as db:
        for n in range(10):
            await add_email(db, f"m{n}")
    now = utcnow()
    other_engine = make_engine(database_url)

    async def second_claim() -> list[OutboxMessage]:
        async with make_sessionmaker(other_engine, settings).begin() as db:
            return await outbox.claim_batch(db, now, 10)

    try:
        async with sessionmaker.begin() as first:
            held = await outbox.claim_batch(first, now, 4)
            waiting = asyncio.create_task(second_claim())
            # No event tells "blocked on the lock": check that it has not finished meanwhile.
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done, "SQLite let a second writer in while the first claim was open"
        others = await waiting
    finally:
        await other_engine.dispose()
    assert len(held) == 4 and len(others) == 6
    assert {m.id for m in held}.isdisjoint(m.id for m in others)


async def test_an_expired_lease_is_claimed_again_and_fences_out_the_old_claim(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as db:
        await add_email(db, "k")
    t0 = utcnow()
    async with sessionmaker.begin() as db:
        (lost,) = await outbox.claim_batch(db, t0, 5, timedelta(seconds=60))
    async with sessionmaker.begin() as db:
        assert await outbox.claim_batch(db, t0 + timedelta(seconds=59), 5) == []
    async with sessionmaker.begin() as db:
        (taken,) = await outbox.claim_batch(db, t0 + timedelta(seconds=61), 5)
    assert taken.id == lost.id and (lost.attempts, taken.attempts) == (1, 2)
    async with sessionmaker.begin() as db:
        assert not await outbox.mark_sent(db, lost, utcnow())
        assert not await outbox.mark_failed(db, lost, "late", retry_at=None)
        assert await outbox.mark_sent(db, taken, utcnow())
    row = await one(sessionmaker, "k")
    assert row.status == OutboxStatus.SENT and row.sent_at is not None and row.lease_until is None


async def test_messages_not_yet_due_or_finished_are_not_claimed(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    async with sessionmaker.begin() as db:
        await add_email(db, "later", send_after=now + timedelta(hours=1))
        # Due relative to `now`, not to the clock: a stalled machine must not change it.
        await add_email(db, "due", send_after=now - timedelta(seconds=1))
    async with sessionmaker.begin() as db:
        (due,) = await outbox.claim_batch(db, now, 10)
        assert due.idempotency_key == "due"
        assert await outbox.mark_sent(db, due, now)
    async with sessionmaker.begin() as db:
        (later,) = await outbox.claim_batch(db, now + timedelta(hours=2), 10)
        assert later.idempotency_key == "later"


# --- cancellation ------------------------------------------------------------------------------


async def make_appointment(db: AsyncSession, n: int) -> str:
    """A booked appointment (with its association, volunteer and motif)."""
    association = Association(name=f"Asso {n}")
    db.add(association)
    await db.flush()
    volunteer = User(
        association_id=association.id, email=f"v{n}@example.org", name="V", role=Role.VOLUNTEER
    )
    motif = Motif(association_id=association.id, name="CAF")
    db.add_all([volunteer, motif])
    await db.flush()
    start = utcnow() + timedelta(days=2)
    appointment = Appointment(
        association_id=association.id,
        volunteer_id=volunteer.id,
        motif_id=motif.id,
        kind=VisitKind.FIRST,
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        first_name="Zoé",
        manage_token_hash=f"{n:064d}",
    )
    db.add(appointment)
    await db.flush()
    return appointment.id


async def test_cancelling_reminders_leaves_other_kinds_and_messages_in_flight(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = outbox.appointment_key
    async with sessionmaker.begin() as db:
        mine, other = await make_appointment(db, 1), await make_appointment(db, 2)
        for appointment in (mine, other):
            await add_email(
                db,
                key(appointment, "confirmation", "email"),
                send_after=utcnow() + timedelta(hours=1),
                appointment_id=appointment,
            )
            for minutes in ("1440", "60"):
                for channel in Channel:
                    await outbox.enqueue(
                        db,
                        key=key(appointment, "reminder", channel, minutes, "20261201T1300Z"),
                        channel=channel,
                        recipient="zoe@example.org" if channel == "email" else "+33612345678",
                        subject="Rappel" if channel == "email" else None,
                        body="Rappel de votre rendez-vous",
                        send_after=utcnow() + timedelta(days=1, minutes=int(minutes)),
                        appointment_id=appointment,
                    )
        # A reminder already due and claimed by a worker is on its way: it is not touched.
        await add_email(db, key(mine, "reminder", "email", "5"), appointment_id=mine)
    async with sessionmaker.begin() as db:
        (in_flight,) = await outbox.claim_batch(db, utcnow(), 10)
    async with sessionmaker.begin() as db:
        await add_email(db, key(mine, "cancellation", "email"), appointment_id=mine)
        assert await outbox.cancel_for_appointment(db, mine, "reminder") == 4
        with pytest.raises(ValueError, match="name the kinds"):
            await outbox.cancel_for_appointment(db, mine)
    async with sessionmaker() as db:
        rows = (await db.scalars(select(OutboxMessage))).all()
    by_key = {row.idempotency_key: row.status for row in rows}
    assert by_key[key(mine, "confirmation", "email")] == OutboxStatus.PENDING
    assert by_key[key(mine, "cancellation", "email")] == OutboxStatus.PENDING
    assert by_key[in_flight.idempotency_key] == OutboxStatus.SENDING
    cancelled = {k for k, status in by_key.items() if status == OutboxStatus.CANCELLED}
    assert cancelled == {
        key(mine, "reminder", channel, minutes, "20261201T1300Z")
        for channel in Channel
        for minutes in ("1440", "60")
    }
    async with sessionmaker.begin() as db:
        later = await outbox.claim_batch(db, utcnow() + timedelta(days=30), 50)
    assert not {m.idempotency_key for m in later} & cancelled


def test_appointment_keys_cannot_be_confused() -> None:
    assert (
        outbox.appointment_key("a1", "reminder", "sms", "60", "20261201T1300Z")
        == "appointment:a1:reminder:60:20261201T1300Z:sms"
    )
    with pytest.raises(ValueError, match="no ':'"):
        outbox.appointment_key("a1", "reminder:60", "sms")
    with pytest.raises(ValueError, match="'pigeon'"):
        outbox.appointment_key("a1", "reminder", "pigeon")


# --- retries -----------------------------------------------------------------------------------


def test_backoff_grows_then_stays_capped_and_gives_up() -> None:
    now = utcnow()
    delays = [outbox.retry_at(n, now, max_attempts=10) for n in range(1, 10)]
    assert [d - now for d in delays if d] == [
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=3),
        timedelta(hours=6),
        timedelta(hours=6),
        timedelta(hours=6),
        timedelta(hours=6),
    ]
    assert outbox.retry_at(outbox.MAX_ATTEMPTS, now) is None


async def test_a_refusing_smtp_server_gets_retries_with_backoff_then_the_message_fails(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    smtp.handler.refuse_data = "451 4.3.0 Try again later"
    clock = Clock()
    worker = Worker(
        sessionmaker, smtp_notifier(smtp, tmp_path), poll_seconds=1, max_attempts=4, clock=clock
    )
    async with sessionmaker.begin() as db:
        await add_email(db, "k", send_after=clock.now)
    for attempt, delay in enumerate(outbox.BACKOFF[:3], start=1):
        assert await worker.run_once() == 1
        row = await one(sessionmaker, "k")
        assert (row.status, row.attempts) == (OutboxStatus.PENDING, attempt)
        assert row.send_after == clock.now + delay and row.lease_until is None
        assert row.last_error and "451" in row.last_error and "Try again later" in row.last_error
        clock.now += delay - timedelta(seconds=1)
        assert await worker.run_once() == 0  # not due yet
        clock.now += timedelta(seconds=1)
    assert await worker.run_once() == 1
    row = await one(sessionmaker, "k")
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 4)
    assert row.last_error and "451" in row.last_error
    assert smtp.handler.data_count == 4 and smtp.handler.received == []
    clock.now += timedelta(days=2)
    assert await worker.run_once() == 0


async def test_a_refused_recipient_fails_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    smtp.handler.refuse_rcpt = "550 5.1.1 No such user"
    worker = Worker(sessionmaker, smtp_notifier(smtp, tmp_path), poll_seconds=1)
    async with sessionmaker.begin() as db:
        await add_email(db, "k", recipient="personne@example.org")
    assert await worker.run_once() == 1
    row = await one(sessionmaker, "k")
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 1)
    assert row.last_error and "550" in row.last_error and "No such user" in row.last_error


async def test_a_message_whose_workers_keep_dying_is_given_up_without_sending(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    clock = Clock()
    async with sessionmaker.begin() as db:
        await add_email(db, "k", send_after=clock.now)
    for _death in range(2):  # claimed, then the worker died: no outcome recorded
        async with sessionmaker.begin() as db:
            assert await outbox.claim_batch(db, clock.now, 1, timedelta(seconds=10))
        clock.now += timedelta(seconds=11)
    worker = Worker(
        sessionmaker, smtp_notifier(smtp, tmp_path), poll_seconds=1, max_attempts=2, clock=clock
    )
    assert await worker.run_once() == 1
    row = await one(sessionmaker, "k")
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 3)
    assert row.last_error and "gave up" in row.last_error
    assert smtp.handler.data_count == 0


# --- transports --------------------------------------------------------------------------------


async def test_file_backends_write_the_messages_and_log_them(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server.notify")
    assert (settings.email_backend, settings.sms_backend) == ("file", "file")  # the defaults
    notifier = Notifier.from_settings(settings)
    worker = Worker(sessionmaker, notifier, poll_seconds=1)
    async with sessionmaker.begin() as db:
        mail = await add_email(db, "confirmation-1", attachments=[CALENDAR])
        sms = await outbox.enqueue(
            db,
            key="sms-1",
            channel="sms",
            recipient="+262692123456",
            subject=None,
            body="Rappel : rendez-vous demain à 14 h. Lien : https://asso.example/j/abc",
            send_after=utcnow(),
        )
    assert mail and sms
    assert await worker.run_once() == 2
    await notifier.close()

    (eml,) = (settings.data_dir / "mail").iterdir()
    assert eml.name.endswith(f"-{mail.id}.eml") and eml.name[:8].isdigit()
    raw = eml.read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")  # RFC 5322 line endings
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["From"] == settings.email_from and parsed["To"] == "zoe@example.org"
    assert parsed["Subject"] == "Votre rendez-vous est confirmé"
    assert parsed["Message-ID"] == message_id("confirmation-1", settings.email_from)
    assert parsed["Date"].datetime.tzinfo is not None
    body = parsed.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    assert body.get_content().replace("\r\n", "\n") == BODY
    assert body.get_content_charset() == "utf-8"
    (ics,) = parsed.iter_attachments()
    assert isinstance(ics, EmailMessage)
    assert ics.get_content_type() == "text/calendar" and ics.get_param("method") == "PUBLISH"
    assert ics.get_filename() == "rendez-vous.ics" and ics.get_content() == ICS

    (txt,) = (settings.data_dir / "sms").iterdir()
    assert txt.name.endswith(f"-{sms.id}.txt")
    assert txt.read_text(encoding="utf-8") == f"To: +262692123456\n\n{sms.body}\n"

    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        str(eml) in line and "z***@example.org" in line and "Votre rendez-vous est confirmé" in line
        for line in logged
    )
    assert any(str(txt) in line and "+26269212····" in line for line in logged)
    # Logs hold no contact data: the full address and number stay in the files only.
    assert not any("zoe@example.org" in line or "+262692123456" in line for line in logged)
    assert await statuses(sessionmaker) == {"sent": 2}


async def test_console_backends_only_log(
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server.notify")
    notifier = Notifier(email=ConsoleEmailBackend(), sms=ConsoleSmsBackend(), email_from=SENDER)
    async with sessionmaker.begin() as db:
        await add_email(db, "k")
    assert await Worker(sessionmaker, notifier, poll_seconds=1).run_once() == 1
    (line,) = [r.getMessage() for r in caplog.records if "console backend" in r.getMessage()]
    assert "z***@example.org" in line and "Votre rendez-vous est confirmé" in line
    assert BODY.strip() in line


async def test_an_email_reaches_a_real_smtp_server_with_headers_body_and_calendar(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    async with sessionmaker.begin() as db:
        message = await add_email(db, "confirmation-7", attachments=[CALENDAR])
    assert message
    assert await Worker(sessionmaker, smtp_notifier(smtp, tmp_path), poll_seconds=1).run_once()
    (got,) = smtp.handler.received
    assert got.mail_from == "permanence@asso.example" and got.rcpt_tos == ["zoe@example.org"]
    assert got.message["From"] == SENDER and got.message["To"] == "zoe@example.org"
    assert got.message["Subject"] == "Votre rendez-vous est confirmé"
    assert got.message["Message-ID"] == message_id("confirmation-7", SENDER)
    assert got.message["Message-ID"].endswith("@asso.example>")
    assert got.message["Auto-Submitted"] == "auto-generated"
    body = got.message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    assert body.get_content().replace("\r\n", "\n") == BODY
    (ics,) = got.message.iter_attachments()
    assert isinstance(ics, EmailMessage)
    assert ics.get_content_type() == "text/calendar" and ics.get_param("method") == "PUBLISH"
    assert ics.get_content() == ICS
    row = await one(sessionmaker, "confirmation-7")
    assert row.status == OutboxStatus.SENT and row.attempts == 1 and row.sent_at is not None


async def test_an_unreachable_smtp_server_is_retried(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    notifier = Notifier(
        email=SmtpEmailBackend(host="127.0.0.1", port=free_port(), tls="none", timeout=2),
        sms=FileSmsBackend(tmp_path),
        email_from=SENDER,
    )
    async with sessionmaker.begin() as db:
        await add_email(db, "k")
    assert await Worker(sessionmaker, notifier, poll_seconds=1).run_once() == 1
    row = await one(sessionmaker, "k")
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.last_error and row.last_error.startswith("SMTP 127.0.0.1:")


class FakeBrevo:
    """A local HTTP server that plays Brevo's transactional SMS endpoint."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, CIMultiDict[str], Any]] = []
        self.answer: tuple[int, str] = (201, '{"messageId": 1511882900176220}')
        self.stall = False
        self.unstall = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, request.headers.copy(), await request.json()))
        if self.stall:
            await self.unstall.wait()
        status, text = self.answer
        return web.Response(status=status, text=text, content_type="application/json")

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def brevo() -> AsyncIterator[FakeBrevo]:
    """Brevo's SMS endpoint on 127.0.0.1 and an ephemeral port."""
    fake = FakeBrevo()
    app = web.Application()
    app.router.add_post("/v3/transactionalSMS/send", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    fake.unstall.set()
    await fake.server.close()


API_KEY = "xkeysib-0123456789abcdef-TESTKEY"


async def test_brevo_adapter_sends_the_documented_request(
    brevo: FakeBrevo, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    sms = BrevoSmsBackend(api_key=API_KEY, sender="Permanence", base_url=brevo.url)
    notifier = Notifier(email=FileEmailBackend(tmp_path), sms=sms, email_from=SENDER)
    content = "Rappel : votre rendez-vous est demain à 14 h. À bientôt !"
    async with sessionmaker.begin() as db:
        await outbox.enqueue(
            db,
            key="sms-1",
            channel="sms",
            recipient="+590690001122",
            subject=None,
            body=content,
            send_after=utcnow(),
        )
    try:
        assert await Worker(sessionmaker, notifier, poll_seconds=1).run_once() == 1
        await sms.send(Sms("+33612345678", "Rendez-vous demain a 14h", outbox_id=2))
    finally:
        await notifier.close()
    (path, headers, payload), (_, _, plain) = brevo.requests
    assert path == "/v3/transactionalSMS/send"
    assert headers["api-key"] == API_KEY and headers["Content-Type"] == "application/json"
    assert payload == {
        "sender": "Permanence",
        "recipient": "590690001122",
        "content": content,
        "type": "transactional",
        "unicodeEnabled": True,  # "À" is outside the GSM 7-bit alphabet
    }
    assert plain["recipient"] == "33612345678" and plain["unicodeEnabled"] is False
    assert (await one(sessionmaker, "sms-1")).status == OutboxStatus.SENT
    assert API_KEY not in repr(sms)


async def test_brevo_errors_carry_status_and_excerpt_but_never_the_key(
    brevo: FakeBrevo,
) -> None:
    sms = BrevoSmsBackend(api_key=API_KEY, sender="Permanence", base_url=brevo.url, timeout=0.5)
    message = Sms("+33612345678", "Bonjour", outbox_id=1)
    try:
        brevo.answer = (400, f'{{"code": "invalid_parameter", "message": "bad key {API_KEY}"}}')
        with pytest.raises(SendError) as refused:
            await sms.send(message)
        assert refused.value.permanent
        assert "HTTP 400" in str(refused.value) and "invalid_parameter" in str(refused.value)
        assert API_KEY not in str(refused.value)

        brevo.answer = (503, "Service Unavailable " + "x" * 1000)
        with pytest.raises(SendError) as unavailable:
            await sms.send(message)
        assert not unavailable.value.permanent and "HTTP 503" in str(unavailable.value)
        assert len(str(unavailable.value)) < 300

        brevo.stall = True
        with pytest.raises(SendError, match="Timeout") as slow:
            await sms.send(message)
        assert not slow.value.permanent
        brevo.unstall.set()

        requests = len(brevo.requests)
        with pytest.raises(SendError, match="not a valid phone number") as invalid:
            await sms.send(Sms("+3361234", "Bonjour", outbox_id=1))
        assert invalid.value.permanent and len(brevo.requests) == requests
    finally:
        await sms.close()

    closed = BrevoSmsBackend(
        api_key=API_KEY, sender="Permanence", base_url=f"http://127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(SendError, match="failed") as unreachable:
            await closed.send(message)
        assert not unreachable.value.permanent and API_KEY not in str(unreachable.value)
    finally:
        await closed.close()


# --- the worker in the app, and its shutdown ---------------------------------------------------


async def test_the_apps_worker_sends_at_once_when_an_outbox_write_commits(
    running: Running,
) -> None:
    # Through the app's own sessions: their committed OutboxWritten wakes its worker.
    async with running.app[SESSIONMAKER_KEY].begin() as db:
        message = await add_email(db, "welcome")
    assert message
    mail = running.settings.data_dir / "mail"

    def files() -> list[Path]:  # not the .tmp file the backend renames when it is complete
        return [f for f in mail.iterdir() if f.suffix == ".eml"] if mail.exists() else []

    async def written() -> bool:
        return bool(files())

    # Polling every OUTBOX_POLL_SECONDS (5 s) would take longer than this.
    await eventually(written, "the .eml file", within=3)
    (eml,) = files()
    assert eml.name.endswith(f"-{message.id}.eml")

    async def marked() -> bool:
        return (await one(running.sessionmaker, "welcome")).status == OutboxStatus.SENT

    await eventually(marked, "the row marked sent", within=3)


async def test_stopping_finishes_the_current_message_and_hands_the_rest_back(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    async with sessionmaker.begin() as db:
        for n in range(3):
            await add_email(db, f"m{n}", send_after=utcnow() - timedelta(seconds=10 - n))
    smtp.handler.hold_data = 1
    worker = Worker(sessionmaker, smtp_notifier(smtp, tmp_path), poll_seconds=60, batch_size=3)
    task = asyncio.create_task(worker.run())
    await smtp.handler.held.wait()
    worker.stop()
    smtp.handler.release.set()
    await asyncio.wait_for(task, 5)
    assert [r.message["Message-ID"] for r in smtp.handler.received] == [message_id("m0", SENDER)]
    first, *rest = [await one(sessionmaker, f"m{n}") for n in range(3)]
    assert first.status == OutboxStatus.SENT
    assert [(m.status, m.attempts, m.lease_until) for m in rest] == [
        (OutboxStatus.PENDING, 0, None)
    ] * 2


# --- kill and restart a real worker process ----------------------------------------------------


async def start_worker(
    database_url: str, smtp: LocalSmtpServer, tmp_path: Path, name: str
) -> asyncio.subprocess.Process:
    """``python -m server.worker`` as a process: SMTP to the local server, 2 s leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERMANENCE_")}
    env.update(
        PERMANENCE_DATA_DIR=str(tmp_path / "worker"),
        PERMANENCE_DATABASE_URL=database_url,
        PERMANENCE_SECRET_KEY="test-secret-key-" + "x" * 32,
        PERMANENCE_EMAIL_BACKEND="smtp",
        PERMANENCE_EMAIL_FROM=SENDER,
        PERMANENCE_SMTP_HOST="127.0.0.1",
        PERMANENCE_SMTP_PORT=str(smtp.port),
        PERMANENCE_SMTP_TLS="none",
        PERMANENCE_OUTBOX_POLL_SECONDS="1",
        PERMANENCE_LOG_LEVEL="INFO",
    )
    log = (tmp_path / f"{name}.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.worker",
            "--batch-size=5",
            "--lease-seconds=2",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        log.close()  # the child has its own copy


def logs(tmp_path: Path) -> str:
    """The workers' output, for failure messages."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))


async def test_killing_and_restarting_the_worker_mid_batch_sends_each_message_exactly_once(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    # Kill point: while the server holds the 13th DATA, unanswered (the worker's 3rd batch is
    # messages 11-15). The worker starts a message only after committing the previous one as
    # sent, so at that instant messages 1-12 are delivered AND recorded, 13 is in flight but not
    # accepted, 14-15 are claimed but untouched. This is the real guarantee: a message the server
    # accepted and we recorded is never sent again, and a claimed message whose worker died is
    # taken over once its lease expires (13-15), so nothing is lost. The other kill point (after
    # the server's 250, before our commit) cannot avoid a duplicate; the next test shows that it
    # is then recognisable by its Message-ID.
    handler = RecordingHandler(delay=0.05)
    handler.hold_data = 13
    handler.abort_held = True
    keys = [f"message-{n:02d}" for n in range(30)]
    async with sessionmaker.begin() as db:
        for n, key in enumerate(keys):
            await add_email(db, key, send_after=utcnow() - timedelta(seconds=60 - n))
    async with LocalSmtpServer(handler) as smtp:
        first = await start_worker(database_url, smtp, tmp_path, "worker-1")
        try:
            await asyncio.wait_for(handler.held.wait(), 20)
        except TimeoutError:
            first.kill()
            raise AssertionError(logs(tmp_path)) from None
        first.kill()  # SIGKILL: no clean-up of any kind
        await first.wait()
        handler.release.set()
        assert len(handler.received) == 12
        assert (await statuses(sessionmaker))["sent"] == 12, logs(tmp_path)

        second = await start_worker(database_url, smtp, tmp_path, "worker-2")
        try:
            await asyncio.wait_for(handler.wait_for(30), 20)

            async def all_sent() -> bool:
                return await statuses(sessionmaker) == {"sent": 30}

            await eventually(all_sent, "30 rows sent", within=10)
        except (TimeoutError, AssertionError):
            second.kill()
            raise AssertionError(logs(tmp_path)) from None
        second.terminate()  # SIGTERM: a clean stop
        assert await asyncio.wait_for(second.wait(), 10) == 0, logs(tmp_path)
    delivered = Counter(handler.message_ids())
    assert delivered == Counter({message_id(key, SENDER): 1 for key in keys})
    async with sessionmaker() as db:
        rows = (await db.scalars(select(OutboxMessage))).all()
    attempts = {row.idempotency_key: row.attempts for row in rows}
    # The interrupted 13th was claimed twice (and so were the rest of its batch), sent once.
    assert attempts[keys[12]] == 2 and set(attempts.values()) == {1, 2}, attempts
    assert "outbox worker stopped" in logs(tmp_path)


@pytest.mark.parametrize("backend", ["sqlite"])  # the window does not depend on the database
async def test_a_crash_between_acceptance_and_commit_repeats_the_same_message_id(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    # The unavoidable window: the server has accepted message 3 (250) and the worker is still
    # in the QUIT exchange, before its commit. Killed there, the restarted worker sends message 3
    # again; the repeated Message-ID is how the duplicate is spotted downstream.
    handler = RecordingHandler()
    handler.hold_quit_after = 3
    keys = [f"message-{n}" for n in range(5)]
    async with sessionmaker.begin() as db:
        for n, key in enumerate(keys):
            await add_email(db, key, send_after=utcnow() - timedelta(seconds=60 - n))
    async with LocalSmtpServer(handler) as smtp:
        first = await start_worker(database_url, smtp, tmp_path, "worker-1")
        try:
            await asyncio.wait_for(handler.held.wait(), 20)
        finally:
            first.kill()
            await first.wait()
        handler.release.set()
        second = await start_worker(database_url, smtp, tmp_path, "worker-2")
        try:
            await asyncio.wait_for(handler.wait_for(6), 20)

            async def all_sent() -> bool:
                return await statuses(sessionmaker) == {"sent": 5}

            await eventually(all_sent, "5 rows sent", within=10)
        finally:
            second.kill()
            await second.wait()
    delivered = Counter(handler.message_ids())
    assert delivered == Counter({message_id(key, SENDER): 1 for key in keys}) + Counter(
        {message_id(keys[2], SENDER): 1}
    ), logs(tmp_path)
