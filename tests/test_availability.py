"""Weekly permanences, absences and the slot search on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts
from server.availability import (
    UNIT,
    AvailabilityError,
    Slot,
    absence_range,
    add_availability,
    add_exception,
    delete_availability,
    delete_exception,
    find_slots,
    list_availabilities,
    list_exceptions,
    occupied_span,
    search,
    slots_by_day,
    window_end_utc,
)
from server.db import make_sessionmaker
from server.motifs import duration_for, ensure_default_motifs
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import Motif, Role, User, VisitKind

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)  # Monday 1 March 2027, 08:00 in Paris
TUESDAY = 1
SUNDAY = 6

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sm(settings: Settings) -> AsyncIterator[Maker]:
    """A sessionmaker on the fresh test database."""
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine, settings)
    await engine.dispose()


@dataclasses.dataclass
class Place:
    """An association with its default motifs and some volunteers."""

    association_id: int
    motif: Motif
    volunteers: list[User]


async def make_place(
    sm: Maker, volunteers: int = 1, name: str = "Asso A", role: Role = Role.VOLUNTEER
) -> Place:
    """An association, its default motifs (first: CAF, 60/30 min) and `volunteers` accounts."""
    async with sm.begin() as db:
        association = await accounts.get_or_create_association(db, name)
        motifs = await ensure_default_motifs(db, association.id)
        users = [
            await accounts.create_user(
                db,
                association=association,
                email=f"v{index}.{association.id}@example.org",
                name=f"Bénévole {index}",
                role=role,
                password=None,
            )
            for index in range(volunteers)
        ]
    return Place(association.id, motifs[0], users)


async def permanence(
    sm: Maker,
    user: User,
    weekday: int,
    start: str,
    end: str,
    tz: str = "Europe/Paris",
    **validity: date,
) -> None:
    """Publish a weekly permanence."""
    async with sm.begin() as db:
        await add_availability(
            db,
            user,
            weekday=weekday,
            start_time=time.fromisoformat(start),
            end_time=time.fromisoformat(end),
            timezone=tz,
            **validity,
        )


async def slots(
    sm: Maker,
    settings: Settings,
    place: Place,
    start: date,
    days: int,
    kind: VisitKind = VisitKind.FIRST,
    now: datetime = NOW,
    tz: ZoneInfo = PARIS,
) -> list[Slot]:
    """Run the slot search in its own session."""
    async with sm() as db:
        return await find_slots(
            db, settings, place.association_id, place.motif, kind, start, days, now, tz=tz
        )


def local(slot: Slot, tz: ZoneInfo = PARIS) -> str:
    """A slot's local start as 'YYYY-MM-DD HH:MM'."""
    return slot.starts_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def hours(found: list[Slot], tz: ZoneInfo = PARIS) -> list[str]:
    """Local start times 'HH:MM' of slots."""
    return [slot.starts_at.astimezone(tz).strftime("%H:%M") for slot in found]


async def test_weekly_permanence_offers_quarter_hour_starts_that_fit_before_its_end(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], TUESDAY, "14:00", "17:00")

    first = await slots(sm, settings, place, date(2027, 3, 1), 14)
    by_day = slots_by_day(first, PARIS)
    assert [day for day, _ in by_day] == [date(2027, 3, 2), date(2027, 3, 9)]
    for _day, day_slots in by_day:
        assert hours(day_slots) == [
            "14:00", "14:15", "14:30", "14:45", "15:00", "15:15", "15:30", "15:45", "16:00"
        ]  # fmt: skip
    assert all(s.ends_at - s.starts_at == timedelta(minutes=60) for s in first)
    assert {s.capacity for s in first} == {1}

    follow_up = await slots(sm, settings, place, date(2027, 3, 2), 1, VisitKind.FOLLOW_UP)
    assert hours(follow_up)[-1] == "16:30"  # the visit fits; the buffer may pass 17:00
    assert len(follow_up) == 11


async def test_absences_remove_the_slots_they_touch_buffer_included(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    volunteer = place.volunteers[0]
    await permanence(sm, volunteer, TUESDAY, "14:00", "17:00")
    async with sm.begin() as db:
        holidays = absence_range(date(2027, 3, 9), date(2027, 3, 12), PARIS)
        await add_exception(db, volunteer, starts_at=holidays[0], ends_at=holidays[1])
        await add_exception(
            db,
            volunteer,
            starts_at=datetime(2027, 3, 2, 15, 0, tzinfo=PARIS),
            ends_at=datetime(2027, 3, 2, 15, 30, tzinfo=PARIS),
            reason="Rendez-vous médical",
        )

    found = await slots(sm, settings, place, date(2027, 3, 1), 21)
    by_day = dict(slots_by_day(found, PARIS))
    # 14:00–15:15 would run (with the 10-minute buffer) into 15:00–15:30.
    assert hours(by_day[date(2027, 3, 2)]) == ["15:30", "15:45", "16:00"]
    assert date(2027, 3, 9) not in by_day
    assert len(by_day[date(2027, 3, 16)]) == 9

    async with sm.begin() as db:
        absences = await list_exceptions(db, volunteer.id, after=NOW)
        assert [a.reason for a in absences] == ["Rendez-vous médical", None]
        assert await delete_exception(db, volunteer.id, absences[1].id)
        assert not await delete_exception(db, volunteer.id + 1000, absences[0].id)
    found = await slots(sm, settings, place, date(2027, 3, 9), 1)
    assert len(found) == 9


async def test_validity_dates_bound_the_recurrence(sm: Maker, settings: Settings) -> None:
    place = await make_place(sm)
    volunteer = place.volunteers[0]
    await permanence(
        sm, volunteer, TUESDAY, "14:00", "15:00", valid_from=date(2027, 3, 9),
        valid_until=date(2027, 3, 16),
    )  # fmt: skip
    await permanence(sm, volunteer, TUESDAY, "16:00", "17:00", valid_until=date(2027, 3, 2))

    found = await slots(sm, settings, place, date(2027, 3, 1), 28)
    assert [local(s) for s in found] == [
        "2027-03-02 16:00",
        "2027-03-09 14:00",
        "2027-03-16 14:00",
    ]


async def test_capacity_counts_the_distinct_volunteers_free_at_that_time(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm, volunteers=3)
    first, second, inactive = place.volunteers
    await permanence(sm, first, TUESDAY, "14:00", "17:00")
    await permanence(sm, second, TUESDAY, "15:00", "18:00")
    await permanence(sm, inactive, TUESDAY, "14:00", "17:00")
    async with sm.begin() as db:
        await accounts.deactivate(
            db, await db.get_one(User, first.id), inactive.id
        )  # nobody books a deactivated volunteer

    found = await slots(sm, settings, place, date(2027, 3, 2), 1)
    capacity = {hour: slot.capacity for hour, slot in zip(hours(found), found, strict=True)}
    assert capacity["14:00"] == 1
    assert capacity["15:00"] == capacity["16:00"] == 2
    assert capacity["16:15"] == capacity["17:00"] == 1
    assert "17:15" not in capacity


async def test_march_clock_change_keeps_local_hours_and_moves_utc(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], SUNDAY, "14:00", "17:00")

    found = await slots(sm, settings, place, date(2027, 3, 21), 15)
    by_day = dict(slots_by_day(found, PARIS))
    assert list(by_day) == [date(2027, 3, 21), date(2027, 3, 28), date(2027, 4, 4)]
    for day, offset, utc_hour in [
        (date(2027, 3, 21), timedelta(hours=1), 13),
        (date(2027, 3, 28), timedelta(hours=2), 12),
        (date(2027, 4, 4), timedelta(hours=2), 12),
    ]:
        assert hours(by_day[day])[0] == "14:00" and hours(by_day[day])[-1] == "16:00"
        assert by_day[day][0].starts_at.hour == utc_hour
        assert by_day[day][0].starts_at.astimezone(PARIS).utcoffset() == offset


async def test_october_clock_change_keeps_local_hours_and_moves_utc(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], SUNDAY, "14:00", "17:00")

    now = datetime(2027, 10, 1, tzinfo=UTC)
    found = await slots(sm, settings, place, date(2027, 10, 24), 15, now=now)
    by_day = dict(slots_by_day(found, PARIS))
    for day, offset, utc_hour in [
        (date(2027, 10, 24), timedelta(hours=2), 12),
        (date(2027, 10, 31), timedelta(hours=1), 13),
        (date(2027, 11, 7), timedelta(hours=1), 13),
    ]:
        assert hours(by_day[day]) == hours(by_day[date(2027, 10, 24)])
        assert by_day[day][0].starts_at.hour == utc_hour
        assert by_day[day][-1].ends_at.astimezone(PARIS).strftime("%H:%M") == "17:00"
        assert by_day[day][0].starts_at.astimezone(PARIS).utcoffset() == offset


async def test_a_start_skipped_by_the_spring_clock_change_is_not_offered(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    volunteer = place.volunteers[0]
    await permanence(sm, volunteer, SUNDAY, "02:30", "04:00")
    await permanence(sm, volunteer, SUNDAY, "00:15", "01:00")

    found = await slots(sm, settings, place, date(2027, 3, 21), 8, VisitKind.FOLLOW_UP)
    by_day = dict(slots_by_day(found, PARIS))
    assert hours(by_day[date(2027, 3, 21)]) == [
        "00:15", "00:30", "02:30", "02:45", "03:00", "03:15", "03:30"
    ]  # fmt: skip
    # 02:30 and 02:45 do not exist on 28 March 2027: clocks jump from 02:00 to 03:00.
    on_the_day = by_day[date(2027, 3, 28)]
    assert hours(on_the_day) == ["00:15", "00:30", "03:00", "03:15", "03:30"]
    assert on_the_day[2].starts_at == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


async def test_a_permanence_ending_in_the_skipped_hour_ends_at_the_clock_change(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], SUNDAY, "01:00", "02:30")
    found = await slots(sm, settings, place, date(2027, 3, 21), 8, VisitKind.FOLLOW_UP)
    by_day = dict(slots_by_day(found, PARIS))
    assert hours(by_day[date(2027, 3, 21)]) == ["01:00", "01:15", "01:30", "01:45", "02:00"]
    assert hours(by_day[date(2027, 3, 28)]) == ["01:00", "01:15", "01:30"]
    assert by_day[date(2027, 3, 28)][-1].ends_at == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    wall_end = datetime(2027, 3, 28, 2, 30)
    assert window_end_utc(wall_end, PARIS) == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


async def test_starts_that_read_twice_in_october_are_not_offered(
    sm: Maker, settings: Settings
) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], SUNDAY, "01:00", "04:00")
    now = datetime(2027, 10, 1, tzinfo=UTC)
    found = await slots(sm, settings, place, date(2027, 10, 31), 1, VisitKind.FOLLOW_UP, now)
    # 02:00–02:59 happens twice that night: a slot there would not name one moment.
    assert hours(found) == ["01:00", "01:15", "01:30", "01:45", "03:00", "03:15", "03:30"]
    assert found[3].starts_at == datetime(2027, 10, 30, 23, 45, tzinfo=UTC)  # 01:45 CEST
    assert found[4].starts_at == datetime(2027, 10, 31, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert window_end_utc(datetime(2027, 10, 31, 2, 30), PARIS) == datetime(
        2027, 10, 31, 0, 30, tzinfo=UTC
    )  # a permanence ending at 02:30 that night ends at the first 02:30


OVERSEAS = [
    ("America/Guadeloupe", -4),
    ("America/Martinique", -4),
    ("America/Cayenne", -3),
    ("Indian/Reunion", 4),
    ("Indian/Mayotte", 3),
    ("Pacific/Noumea", 11),
    ("Pacific/Tahiti", -10),
]


async def test_overseas_permanences_follow_their_own_zone_through_the_paris_change(
    sm: Maker, settings: Settings
) -> None:
    for name, offset in OVERSEAS:
        tz = ZoneInfo(name)
        place = await make_place(sm, name=f"Asso {name}")
        await permanence(sm, place.volunteers[0], TUESDAY, "09:00", "12:00", tz=name)
        found = await slots(sm, settings, place, date(2027, 3, 22), 14, tz=tz)
        by_day = slots_by_day(found, tz)
        assert [day for day, _ in by_day] == [date(2027, 3, 23), date(2027, 3, 30)], name
        for _day, day_slots in by_day:
            assert hours(day_slots, tz)[0] == "09:00", name
            assert hours(day_slots, tz)[-1] == "11:00", name
            # No clock change overseas: the same UTC hour both weeks, whatever Paris does.
            assert day_slots[0].starts_at.hour == (9 - offset) % 24, name
        if name == "Pacific/Noumea":
            # Shown in Paris, Tuesday 09:00 in Nouméa is Monday 23:00 before the Paris change
            # and Tuesday 00:00 after it.
            firsts = [day_slots[0] for _day, day_slots in by_day]
            assert [local(slot) for slot in firsts] == ["2027-03-22 23:00", "2027-03-30 00:00"]
            assert [day for day, _ in slots_by_day(firsts, PARIS)] == [
                date(2027, 3, 22),
                date(2027, 3, 30),
            ]


async def test_a_one_start_search_offers_what_the_search_of_its_days_offers_at_that_start(
    sm: Maker, settings: Settings
) -> None:
    # A booking searches one start and reads only the permanences that can offer it; this
    # holds it to the search over whole days, the October clock change and other zones included.
    place = await make_place(sm, volunteers=5)
    first, second, third, overseas, night = place.volunteers
    await permanence(sm, first, TUESDAY, "09:30", "12:30")
    await permanence(sm, second, TUESDAY, "11:00", "13:00")
    await permanence(sm, third, TUESDAY + 1, "09:00", "10:00")
    await permanence(sm, overseas, TUESDAY, "09:00", "12:00", tz="Pacific/Noumea")
    await permanence(sm, night, SUNDAY, "01:00", "04:00")  # 31 October: 02:00–03:00 twice
    duration = duration_for(place.motif, VisitKind.FIRST)
    for day in (date(2027, 3, 1), date(2027, 10, 30)):
        start = datetime.combine(day, time(0), PARIS).astimezone(UTC)
        end = start + timedelta(days=4)  # Saturday to Tuesday in October
        checked = 0
        async with sm() as db:
            whole = await search(db, settings, place.association_id, duration, start, end)
            moment = start
            while moment < end:
                one = await search(
                    db, settings, place.association_id, duration, moment, moment + UNIT
                )
                assert one.offered_at(moment) == whole.offered_at(moment), moment
                assert one.free_at(moment) == whole.free_at(moment), moment
                checked += bool(whole.offered_at(moment))
                moment += timedelta(minutes=15)
        assert checked > 20, day  # the ranges do hold offered starts


async def test_minimum_notice_and_horizon_bound_the_slots(sm: Maker, settings: Settings) -> None:
    place = await make_place(sm)
    await permanence(sm, place.volunteers[0], TUESDAY, "14:00", "17:00")
    strict = settings.model_copy(
        update={"booking_min_notice_minutes": 120, "booking_horizon_days": 7}
    )
    now = datetime(2027, 3, 2, 12, 30, tzinfo=PARIS)

    found = await slots(sm, strict, place, date(2027, 3, 1), 14, now=now)
    assert [local(s) for s in found][:2] == ["2027-03-02 14:30", "2027-03-02 14:45"]
    assert all(s.starts_at.astimezone(PARIS).date() == date(2027, 3, 2) for s in found)

    wider = strict.model_copy(update={"booking_horizon_days": 8})
    found = await slots(sm, wider, place, date(2027, 3, 1), 14, now=now)
    assert local(found[-1]) == "2027-03-09 16:00"

    past = await slots(sm, settings, place, date(2027, 2, 1), 7, now=now)
    assert past == []


async def test_permanences_are_checked_and_listed(sm: Maker, settings: Settings) -> None:
    place = await make_place(sm)
    volunteer = place.volunteers[0]
    await permanence(sm, volunteer, TUESDAY, "14:00", "17:00", valid_until=date(2027, 12, 31))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"start_time": time(14, 2)}, "5 en 5 minutes"),
        ({"end_time": time(8, 0)}, "fin doit être après"),
        ({"end_time": time(9, 10)}, "au moins 15 minutes"),
        ({"timezone": "Europe/Atlantis"}, "Fuseau horaire inconnu"),
        ({"timezone": "../../etc/passwd"}, "Fuseau horaire inconnu"),
        ({"weekday": 7}, "Jour de la semaine"),
        ({"valid_from": date(2027, 3, 9), "valid_until": date(2027, 3, 1)}, "date de fin"),
        ({"weekday": TUESDAY, "start_time": time(16, 0), "end_time": time(18, 0)}, "chevauche"),
    ]
    for change, message in bad:
        fields: dict[str, Any] = {
            "weekday": 3,
            "start_time": time(9, 0),
            "end_time": time(12, 0),
            "timezone": "Europe/Paris",
        }
        fields.update(change)
        async with sm() as db:
            with pytest.raises(AvailabilityError, match=message):
                await add_availability(db, volunteer, **fields)
    # The same hours are fine once the validity periods do not meet.
    async with sm.begin() as db:
        later = await add_availability(
            db,
            volunteer,
            weekday=TUESDAY,
            start_time=time(16, 0),
            end_time=time(18, 0),
            valid_from=date(2028, 1, 1),
        )
    referrers = await make_place(sm, name="Asso R", role=Role.REFERRER)
    with pytest.raises(AvailabilityError, match="ne peut pas tenir"):
        await permanence(sm, referrers.volunteers[0], TUESDAY, "14:00", "17:00")
    async with sm() as db:
        listed = await list_availabilities(db, volunteer.id)
        assert [(a.weekday, a.start_time) for a in listed] == [
            (TUESDAY, time(14, 0)),
            (TUESDAY, time(16, 0)),
        ]
    async with sm.begin() as db:
        assert await delete_availability(db, volunteer.id, later.id)
        assert not await delete_availability(db, volunteer.id, later.id)


def test_occupied_span_rounds_the_visit_and_buffer_out_to_the_unit_grid() -> None:
    start = datetime(2027, 3, 2, 13, 0, tzinfo=UTC)
    assert occupied_span(start, start + timedelta(minutes=60), timedelta(minutes=10)) == (
        start,
        start + timedelta(minutes=70),
    )
    odd = start + timedelta(minutes=2)
    assert occupied_span(odd, odd + timedelta(minutes=30), timedelta(minutes=7)) == (
        start,
        start + timedelta(minutes=40),
    )


def test_slots_by_day_groups_in_the_given_zone() -> None:
    def at(hour: int) -> Slot:
        moment = datetime(2027, 3, 2, hour, tzinfo=UTC)
        return Slot(moment, moment + timedelta(hours=1), 1)

    late, early, evening = at(23), at(9), at(20)
    assert slots_by_day([late, early, evening], PARIS) == [
        (date(2027, 3, 2), [early, evening]),
        (date(2027, 3, 2) + timedelta(days=1), [late]),
    ]
    assert slots_by_day([late, early], ZoneInfo("America/Guadeloupe")) == [
        (date(2027, 3, 2), [early, late])
    ]
