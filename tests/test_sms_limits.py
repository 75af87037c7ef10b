"""SMS cost abuse (issue 11, defect 3) through the real pages, SQLite and PostgreSQL: numbers
outside France and its overseas regions are refused on every public form; one number gets at
most SMS_PER_RECIPIENT_PER_DAY SMS a day across every flow (book, cancel, call-back…), counted
in the outbox; past the global BUDGET_SMS no SMS is written and an alert is raised. Over a cap
the booking still happens, the person is told on the confirmation page, and e-mail still goes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import func, select

from server.metrics import REGISTRY
from server.notify.deliver import SmsGate, Withheld, deliver
from server.notify.sms import sms_parts
from server.ratelimit import RATELIMIT_KEY
from server.settings import DEFAULT_PHONE_REGIONS, Settings, SettingsError, load_settings
from server.store.models import (
    Appointment,
    AppointmentStatus,
    CallbackRequest,
    OutboxMessage,
    WaitlistEntry,
)
from tests.conftest import Running, browser_session, csrf_from, serve
from tests.test_booking_pages import book, form_token, make_place, slot_times, text_of

PARIS = ZoneInfo("Europe/Paris")
CANCELLED, WITHHELD = "cancelled", "withheld"  # outbox statuses that never reach a phone
VICTIM = "+33612345678"
OTHER = "+33698765432"
WITHHELD_NOTICE = 'id="sms-withheld"'


@asynccontextmanager
async def served(settings: Settings, **changes: Any) -> AsyncIterator[Running]:
    """The real app with these settings changed, on the settings' port (as ``running``)."""
    async with serve(settings.model_copy(update=changes)) as running:
        yield running


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 before its first use)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def sms_to(running: Running, phone: str, *, today: bool = False) -> dict[str, list[str]]:
    """The SMS rows written to this number (only those due today in Paris, if asked): their
    idempotency keys under ``live`` (to be sent or sent), ``withheld`` or ``cancelled``."""
    query = select(OutboxMessage.status, OutboxMessage.idempotency_key).where(
        OutboxMessage.channel == "sms", OutboxMessage.recipient == phone
    )
    if today:
        midnight = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
        query = query.where(
            OutboxMessage.send_after >= midnight,
            OutboxMessage.send_after < midnight + timedelta(days=1),
        )
    found: dict[str, list[str]] = {}
    async with running.sessionmaker() as db:
        for status, key in await db.execute(query):
            kind = status.value if status in (CANCELLED, WITHHELD) else "live"
            found.setdefault(kind, []).append(key)
    return found


async def emails_of(running: Running, appointment_id: str) -> list[str]:
    """The idempotency keys of the e-mails written for an appointment."""
    async with running.sessionmaker() as db:
        return list(
            await db.scalars(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.channel == "email", OutboxMessage.appointment_id == appointment_id
                )
            )
        )


async def cancel(http: aiohttp.ClientSession, url: str, page: str) -> None:
    """Cancel a booking from its manage page."""
    async with http.post(url.split("?")[0] + "/annuler", data={"csrf_token": csrf_from(page)}) as r:
        assert r.status == 200 and "Ce rendez-vous est annulé" in text_of(await r.text())


async def latest_appointment(running: Running) -> Appointment:
    """The appointment booked last."""
    async with running.sessionmaker() as db:
        found = await db.scalar(select(Appointment).order_by(Appointment.created_at.desc()))
        assert found is not None
        return found


async def test_numbers_outside_france_and_its_overseas_regions_are_refused_in_french(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    for foreign in ("+44 7911 123456", "+1 202 555 0143", "+269 321 23 45", "+216 20 123 456"):
        status, page, _url = await book(http, running, place, t, phone=foreign)
        assert status == 400, (foreign, page[-1500:])
        assert "pas un numéro de France (métropole ou outre-mer)" in page
        assert f'value="{foreign}"' in page  # what was typed is kept
    assert await sms_to(running, "+447911123456") == {}
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(Appointment)) == 0

    # The waitlist and the call-back form refuse them too, with the same words.
    token = await form_token(http, running, place, t)  # this browser's CSRF token
    async with http.post(
        running.url("/rendez-vous/attente"),
        data={
            "csrf_token": token,
            "a": str(place.association_id),
            "motif": str(place.motif_id),
            "first_name": "Léa",
            "phone": "+44 7911 123456",
            "site_web": "",
        },
    ) as resp:
        assert resp.status == 400
        assert "pas un numéro de France" in text_of(await resp.text())
    async with http.get(running.url("/rappel"), params={"a": str(place.association_id)}) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/rappel"),
        data={
            "csrf_token": token,
            "a": str(place.association_id),
            "phone": "+44 7911 123456",
            "email": "",
            "first_name": "Awa",
            "motif": "",
            "postal_code": "",
            "windows": "any",
            "message": "",
            "site_web": "",
        },
    ) as resp:
        assert resp.status == 400
        assert "pas un numéro de France" in text_of(await resp.text())
    async with running.sessionmaker() as db:
        for model in (WaitlistEntry, CallbackRequest):
            assert await db.scalar(select(func.count()).select_from(model)) == 0

    # Mainland France and every overseas département or collectivité are fine.
    for overseas, e164 in (
        ("0692 12 34 56", "+262692123456"),  # La Réunion
        ("0639 01 23 45", "+262639012345"),  # Mayotte
        ("+687 75 12 34", "+687751234"),  # Nouvelle-Calédonie
        ("+689 87 12 34 56", "+68987123456"),  # Polynésie française
    ):
        status, page, _url = await book(http, running, place, t, phone=overseas, email="")
        assert status == 200 and "Rendez-vous confirmé" in page, (overseas, page[-1500:])
        assert "confirmation" in " ".join((await sms_to(running, e164))["live"])
        await cancel(http, _url, page)


async def test_one_number_gets_a_capped_number_of_sms_a_day_across_every_flow(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with served(settings, sms_per_recipient_per_day=4) as running:
        place = await make_place(running, volunteers=1)
        t = (await slot_times(http, running, place))[0]
        before = sample("permanence_sms_withheld_total", reason="recipient_cap")
        # Book then cancel in a loop: a confirmation and a cancellation each time (reminders,
        # due on later days, are cancelled with the booking; so is a confirmation not sent
        # yet). Within a few rounds an SMS of the day is held back, never a fifth one sent.
        for _round in range(6):
            status, page, url = await book(http, running, place, t)
            assert status == 200 and "Rendez-vous confirmé" in page
            if WITHHELD_NOTICE in page:
                break
            assert len((await sms_to(running, VICTIM, today=True))["live"]) <= 4
            await cancel(http, url, page)
        else:
            raise AssertionError("six bookings and cancellations, and no SMS was held back")

        # The booking itself still happens, the person is told on the confirmation page (in
        # plain words), and the e-mail goes.
        assert "Vous recevez tout par e-mail" in page
        appointment = await latest_appointment(running)
        assert appointment.status == AppointmentStatus.BOOKED
        assert f"appointment:{appointment.id}:confirmation:email" in await emails_of(
            running, appointment.id
        )
        sent = await sms_to(running, VICTIM, today=True)
        assert f"appointment:{appointment.id}:confirmation:sms" in sent["withheld"]
        assert len(sent["live"]) == 4
        async with http.get(url) as resp:  # a reload still says it
            assert WITHHELD_NOTICE in await resp.text()
        assert sample("permanence_sms_withheld_total", reason="recipient_cap") >= before + 1

        # Another flow to the same number is capped too: the call-back acknowledgement.
        async with http.get(running.url("/rappel"), params={"a": str(place.association_id)}) as r:
            token = csrf_from(await r.text())
        async with http.post(
            running.url("/rappel"),
            data={
                "csrf_token": token,
                "a": str(place.association_id),
                "phone": "06 12 34 56 78",
                "email": "",
                "first_name": "Awa",
                "motif": "",
                "postal_code": "",
                "windows": "any",
                "message": "",
                "site_web": "",
            },
        ) as resp:
            assert resp.status == 200 and "C'est noté, nous vous rappelons" in text_of(
                await resp.text()
            )
            assert WITHHELD_NOTICE in text_of(await resp.text())
        sent = await sms_to(running, VICTIM, today=True)
        assert any(key.startswith("callback:") for key in sent["withheld"])
        assert len(sent["live"]) == 4

        # Without an e-mail the person is told to keep the link and the code.
        async with await browser_session() as other:
            t2 = (await slot_times(other, running, place, days_ahead=3))[0]
            status, page, _url = await book(other, running, place, t2, email="")
            assert status == 200 and WITHHELD_NOTICE in page
            assert "notez le lien et le code" in page and 'id="join-code"' in page

            # Another number is not affected.
            t3 = (await slot_times(other, running, place, days_ahead=4))[0]
            status, page, _url = await book(other, running, place, t3, phone="06 98 76 54 32")
            assert status == 200 and WITHHELD_NOTICE not in page
        assert "withheld" not in await sms_to(running, OTHER)


async def test_past_the_global_sms_budget_no_sms_is_written_and_an_alert_is_raised(
    settings: Settings, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # A booking two days ahead writes three SMS: its confirmation and two reminders. The budget
    # counts the parts the provider bills (a long confirmation is two), then the rest of the
    # day's budget goes elsewhere.
    async with served(settings, budget_sms="12/day") as running:
        place = await make_place(running, volunteers=2)
        t = (await slot_times(http, running, place))[0]
        status, page, _url = await book(http, running, place, t, email="")
        assert status == 200 and WITHHELD_NOTICE not in page
        assert len((await sms_to(running, VICTIM))["live"]) == 3
        async with running.sessionmaker() as db:
            bodies = list(
                await db.scalars(
                    select(OutboxMessage.body).where(OutboxMessage.recipient == VICTIM)
                )
            )
        spent = sum(sms_parts(body) for body in bodies)
        assert 3 < spent <= 12  # the confirmation, with its links, is more than one part
        assert await running.app[RATELIMIT_KEY].spend("sms", 12 - spent)

        before = sample("permanence_budget_exceeded_total", family="sms")
        with caplog.at_level(logging.WARNING):
            status, page, _url = await book(http, running, place, t, phone="06 98 76 54 32")
        assert status == 200 and WITHHELD_NOTICE in page and "par e-mail" in page
        appointment = await latest_appointment(running)
        assert appointment.status == AppointmentStatus.BOOKED and appointment.phone == OTHER
        sent = await sms_to(running, OTHER)
        assert "live" not in sent and len(sent["withheld"]) == 3
        async with running.sessionmaker() as db:
            reasons = set(
                await db.scalars(
                    select(OutboxMessage.last_error).where(
                        OutboxMessage.recipient == OTHER,
                        OutboxMessage.status == WITHHELD,
                    )
                )
            )
        assert reasons == {"withheld: budget"}
        assert len(await emails_of(running, appointment.id)) == 3  # e-mail is used instead
        assert sample("permanence_budget_exceeded_total", family="sms") >= before + 3
        assert any("global budget sms" in r.getMessage() for r in caplog.records)


async def test_concurrent_notices_to_one_number_never_pass_its_daily_cap(running: Running) -> None:
    """Twenty requests writing an SMS to one number at once: exactly the cap is written to be
    sent, the rest withheld (PostgreSQL: an advisory lock per number; SQLite: the write lock)."""
    gate = SmsGate(
        regions=DEFAULT_PHONE_REGIONS, per_recipient_per_day=4, timezone="Europe/Paris", budget=None
    )
    now = datetime.now(UTC)

    async def notice(index: int) -> Withheld | None:
        async with running.sessionmaker.begin() as db:
            done = await deliver(
                db,
                gate=gate,
                phone=VICTIM,
                email=None,
                key=lambda channel: f"test:{index}:{channel.value}",
                subject="Test",
                body="Test",
                sms="Test",
                send_after=now,
            )
        return done.sms_withheld

    outcomes = await asyncio.gather(*(notice(index) for index in range(20)))
    assert outcomes.count(None) == 4
    assert outcomes.count(Withheld.RECIPIENT_CAP) == 16
    sent = await sms_to(running, VICTIM, today=True)
    assert len(sent["live"]) == 4 and len(sent["withheld"]) == 16


def test_phone_regions_are_checked_when_the_settings_load() -> None:
    base = {"PERMANENCE_SECRET_KEY": "k" * 40}
    assert load_settings({**base, "PERMANENCE_PHONE_REGIONS": "fr, re"}).phone_regions == (
        "FR",
        "RE",
    )
    for wrong in ("FR,XX", ""):
        with pytest.raises(SettingsError, match="PHONE_REGIONS"):
            load_settings({**base, "PERMANENCE_PHONE_REGIONS": wrong})


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),  # then parts of 153
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("é à è ù " * 20, 1),  # French accents are in the GSM alphabet
        ("€" * 80, 1),  # an extension character takes two septets: 160
        ("€" * 81, 2),
        ("ș" * 70, 1),  # Romanian's comma-below letters are not: UCS-2, 70 a part
        ("ș" * 71, 2),  # then parts of 67
        ("موعد" * 34, 3),  # 136 Arabic letters
        ("Вашу відеозустріч підтверджено. " * 2, 1),
    ],
)
def test_a_message_is_billed_as_the_parts_it_is_cut_into(text: str, parts: int) -> None:
    assert sms_parts(text) == parts
