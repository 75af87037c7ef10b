"""Booking on a real database (SQLite and PostgreSQL): contention, cancel, reschedule, referrers,
waitlist, and the validation of what beneficiaries type."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError

from server import accounts, assist, availability, booking
from server.availability import Offers, find_slots
from server.booking import (
    Booked,
    BookingError,
    appointment_for_session,
    appointments_for_referrer,
    appointments_for_volunteer,
    book,
    can_join,
    cancel,
    find_by_manage_token,
    join_waitlist,
    mark_no_show,
    mark_waitlist_notified,
    reschedule,
    units_for,
    waitlist_candidates_for_freed_slot,
)
from server.contact import ContactInfo, Needs
from server.db import make_sessionmaker
from server.motifs import (
    DEFAULT_MOTIFS,
    MotifError,
    create_motif,
    deactivate_motif,
    ensure_default_motifs,
    list_motifs,
    update_motif,
)
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import (
    Appointment,
    AppointmentStatus,
    AppointmentUnit,
    AssistanceSession,
    Base,
    Motif,
    Role,
    SessionStatus,
    StatEvent,
    User,
    VisitKind,
)
from tests.test_availability import TUESDAY, Maker, Place, make_place, permanence

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)
AWA = ContactInfo(first_name="Awa", phone="06 12 34 56 78")


@pytest.fixture
async def sm(settings: Settings) -> AsyncIterator[Maker]:
    """A sessionmaker on the fresh test database."""
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine, settings)
    await engine.dispose()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A Paris wall time in March 2027."""
    return datetime(2027, 3, day, hour, minute, tzinfo=PARIS)


async def reserve(
    sm: Maker,
    settings: Settings,
    place: Place,
    when: datetime,
    *,
    kind: VisitKind = VisitKind.FIRST,
    contact: ContactInfo = AWA,
    via: str = "public",
    referrer: User | None = None,
    motif: Motif | None = None,
    now: datetime = NOW,
) -> Booked:
    """Book in its own transaction."""
    async with sm.begin() as db:
        return await book(
            db,
            settings,
            association_id=place.association_id,
            motif_id=(motif or place.motif).id,
            kind=kind,
            starts_at=when,
            contact=contact,
            via=via,
            referrer=referrer,
            now=now,
        )


async def refused(
    sm: Maker, settings: Settings, place: Place, when: datetime, **kwargs: Any
) -> str:
    """Book, expecting a refusal; returns its code."""
    with pytest.raises(BookingError) as caught:
        await reserve(sm, settings, place, when, **kwargs)
    assert caught.value.message  # always a sentence for people
    return caught.value.code


async def count(sm: Maker, model: type[Base], *where: ColumnElement[bool]) -> int:
    """Rows of a model."""
    async with sm() as db:
        return await db.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def opened_place(sm: Maker, volunteers: int = 1) -> Place:
    """An association whose volunteers all hold Tuesday 14:00–17:00 in Paris."""
    place = await make_place(sm, volunteers)
    for volunteer in place.volunteers:
        await permanence(sm, volunteer, TUESDAY, "14:00", "17:00")
    return place


async def test_a_booking_holds_its_units_and_gets_a_session_a_code_and_a_manage_link(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    contact = ContactInfo(
        first_name="  Marie-José ",
        phone="0033 6 12 34 56 78",
        email="Marie@Example.ORG",
        postal_code="97110",
        description="Dossier CAF\r\nà compléter",
        needs=Needs(interpreter_language=" arabe ", hearing=True),
        timezone="America/Guadeloupe",
    )
    booked = await reserve(sm, settings, place, at(2, 14), contact=contact)

    appointment = booked.appointment
    assert appointment.volunteer_id == place.volunteers[0].id
    assert appointment.ends_at - appointment.starts_at == timedelta(minutes=60)
    assert (appointment.first_name, appointment.phone, appointment.email) == (
        "Marie-José",
        "+33612345678",
        "Marie@example.org",
    )
    assert appointment.postal_code == "97110"
    assert appointment.description == "Dossier CAF\nà compléter"
    assert appointment.needs == {
        "interpreter_language": "arabe",
        "hearing": True,
        "first_time_computer": False,
    }
    assert appointment.display_timezone == "America/Guadeloupe"
    assert appointment.manage_token_hash != booked.manage_token

    async with sm() as db:
        units = list(
            await db.scalars(
                select(AppointmentUnit.unit_start)
                .where(AppointmentUnit.appointment_id == appointment.id)
                .order_by(AppointmentUnit.unit_start)
            )
        )
        # 60 minutes + 10 minutes of buffer = 14 units of 5 minutes.
        assert units == units_for(at(2, 14), at(2, 15), timedelta(minutes=10))
        assert len(units) == 14 and units[-1] == at(2, 15, 5)

        session = await db.get_one(AssistanceSession, booked.session.id)
        assert session.channel == "appointment"
        assert session.volunteer_id == appointment.volunteer_id
        assert session.code_expires_at == appointment.ends_at
        assert session.expires_at >= appointment.ends_at + timedelta(minutes=30)
        assert booked.join_url.startswith(settings.base_url + "/j/")
        assert len(booked.code) == 8 and booked.code.isdigit()
        token = booked.join_url.rsplit("/", 1)[1]
        by_link = await assist.find_by_token(db, token)
        # The code is the appointment's, but not in the live code space before its window.
        assert await assist.find_by_code(db, settings, booked.code) is None
        by_code = await assist.find_by_booked_code(db, settings, booked.code)
        assert by_link is not None and by_code is not None and by_link.id == session.id
        assert by_code.id == session.id

        found = await find_by_manage_token(db, booked.manage_token)
        assert found is not None and found.id == appointment.id
        assert await find_by_manage_token(db, booked.manage_token + "x") is None
        assert await find_by_manage_token(db, "") is None
        linked = await appointment_for_session(db, session.id)
        assert linked is not None and linked.id == appointment.id
        # The link and code open 15 minutes before, or as soon as the volunteer is there.
        assert not can_join(linked, session, at(2, 13, 44))
        assert can_join(linked, session, at(2, 13, 45))
        session.volunteer_sid = "volunteer-socket"
        assert can_join(linked, session, at(2, 9))

        kinds = {
            kind: channel
            for kind, channel in await db.execute(select(StatEvent.kind, StatEvent.channel))
        }
        assert kinds["appointment_booked"] == "public"
        # A booking is not an assistance yet: it is counted once, as appointment_booked.
        assert "session_created" not in kinds


async def test_refused_bookings_leave_nothing_written_even_if_the_caller_commits(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    assert await refused(sm, settings, place, at(1, 6)) == "past"
    assert await refused(sm, settings, place, NOW + timedelta(minutes=30)) == "too_soon"
    late = datetime(2027, 6, 1, 14, tzinfo=PARIS)
    assert await refused(sm, settings, place, late) == "too_far"
    assert await refused(sm, settings, place, at(2, 14, 10)) == "outside_availability"  # off grid
    assert await refused(sm, settings, place, at(3, 14)) == "outside_availability"  # Wednesday
    assert await refused(sm, settings, place, at(2, 16, 15)) == "outside_availability"  # too long
    assert (
        await refused(sm, settings, place, at(2, 14), contact=ContactInfo("Awa", phone="12"))
        == "invalid_phone"
    )
    assert await refused(sm, settings, place, at(2, 14), kind="long") == "invalid_kind"
    async with sm.begin() as db:
        await deactivate_motif(db, place.association_id, place.motif.id)
    assert await refused(sm, settings, place, at(2, 14)) == "motif_unavailable"
    async with sm.begin() as db:
        await deactivate_motif(db, place.association_id, place.motif.id + 1000)

    other = (await list_motifs_of(sm, place))[1]
    await reserve(sm, settings, place, at(2, 14), motif=other)
    async with sm.begin() as db:  # the caller catches the refusal and commits anyway
        with pytest.raises(BookingError, match="vient d'être pris") as caught:
            await book(
                db,
                settings,
                association_id=place.association_id,
                motif_id=other.id,
                kind=VisitKind.FIRST,
                starts_at=at(2, 14),
                contact=AWA,
                via="public",
                now=NOW,
            )
        assert caught.value.code == "slot_taken"
    assert await count(sm, Appointment) == 1
    assert await count(sm, AppointmentUnit) == 14
    assert await count(sm, AssistanceSession) == 1
    assert await count(sm, StatEvent, StatEvent.kind == "appointment_booked") == 1


async def list_motifs_of(sm: Maker, place: Place) -> list[Motif]:
    """The association's motifs."""
    async with sm() as db:
        return await list_motifs(db, place.association_id, active_only=True)


async def test_a_first_visit_and_its_buffer_block_an_overlapping_follow_up(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    first = await reserve(sm, settings, place, at(2, 14))
    follow_up = VisitKind.FOLLOW_UP
    assert await refused(sm, settings, place, at(2, 14, 30), kind=follow_up) == "slot_taken"
    # 15:00 is after the visit but inside its 10-minute buffer.
    assert await refused(sm, settings, place, at(2, 15), kind=follow_up) == "slot_taken"
    second = await reserve(sm, settings, place, at(2, 15, 15), kind=follow_up)
    assert second.appointment.volunteer_id == first.appointment.volunteer_id

    async with sm() as db:
        motif = await db.get_one(Motif, place.motif.id)
        left = await find_slots(
            db, settings, place.association_id, motif, follow_up, date(2027, 3, 2), 1, NOW
        )
    assert [s.starts_at.astimezone(PARIS).strftime("%H:%M") for s in left] == [
        "16:00",
        "16:15",
        "16:30",
    ]

    # The database itself refuses a unit that is already held, whatever Python thinks.
    with pytest.raises(IntegrityError):
        async with sm.begin() as db:
            db.add(
                AppointmentUnit(
                    volunteer_id=first.appointment.volunteer_id,
                    unit_start=at(2, 15, 5),
                    appointment_id=second.appointment.id,
                )
            )


async def test_the_database_refuses_a_volunteer_that_python_wrongly_believes_free(
    sm: Maker, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = await opened_place(sm)
    first = await reserve(sm, settings, place, at(2, 14))
    honest_search = availability.search

    async def stale_search(*args: Any, **kwargs: Any) -> Offers:
        offers = await honest_search(*args, **kwargs)
        for start, offered in offers.offered.items():
            offers.free[start] = set(offered)  # as if the first booking were not seen yet
        return offers

    monkeypatch.setattr(booking, "search", stale_search)
    assert await refused(sm, settings, place, at(2, 14, 30)) == "slot_taken"
    assert await count(sm, Appointment) == 1
    assert await count(sm, AppointmentUnit) == 14
    assert await count(sm, AssistanceSession) == 1
    async with sm() as db:
        kept = await db.get_one(Appointment, first.appointment.id)
        assert kept.status == AppointmentStatus.BOOKED


async def test_200_concurrent_bookings_of_one_slot_give_exactly_its_capacity(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm, volunteers=3)
    slot = at(2, 14)

    async def attempt(index: int) -> int | str:
        contact = ContactInfo(
            first_name="Awa", phone=f"06 12 34 {index // 100:02d} {index % 100:02d}"
        )
        try:
            async with sm.begin() as db:
                booked = await book(
                    db,
                    settings,
                    association_id=place.association_id,
                    motif_id=place.motif.id,
                    kind=VisitKind.FIRST,
                    starts_at=slot,
                    contact=contact,
                    via="public",
                    now=NOW,
                )
                return booked.appointment.volunteer_id
        except BookingError as exc:
            return exc.code

    results = await asyncio.gather(*(attempt(index) for index in range(200)))

    winners = [result for result in results if isinstance(result, int)]
    assert sorted(winners) == sorted(v.id for v in place.volunteers)
    assert results.count("slot_taken") == 197
    assert await count(sm, Appointment) == 3
    assert await count(sm, AppointmentUnit) == 3 * 14
    assert await count(sm, AssistanceSession) == 3
    assert await count(sm, StatEvent, StatEvent.kind == "appointment_booked") == 3
    async with sm() as db:
        linked = await db.scalar(
            select(func.count())
            .select_from(Appointment)
            .join(AssistanceSession, AssistanceSession.id == Appointment.assistance_session_id)
            .where(AssistanceSession.volunteer_id == Appointment.volunteer_id)
        )
        assert linked == 3


async def test_cancelling_frees_the_slot_at_once_and_a_replayed_link_is_told_so(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    booked = await reserve(sm, settings, place, at(2, 14))
    assert await refused(sm, settings, place, at(2, 14)) == "slot_taken"

    async with sm.begin() as db:
        cancelled = await cancel(db, booked.manage_token, NOW)
        assert cancelled.status == AppointmentStatus.CANCELLED
    async with sm() as db:
        motif = await db.get_one(Motif, place.motif.id)
        again = await find_slots(
            db, settings, place.association_id, motif, VisitKind.FIRST, date(2027, 3, 2), 1, NOW
        )
        assert again[0].starts_at == at(2, 14) and again[0].capacity == 1
        session = await db.get_one(AssistanceSession, booked.session.id)
        assert session.status == SessionStatus.ENDED and session.code_hash is None
        assert await assist.find_by_code(db, settings, booked.code) is None
    rebooked = await reserve(sm, settings, place, at(2, 14))
    assert rebooked.appointment.id != booked.appointment.id

    for token, code in [
        (booked.manage_token, "already_cancelled"),
        ("not-a-token", "not_found"),
    ]:
        async with sm.begin() as db:
            with pytest.raises(BookingError) as caught:
                await cancel(db, token, NOW)
            assert caught.value.code == code
    async with sm.begin() as db:
        with pytest.raises(BookingError, match="passé") as caught:
            await cancel(db, rebooked.manage_token, at(2, 14, 1))
        assert caught.value.code == "too_late"
    assert await count(sm, StatEvent, StatEvent.kind == "appointment_cancelled") == 1


async def test_two_cancels_of_one_booking_at_the_same_time_cancel_it_once(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    booked = await reserve(sm, settings, place, at(2, 14))

    async def attempt() -> str:
        try:
            async with sm.begin() as db:
                await cancel(db, booked.manage_token, NOW)
        except BookingError as exc:
            return exc.code
        return "cancelled"

    results = await asyncio.gather(attempt(), attempt())
    assert sorted(results) == ["already_cancelled", "cancelled"]
    assert await count(sm, StatEvent, StatEvent.kind == "appointment_cancelled") == 1


async def test_rescheduling_moves_the_booking_and_keeps_the_manage_link(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    booked = await reserve(sm, settings, place, at(2, 14))

    async with sm.begin() as db:
        # 14:30 overlaps the booking's own time: moving within it works.
        moved = await reschedule(db, settings, booked.manage_token, at(2, 14, 30), NOW)
    assert moved.manage_token == booked.manage_token
    assert moved.appointment.starts_at == at(2, 14, 30)
    assert moved.appointment.first_name == "Awa" and moved.appointment.phone == "+33612345678"
    async with sm() as db:
        current = await find_by_manage_token(db, booked.manage_token)
        assert current is not None and current.id == moved.appointment.id
        old = await db.get_one(Appointment, booked.appointment.id)
        assert old.status == AppointmentStatus.CANCELLED
        assert (await db.get_one(AssistanceSession, booked.session.id)).status == "ended"
    assert await count(sm, AppointmentUnit, AppointmentUnit.appointment_id == old.id) == 0
    assert await count(sm, AppointmentUnit) == 14
    assert await count(sm, StatEvent, StatEvent.kind == "appointment_rescheduled") == 1

    async with sm.begin() as db:
        with pytest.raises(BookingError) as caught:
            await reschedule(db, settings, booked.manage_token, at(2, 14, 30), NOW)
        assert caught.value.code == "same_slot"


async def test_rescheduling_to_a_taken_slot_keeps_the_old_booking_whole(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    mine = await reserve(sm, settings, place, at(2, 14))
    await reserve(sm, settings, place, at(2, 15, 15), contact=ContactInfo("Léa", email="l@a.fr"))

    async with sm.begin() as db:  # the caller catches and commits: still nothing changes
        with pytest.raises(BookingError) as caught:
            await reschedule(db, settings, mine.manage_token, at(2, 15, 15), NOW)
        assert caught.value.code == "slot_taken"
    async with sm.begin() as db:
        with pytest.raises(BookingError) as caught:
            await reschedule(db, settings, mine.manage_token, at(3, 15), NOW)
        assert caught.value.code == "outside_availability"

    async with sm() as db:
        kept = await find_by_manage_token(db, mine.manage_token)
        assert kept is not None and kept.id == mine.appointment.id
        assert kept.status == AppointmentStatus.BOOKED and kept.starts_at == at(2, 14)
    assert await count(sm, AppointmentUnit, AppointmentUnit.appointment_id == kept.id) == 14
    assert await count(sm, Appointment) == 2
    assert await count(sm, AssistanceSession) == 2


async def test_a_referrer_sees_only_the_bookings_they_made(sm: Maker, settings: Settings) -> None:
    place = await opened_place(sm, volunteers=2)
    async with sm.begin() as db:
        association = await accounts.get_or_create_association(db, "Asso A")
        referrers = [
            await accounts.create_user(
                db,
                association=association,
                email=f"{name}@ccas.example.org",
                name=name,
                role=Role.REFERRER,
                password=None,
            )
            for name in ("sophie", "karim")
        ]
    sophie, karim = referrers
    first = await reserve(sm, settings, place, at(2, 14), via="referrer", referrer=sophie)
    await reserve(sm, settings, place, at(2, 14), via="referrer", referrer=karim)
    await reserve(sm, settings, place, at(9, 14))
    later = await reserve(sm, settings, place, at(9, 15, 15), via="api", referrer=sophie)

    async with sm() as db:
        seen = await appointments_for_referrer(db, sophie.id)
        assert [a.id for a in seen] == [later.appointment.id, first.appointment.id]
        assert {a.booked_via for a in seen} == {"referrer", "api"}
        assert len(await appointments_for_referrer(db, karim.id)) == 1

    elsewhere = await make_place(sm, name="Asso B", role=Role.REFERRER)
    with pytest.raises(ValueError, match="referrer"):
        await reserve(
            sm, settings, place, at(16, 14), via="referrer", referrer=elsewhere.volunteers[0]
        )
    with pytest.raises(ValueError, match="referrer"):
        await reserve(sm, settings, place, at(16, 14), via="referrer")


async def test_the_least_busy_volunteer_of_the_day_gets_the_booking(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm, volunteers=2)
    morning = await reserve(sm, settings, place, at(2, 14))
    afternoon = await reserve(sm, settings, place, at(2, 16))
    assert morning.appointment.volunteer_id != afternoon.appointment.volunteer_id


async def test_agenda_lists_a_volunteers_appointments_and_no_show_is_marked_after_the_start(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm, volunteers=2)
    one = await reserve(sm, settings, place, at(2, 14))
    volunteer_id = one.appointment.volunteer_id
    two = await reserve(sm, settings, place, at(9, 14))
    gone = await reserve(sm, settings, place, at(16, 14))
    async with sm.begin() as db:
        await cancel(db, gone.manage_token, NOW)

    async with sm() as db:
        week = await appointments_for_volunteer(db, volunteer_id, at(1, 0), at(8, 0))
        assert [a.id for a in week] == [one.appointment.id]
        everyone = {
            a.id
            for v in place.volunteers
            for a in await appointments_for_volunteer(
                db, v.id, at(1, 0), at(31, 0), include_cancelled=True
            )
        }
        assert everyone == {one.appointment.id, two.appointment.id, gone.appointment.id}

    owner = next(v for v in place.volunteers if v.id == volunteer_id)
    other = next(v for v in place.volunteers if v.id != volunteer_id)
    for by, when, code in [
        (owner, at(2, 13, 59), "too_early"),
        (other, at(2, 14, 10), "forbidden"),
    ]:
        async with sm.begin() as db:
            with pytest.raises(BookingError) as caught:
                await mark_no_show(db, one.appointment.id, by, when)
            assert caught.value.code == code
    async with sm.begin() as db:
        marked = await mark_no_show(db, one.appointment.id, owner, at(2, 14, 10))
        assert marked.status == AppointmentStatus.NO_SHOW
    async with sm.begin() as db:
        with pytest.raises(BookingError) as caught:
            await mark_no_show(db, one.appointment.id, owner, at(2, 14, 20))
        assert caught.value.code == "not_booked"
    assert await count(sm, StatEvent, StatEvent.kind == "no_show") == 1


async def test_the_waitlist_names_who_to_tell_when_a_slot_frees_up(
    sm: Maker, settings: Settings
) -> None:
    place = await opened_place(sm)
    early = await reserve(sm, settings, place, at(2, 14))
    waiting = await reserve(
        sm, settings, place, at(2, 15, 15), contact=ContactInfo("Léa", "0696201234")
    )
    late = await reserve(sm, settings, place, at(2, 16, 30), kind=VisitKind.FOLLOW_UP)

    async with sm.begin() as db:
        anyone = await join_waitlist(
            db,
            settings,
            association_id=place.association_id,
            motif_id=place.motif.id,
            contact=ContactInfo("Youssouf", email="y@example.org"),
            now=NOW,
        )
        earlier = await join_waitlist(
            db,
            settings,
            association_id=place.association_id,
            motif_id=place.motif.id,
            contact=AWA,
            manage_token=waiting.manage_token,
            now=NOW,
        )
        assert earlier.earlier_than == at(2, 15, 15) and earlier.first_name == "Léa"
        assert earlier.phone == "+596696201234"
        again = await join_waitlist(
            db,
            settings,
            association_id=place.association_id,
            motif_id=place.motif.id,
            contact=AWA,
            manage_token=waiting.manage_token,
            now=NOW,
        )
        assert again.id == earlier.id
        anyone_id, earlier_id = anyone.id, earlier.id

    async with sm.begin() as db:
        freed_late = await cancel(db, late.manage_token, NOW)
        # 16:30 is later than Léa's own booking: only Youssouf wants it.
        told = await waitlist_candidates_for_freed_slot(db, freed_late, now=NOW)
        assert [entry.id for entry in told] == [anyone_id]
    async with sm.begin() as db:
        freed = await cancel(db, early.manage_token, NOW)
        told = await waitlist_candidates_for_freed_slot(db, freed, now=NOW)
        assert [entry.id for entry in told] == [anyone_id, earlier_id]
        assert await waitlist_candidates_for_freed_slot(db, freed, now=at(2, 14)) == []
        assert await mark_waitlist_notified(db, [e.id for e in told], NOW) == sorted(
            [anyone_id, earlier_id]
        )
        assert await mark_waitlist_notified(db, [e.id for e in told], NOW) == []
        assert await waitlist_candidates_for_freed_slot(db, freed, now=NOW) == []
    assert await count(sm, StatEvent, StatEvent.kind == "waitlist_joined") == 2


async def test_default_motifs_are_added_once_and_motifs_are_checked(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)  # already ran ensure_default_motifs once
    async with sm.begin() as db:
        again = await ensure_default_motifs(db, place.association_id)
    assert [m.name for m in again] == [spec.name for spec in DEFAULT_MOTIFS]
    assert again[0].id == place.motif.id

    async with sm.begin() as db:
        association = await accounts.get_or_create_association(db, "Asso Neuve")

    async def seed() -> int:
        async with sm.begin() as db:
            return len(await ensure_default_motifs(db, association.id))

    assert list(await asyncio.gather(seed(), seed())) == [10, 10]

    async with sm.begin() as db:
        for minutes in (10, 17, 185):
            with pytest.raises(MotifError, match="multiple de 5 minutes"):
                await create_motif(
                    db, place.association_id, name="MDPH", first_visit_minutes=minutes
                )
        with pytest.raises(MotifError, match="déjà ce nom"):
            await create_motif(db, place.association_id, name="  caf ")
        with pytest.raises(MotifError, match="obligatoire"):
            await create_motif(db, place.association_id, name="   ")
        mdph = await create_motif(
            db, place.association_id, name="MDPH", description="Handicap", first_visit_minutes=90
        )
        assert mdph.position == len(DEFAULT_MOTIFS)
        changed = await update_motif(
            db,
            place.association_id,
            mdph.id,
            name="MDPH / handicap",
            description=None,
            first_visit_minutes=75,
            follow_up_minutes=45,
        )
        assert changed is not None and changed.first_visit_minutes == 75
        assert await update_motif(
            db, place.association_id + 1000, mdph.id, name="x", description=None,
            first_visit_minutes=60, follow_up_minutes=30,
        ) is None  # fmt: skip
        assert await deactivate_motif(db, place.association_id, mdph.id)
        active = await list_motifs(db, place.association_id, active_only=True)
        assert mdph.id not in {m.id for m in active}


def test_units_cover_the_visit_and_buffer_in_five_minute_steps() -> None:
    start = datetime(2027, 3, 2, 13, 0, tzinfo=UTC)
    units = units_for(start, start + timedelta(minutes=30), timedelta(minutes=10))
    assert units == [start + timedelta(minutes=5 * i) for i in range(8)]
    assert units_for(start, start + timedelta(minutes=30), timedelta(0))[-1] == start + timedelta(
        minutes=25
    )
