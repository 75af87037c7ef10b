"""Appointment notifications: written to the outbox with their booking or cancellation, sent by
the app's own worker to a real local SMTP server, with links that work."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select, update

from server.settings import Settings
from server.store.models import Appointment, OutboxMessage, OutboxStatus, WaitlistEntry, utcnow
from tests.conftest import Running, browser_session, csrf_from, entered_room, serve
from tests.smtp_server import LocalSmtpServer, RecordingHandler
from tests.test_booking_pages import book, make_place, slot_times, text_of

DESCRIPTION = "Je dois refaire ma déclaration CAF, mot de passe perdu."


async def outbox(running: Running) -> list[OutboxMessage]:
    """Every outbox row, oldest send first."""
    async with running.sessionmaker() as db:
        rows = await db.scalars(
            select(OutboxMessage).order_by(OutboxMessage.send_after, OutboxMessage.id)
        )
        return list(rows)


def kinds(messages: list[OutboxMessage]) -> set[tuple[str, str]]:
    """(kind, channel) of appointment messages."""
    return {(m.idempotency_key.split(":")[2], m.channel) for m in messages}


async def test_booking_enqueues_confirmation_and_reminders_at_the_right_times(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place, days_ahead=3))[0]
    before = utcnow()
    status, _page, _url = await book(http, running, place, t)
    assert status == 200
    starts = datetime.fromtimestamp(t, UTC)
    messages = await outbox(running)
    assert kinds(messages) == {
        ("confirmation", "email"),
        ("confirmation", "sms"),
        ("reminder", "email"),
        ("reminder", "sms"),
    }
    reminders = sorted({m.send_after for m in messages if ":reminder:" in m.idempotency_key})
    assert reminders == [starts - timedelta(minutes=1440), starts - timedelta(minutes=60)]
    for message in messages:
        if ":confirmation:" in message.idempotency_key:
            assert before - timedelta(seconds=5) <= message.send_after <= utcnow()
        assert DESCRIPTION not in message.body and "mot de passe" not in message.body
        assert running.url("/j/") in message.body
        if message.channel == "email" or ":confirmation:" in message.idempotency_key:
            assert running.url("/rendez-vous/gerer/") in message.body
    email = next(m for m in messages if m.idempotency_key.endswith(":confirmation:email"))
    assert email.recipient == "awa@example.org" and email.subject is not None
    assert email.attachments[0]["filename"] == "rendez-vous.ics"
    assert "BEGIN:VEVENT" in email.attachments[0]["content"]
    sms = next(m for m in messages if m.channel == "sms")
    assert sms.recipient == "+33612345678"


async def test_a_landline_gets_no_sms(running: Running, http: aiohttp.ClientSession) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place, days_ahead=3))[0]
    status, _page, _url = await book(http, running, place, t, phone="01 23 45 67 89")
    assert status == 200
    assert {channel for _kind, channel in kinds(await outbox(running))} == {"email"}


async def test_cancelling_drops_reminders_sends_a_notice_and_tells_the_waitlist(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place, days_ahead=3))[0]
    _status, page, url = await book(http, running, place, t)
    async with running.sessionmaker.begin() as db:
        db.add(
            WaitlistEntry(
                association_id=place.association_id,
                motif_id=place.motif_id,
                first_name="Léa",
                email="lea@example.org",
                created_at=utcnow(),
            )
        )
    async with http.post(
        url.split("?")[0] + "/annuler", data={"csrf_token": csrf_from(page)}
    ) as resp:
        assert resp.status == 200
    messages = await outbox(running)
    reminders = [m for m in messages if ":reminder:" in m.idempotency_key]
    assert reminders and all(m.status == OutboxStatus.CANCELLED for m in reminders)
    notice = [m for m in messages if ":cancellation:" in m.idempotency_key]
    assert {m.channel for m in notice} == {"email", "sms"}
    assert all(m.status != OutboxStatus.CANCELLED for m in notice)
    told = [m for m in messages if ":waitlist:" in m.idempotency_key]
    assert [m.recipient for m in told] == ["lea@example.org"]
    assert "Une place s'est libérée" in told[0].body
    async with running.sessionmaker() as db:
        entry = (await db.scalars(select(WaitlistEntry))).one()
    assert entry.notified_at is not None


@pytest.fixture
async def smtp() -> AsyncIterator[LocalSmtpServer]:
    """A real SMTP server on an ephemeral port."""
    async with LocalSmtpServer(RecordingHandler()) as server:
        yield server


@pytest.fixture
async def smtp_running(settings: Settings, smtp: LocalSmtpServer) -> AsyncIterator[Running]:
    """The real app, its worker sending e-mail through the local SMTP server."""
    settings = settings.model_copy(
        update={
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_tls": "none",
        }
    )
    async with serve(settings) as served:
        yield served


async def test_the_confirmation_reaches_a_real_smtp_server_with_a_working_join_link(
    smtp_running: Running, smtp: LocalSmtpServer
) -> None:
    running = smtp_running
    place = await make_place(running, volunteers=1)
    async with await browser_session() as http:
        t = (await slot_times(http, running, place, days_ahead=3))[0]
        status, _page, _url = await book(http, running, place, t)
        assert status == 200
    await asyncio.wait_for(smtp.handler.wait_for(1), 10)
    received = smtp.handler.received[0]
    assert received.rcpt_tos == ["awa@example.org"]
    assert "Rendez-vous confirmé" in str(received.message["Subject"])
    body_part = received.message.get_body(preferencelist=("plain",))
    assert body_part is not None
    body = body_part.get_content()
    assert DESCRIPTION not in body
    attachments = [part.get_filename() for part in received.message.iter_attachments()]
    assert attachments == ["rendez-vous.ics"]
    link = re.search(r"(http://\S+/j/\S+)", body)
    assert link
    async with await browser_session() as phone:
        async with phone.get(link.group(1), allow_redirects=False) as resp:
            assert resp.status == 200
            assert "Revenez à partir de" in text_of(await resp.text())
        soon = utcnow() + timedelta(minutes=10)
        async with running.sessionmaker.begin() as db:
            await db.execute(
                update(Appointment).values(starts_at=soon, ends_at=soon + timedelta(hours=1))
            )
        async with phone.get(link.group(1), allow_redirects=False) as resp:
            await entered_room(resp)
        async with phone.get(running.url("/b")) as resp:
            assert resp.status == 200
    async with running.sessionmaker() as db:
        sent = await db.scalars(
            select(OutboxMessage.status).where(
                OutboxMessage.idempotency_key.endswith(":confirmation:email")
            )
        )
        assert list(sent) == [OutboxStatus.SENT]
