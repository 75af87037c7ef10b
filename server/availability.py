"""Weekly permanences in each volunteer's own time zone, absences, and the slot search.

Slot grid: visits start every SLOT_STEP (15 minutes) on the local wall clock, counted from the
start of the permanence (14:00, 14:15, 14:30…), whatever the visit length. We chose this over a
grid of "visit + buffer" (14:00, 15:10, 16:20…) because people read and remember quarter hours
easily, a first visit and a follow-up share one grid (so a 30-minute booking never strands a
60-minute one on a misaligned grid), and the buffer costs at most 5 idle minutes: after a visit
that ends at 15:00 with a 10-minute buffer, the volunteer's next start is 15:15.

Daylight saving: a permanence is a wall-clock promise, so Tuesday 14:00–17:00 stays 14:00–17:00
local and moves in UTC. A start whose local time is skipped (02:30 on the last Sunday of March)
or reads twice (02:30 on the last Sunday of October) is not offered: a slot must name one
instant. A permanence ending at a skipped time ends at the clock change; one ending at a time
that reads twice ends at its first occurrence.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from itertools import groupby
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import ColumnElement, Row, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import text
from server.errors import DomainError
from server.events import OpeningChanged, publish
from server.i18n import _
from server.matching import speaks
from server.motifs import duration_for
from server.settings import DEFAULT_TIMEZONE, Settings
from server.stats.events import EventKind, record
from server.store.models import (
    AppointmentUnit,
    Availability,
    AvailabilityException,
    Motif,
    Role,
    User,
    VisitKind,
)

UNIT_MINUTES = 5
UNIT = timedelta(minutes=UNIT_MINUTES)
SLOT_STEP = timedelta(minutes=15)
MIN_PERMANENCE = timedelta(minutes=15)
MAX_ABSENCE = timedelta(days=400)
MAX_SEARCH_DAYS = 400
REASON_MAX = 120
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_AVAILABILITY_ROLES = (Role.VOLUNTEER, Role.COORDINATOR)


class AvailabilityError(DomainError):
    """A refused permanence, absence or time zone."""


@dataclass(frozen=True, slots=True)
class Slot:
    """A bookable start: `capacity` distinct volunteers are free for the whole visit + buffer."""

    starts_at: datetime
    ends_at: datetime
    capacity: int


# -- Time arithmetic --------------------------------------------------------------------------


def floor_unit(moment: datetime) -> datetime:
    """The unit-grid instant at or before `moment` (the grid is aligned on the Unix epoch)."""
    return moment - (moment - _EPOCH) % UNIT


def ceil_unit(moment: datetime) -> datetime:
    """The unit-grid instant at or after `moment`."""
    rest = (moment - _EPOCH) % UNIT
    return moment + (UNIT - rest) if rest else moment


def occupied_span(start: datetime, end: datetime, buffer: timedelta) -> tuple[datetime, datetime]:
    """The [first, last) instants a visit and its buffer hold of a volunteer's time, on the grid."""
    return floor_unit(start), ceil_unit(end + buffer)


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA zone of this name, or AvailabilityError for an unknown one."""
    # Only names from the zone list: ZoneInfo() alone opens files for "Europe" or "posixrules".
    if name not in _known_zones():
        raise AvailabilityError("unknown_timezone", _("Fuseau horaire inconnu."), "timezone")
    return ZoneInfo(name)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("datetime without a time zone")
    return offset


def wall_offset(wall: datetime, tz: tzinfo) -> timedelta | None:
    """UTC offset of a naive local wall time, or None if the time is skipped or reads twice."""
    early = _offset(wall.replace(tzinfo=tz, fold=0))
    late = _offset(wall.replace(tzinfo=tz, fold=1))
    return early if early == late else None


def is_ambiguous(moment: datetime, tz: tzinfo) -> bool:
    """True if this instant's local time in `tz` reads twice (the autumn clock change)."""
    local = moment.astimezone(tz).replace(tzinfo=None)
    return wall_offset(local, tz) is None


def window_end_utc(wall: datetime, tz: tzinfo) -> datetime:
    """The instant a permanence ending at this local wall time really ends (see module doc)."""
    early = _offset(wall.replace(tzinfo=tz, fold=0))
    late = _offset(wall.replace(tzinfo=tz, fold=1))
    naive_utc = wall.replace(tzinfo=UTC)
    if early >= late:  # an ordinary time, or the first of the two readings in autumn
        return naive_utc - early
    # Skipped in spring: find the clock change between the two readings, to the second.
    low, high = int((naive_utc - late).timestamp()), int((naive_utc - early).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, tz)) == early:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The UTC instant the local day begins."""
    return datetime.combine(day, time(0), tz).astimezone(UTC)


def _seconds(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded up (the search works on integers: it is hot)."""
    return math.ceil(moment.timestamp())


def day_offset(day: date, tz: tzinfo) -> int | None:
    """The local day's UTC offset in seconds, or None if the clocks change during that day."""
    today = _offset(datetime.combine(day, time(0), tz))
    tomorrow = _offset(datetime.combine(day + timedelta(days=1), time(0), tz))
    return int(today.total_seconds()) if today == tomorrow else None


def _time_seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


def visit_starts(
    day: date,
    start: time,
    end: time,
    tz: tzinfo,
    duration: int,
    step: int,
    offset: int | None,
) -> Sequence[int]:
    """Starts (epoch seconds) of the visits of `duration` seconds that fit in one permanence."""
    # `offset` is day_offset(day, tz): on the days without a clock change (all but two a year),
    # plain integer arithmetic; on the others, each start is checked on the wall clock.
    if offset is not None:
        midnight = (day.toordinal() - _EPOCH_ORDINAL) * 86400 - offset
        first, last = midnight + _time_seconds(start), midnight + _time_seconds(end) - duration
        return range(first, last + 1, step)
    wall, wall_end = datetime.combine(day, start), datetime.combine(day, end)
    last = _seconds(window_end_utc(wall_end, tz)) - duration
    starts = []
    jump = timedelta(seconds=step)
    while wall < wall_end:
        wall_utc_offset = wall_offset(wall, tz)
        if wall_utc_offset is not None:
            moment = _seconds(wall.replace(tzinfo=UTC) - wall_utc_offset)
            if moment <= last:
                starts.append(moment)
        wall += jump
    return starts


class _Busy:
    """A volunteer's busy time (absences or booked units) as merged, sorted [start, end) seconds."""

    __slots__ = ("ends", "starts")

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in sorted(intervals):
            if self.ends and start <= self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], end)
            else:
                self.starts.append(start)
                self.ends.append(end)

    def overlaps(self, start: int, end: int) -> bool:
        """True if [start, end) meets any busy interval."""
        index = bisect_right(self.ends, start)
        return index < len(self.starts) and self.starts[index] < end


def booking_window(settings: Settings, now: datetime) -> tuple[datetime, datetime]:
    """Earliest and latest bookable starts (both included): minimum notice, horizon."""
    return (
        now + timedelta(minutes=settings.booking_min_notice_minutes),
        now + timedelta(days=settings.booking_horizon_days),
    )


# -- The search -------------------------------------------------------------------------------


@dataclass
class Offers:
    """For each start (epoch seconds): volunteers whose permanence offers it, and the free ones."""

    offered: dict[int, set[int]] = field(default_factory=dict)
    free: dict[int, set[int]] = field(default_factory=dict)

    def offered_at(self, moment: datetime) -> set[int]:
        """Volunteers whose permanence offers this start (absences excluded)."""
        return self.offered.get(_seconds(moment), set())

    def free_at(self, moment: datetime) -> set[int]:
        """Volunteers offering this start who are not booked then (buffer included)."""
        return self.free.get(_seconds(moment), set())

    def free_starts(self) -> list[tuple[datetime, int]]:
        """Every start with at least one free volunteer, and how many, in time order."""
        return [
            (_EPOCH + timedelta(seconds=start), len(ids))
            for start, ids in sorted(self.free.items())
            if ids
        ]


async def search(
    db: AsyncSession,
    settings: Settings,
    association_id: int,
    duration: timedelta,
    range_start: datetime,
    range_end: datetime,
    *,
    with_booked: bool = True,
    language: str | None = None,
) -> Offers:
    """Every start in [range_start, range_end): three queries, then computed in Python.
    Without ``with_booked``, two: who offers each start, bookings ignored (``free`` is then
    ``offered``; a booking checks who is busy under the write lock itself). With
    ``language``, only the volunteers who declared it (server/matching.py)."""
    if range_end <= range_start:
        return Offers()
    rows = await _permanences(
        db,
        association_id,
        range_start,
        range_end,
        _offering(settings.timezone, range_start, range_end),
        language,
    )
    if not rows:
        return Offers()
    volunteer_ids = sorted({row.volunteer_id for row in rows})
    absences = await _absences(db, volunteer_ids, range_start, range_end + duration)
    booked = (
        await _booked(db, volunteer_ids, range_start, range_end + duration) if with_booked else {}
    )
    length = int(duration.total_seconds())
    # A visit at a grid start holds [start, start + held): visit and buffer rounded up to units.
    unit = int(UNIT.total_seconds())
    raw_held = length + settings.booking_buffer_minutes * 60
    held = raw_held + -raw_held % unit
    step = int(SLOT_STEP.total_seconds())
    low, high = _seconds(range_start), _seconds(range_end)
    offered: dict[int, set[int]] = defaultdict(set)
    free: dict[int, set[int]] = defaultdict(set)
    days: dict[str, tuple[ZoneInfo, date, date]] = {}
    offsets: dict[tuple[str, date], int | None] = {}
    for row in rows:
        if row.timezone not in days:
            tz = ZoneInfo(row.timezone)
            days[row.timezone] = (
                tz,
                range_start.astimezone(tz).date(),
                range_end.astimezone(tz).date(),
            )
        tz, first, last = days[row.timezone]
        if row.valid_from is not None and row.valid_from > first:
            first = row.valid_from
        if row.valid_until is not None and row.valid_until < last:
            last = row.valid_until
        day = first + timedelta(days=(row.weekday - first.weekday()) % 7)
        absent = absences.get(row.volunteer_id)
        busy = booked.get(row.volunteer_id)
        while day <= last:
            if (row.timezone, day) not in offsets:
                offsets[row.timezone, day] = day_offset(day, tz)
            offset = offsets[row.timezone, day]
            for start in visit_starts(day, row.start_time, row.end_time, tz, length, step, offset):
                if start < low or start >= high:
                    continue
                held_from, held_until = start, start + held
                if start % unit:  # only if stored hours are off the 5-minute grid
                    held_from, held_until = start - start % unit, start + raw_held
                    held_until += -held_until % unit
                if absent is not None and absent.overlaps(held_from, held_until):
                    continue
                offered[start].add(row.volunteer_id)
                if busy is None or not busy.overlaps(held_from, held_until):
                    free[start].add(row.volunteer_id)
            day += timedelta(days=7)
    return Offers(offered, free)


def _offering(zone: str, start: datetime, end: datetime) -> ColumnElement[bool] | None:
    """A condition that only drops permanences which cannot offer a start in [start, end):
    those held in ``zone`` on other weekdays, or, within one local day without a clock change,
    ending before the first start or beginning after the last. None for a week or more.

    A booking searches one start (a range of UNIT): without it, the search read and looped over
    every permanence of the association (500 rows for 50 volunteers) to keep 1 in 10."""
    tz = ZoneInfo(zone)
    first = start.astimezone(tz)
    last = (end - timedelta(microseconds=1)).astimezone(tz)
    days = (last.date() - first.date()).days
    if days >= 6:
        return None
    weekdays = sorted({(first.date() + timedelta(days=i)).weekday() for i in range(days + 1)})
    here = [Availability.timezone == zone, Availability.weekday.in_(weekdays)]
    if days == 0 and day_offset(first.date(), tz) is not None:
        # The wall clock runs straight through the range: a permanence offers a start at
        # wall time w only if start_time <= w < end_time.
        here += [Availability.start_time <= last.time(), Availability.end_time > first.time()]
    return or_(Availability.timezone != zone, and_(*here))


async def _permanences(
    db: AsyncSession,
    association_id: int,
    start: datetime,
    end: datetime,
    offering: ColumnElement[bool] | None = None,
    language: str | None = None,
) -> Sequence[Row[int, int, time, time, str, date | None, date | None]]:
    """The weekly permanences of the association's active volunteers valid around [start, end)
    (a day of margin each side: local days straddle UTC ones), those that can offer a start
    in the range if ``offering`` says which (``_offering``), of the volunteers who speak
    ``language`` if given."""
    first_day = (start - timedelta(days=1)).date()
    last_day = (end + timedelta(days=1)).date()
    result = await db.execute(
        select(
            Availability.volunteer_id,
            Availability.weekday,
            Availability.start_time,
            Availability.end_time,
            Availability.timezone,
            Availability.valid_from,
            Availability.valid_until,
        )
        .join(User, User.id == Availability.volunteer_id)
        .where(
            User.association_id == association_id,
            User.is_active.is_(True),
            User.role.in_(_AVAILABILITY_ROLES),
            *_validity_meets(first_day, last_day),
            *([] if offering is None else [offering]),
            *([] if language is None else [speaks(Availability.volunteer_id, language)]),
        )
    )
    return result.all()


async def _absences(
    db: AsyncSession, volunteer_ids: list[int], start: datetime, end: datetime
) -> dict[int, _Busy]:
    rows = (
        await db.execute(
            select(
                AvailabilityException.volunteer_id,
                AvailabilityException.starts_at,
                AvailabilityException.ends_at,
            ).where(
                AvailabilityException.volunteer_id.in_(volunteer_ids),
                AvailabilityException.starts_at < end,
                AvailabilityException.ends_at > start,
            )
        )
    ).all()
    return _group(rows)


async def _booked(
    db: AsyncSession, volunteer_ids: list[int], start: datetime, end: datetime
) -> dict[int, _Busy]:
    """Units held in the range, one row per appointment (its units are contiguous)."""
    margin = timedelta(days=1)  # units of a visit that began before the range still block it
    rows = (
        await db.execute(
            select(
                AppointmentUnit.volunteer_id,
                func.min(AppointmentUnit.unit_start),
                func.max(AppointmentUnit.unit_start),
            )
            .where(
                AppointmentUnit.volunteer_id.in_(volunteer_ids),
                AppointmentUnit.unit_start >= start - margin,
                AppointmentUnit.unit_start < end + margin,
            )
            .group_by(AppointmentUnit.volunteer_id, AppointmentUnit.appointment_id)
        )
    ).all()
    return _group((volunteer_id, first, last + UNIT) for volunteer_id, first, last in rows)


def _group(rows: Iterable[tuple[int, datetime, datetime]]) -> dict[int, _Busy]:
    intervals: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for volunteer_id, start, end in rows:
        intervals[volunteer_id].append((math.floor(start.timestamp()), _seconds(end)))
    return {volunteer_id: _Busy(pairs) for volunteer_id, pairs in intervals.items()}


async def find_slots(
    db: AsyncSession,
    settings: Settings,
    association_id: int,
    motif: Motif,
    kind: VisitKind,
    start: date,
    days: int,
    now: datetime,
    *,
    tz: tzinfo | None = None,
    language: str | None = None,
) -> list[Slot]:
    """Bookable slots of `days` local days from `start` (days counted in `tz`, default
    TIMEZONE); with ``language``, only those of volunteers who speak it."""
    if not 0 < days <= MAX_SEARCH_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_SEARCH_DAYS}, got {days}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = tz or ZoneInfo(settings.timezone)
    earliest, latest = booking_window(settings, now)
    range_start = max(local_midnight(start, tz), earliest)
    range_end = min(local_midnight(start + timedelta(days=days), tz), latest + UNIT)
    duration = duration_for(motif, kind)
    offers = await search(
        db, settings, association_id, duration, range_start, range_end, language=language
    )
    return [
        Slot(moment, moment + duration, capacity)
        for moment, capacity in offers.free_starts()
        if moment <= latest
    ]


def slots_by_day(slots: Iterable[Slot], tz: tzinfo) -> list[tuple[date, list[Slot]]]:
    """Slots grouped by their local day in `tz`, in time order, for display."""
    ordered = sorted(slots, key=lambda slot: slot.starts_at)
    return [
        (day, list(group))
        for day, group in groupby(ordered, key=lambda slot: slot.starts_at.astimezone(tz).date())
    ]


async def note_no_slot_found(
    db: AsyncSession,
    association_id: int,
    postal_code: str | None = None,
    *,
    language: str | None = None,
    language_wanted: bool | None = None,
) -> None:
    """Count a search that found nothing (unmet demand), without any personal data: only the
    département of the optional postal code, the language of the page and whether the person
    asked for a volunteer speaking it are kept."""
    await record(
        db,
        EventKind.NO_SLOT_FOUND,
        association_id=association_id,
        postal_code=postal_code,
        language=language,
        language_wanted=language_wanted,
    )


# -- Permanences and absences -----------------------------------------------------------------


def _check_wall_time(value: time) -> None:
    if value.tzinfo is not None or value.second or value.microsecond or value.minute % UNIT_MINUTES:
        raise AvailabilityError(
            "invalid_time", _("Les heures vont de 5 en 5 minutes (par exemple 14:00 ou 14:05).")
        )


def _check_can_hold(volunteer: User) -> None:
    if volunteer.role not in _AVAILABILITY_ROLES or not volunteer.is_active:
        raise AvailabilityError("cannot_hold", _("Ce compte ne peut pas tenir de permanence."))


async def add_availability(
    db: AsyncSession,
    volunteer: User,
    *,
    weekday: int,
    start_time: time,
    end_time: time,
    timezone: str = DEFAULT_TIMEZONE,
    valid_from: date | None = None,
    valid_until: date | None = None,
) -> Availability:
    """Publish a weekly permanence (e.g. Tuesday 14:00–17:00) in the volunteer's own zone."""
    _check_can_hold(volunteer)
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
        raise AvailabilityError("invalid_weekday", _("Jour de la semaine invalide."), "weekday")
    _check_wall_time(start_time)
    _check_wall_time(end_time)
    if end_time <= start_time:
        raise AvailabilityError(
            "end_before_start", _("L'heure de fin doit être après l'heure de début."), "end"
        )
    length = datetime.combine(date.min, end_time) - datetime.combine(date.min, start_time)
    if length < MIN_PERMANENCE:
        raise AvailabilityError("too_short", _("Une permanence dure au moins 15 minutes."), "end")
    zone(timezone)
    if valid_from is not None and valid_until is not None and valid_until < valid_from:
        raise AvailabilityError(
            "until_before_from",
            _("La date de fin doit être après la date de début."),
            "valid_until",
        )
    clash = await db.scalar(
        select(Availability.id).where(
            Availability.volunteer_id == volunteer.id,
            Availability.weekday == weekday,
            Availability.timezone == timezone,
            Availability.start_time < end_time,
            Availability.end_time > start_time,
            *_validity_meets(valid_from, valid_until),
        )
    )
    if clash is not None:
        raise AvailabilityError(
            "overlap", _("Cette permanence chevauche une autre permanence du même jour.")
        )
    availability = Availability(
        volunteer_id=volunteer.id,
        weekday=weekday,
        start_time=start_time,
        end_time=end_time,
        timezone=timezone,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    db.add(availability)
    await db.flush()
    publish(db, OpeningChanged(volunteer.association_id))
    return availability


def _validity_meets(valid_from: date | None, valid_until: date | None) -> list[ColumnElement[bool]]:
    """Conditions for a stored validity period to share a day with [valid_from, valid_until]."""
    conditions: list[ColumnElement[bool]] = []
    if valid_until is not None:
        conditions.append(
            or_(Availability.valid_from.is_(None), Availability.valid_from <= valid_until)
        )
    if valid_from is not None:
        conditions.append(
            or_(Availability.valid_until.is_(None), Availability.valid_until >= valid_from)
        )
    return conditions


async def list_availabilities(db: AsyncSession, volunteer_id: int) -> list[Availability]:
    """A volunteer's weekly permanences, by weekday and hour."""
    rows = await db.scalars(
        select(Availability)
        .where(Availability.volunteer_id == volunteer_id)
        .order_by(Availability.weekday, Availability.start_time, Availability.id)
    )
    return list(rows)


async def volunteer_zone(db: AsyncSession, volunteer_id: int, default: str) -> ZoneInfo:
    """The zone a volunteer's agenda is shown in: their first permanence's, else `default`
    (the site's TIMEZONE)."""
    permanences = await list_availabilities(db, volunteer_id)
    return ZoneInfo(permanences[0].timezone if permanences else default)


async def delete_availability(db: AsyncSession, volunteer_id: int, availability_id: int) -> bool:
    """Remove one of the volunteer's permanences; booked appointments stay booked."""
    result = await db.execute(
        delete(Availability)
        .where(Availability.id == availability_id, Availability.volunteer_id == volunteer_id)
        .returning(Availability.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    await _opening_changed(db, volunteer_id)
    return True


def absence_range(first_day: date, last_day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """UTC range of whole local days, first and last included (e.g. holidays 1–15 August)."""
    return local_midnight(first_day, tz), local_midnight(last_day + timedelta(days=1), tz)


async def add_exception(
    db: AsyncSession,
    volunteer: User,
    *,
    starts_at: datetime,
    ends_at: datetime,
    reason: str | None = None,
) -> AvailabilityException:
    """Record an absence; appointments already booked in it are kept (see the agenda)."""
    _check_can_hold(volunteer)
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("absence bounds must be timezone-aware")
    if ends_at <= starts_at:
        raise AvailabilityError(
            "absence_end_before_start", _("La fin de l'absence doit être après son début.")
        )
    if ends_at - starts_at > MAX_ABSENCE:
        raise AvailabilityError("absence_too_long", _("Une absence dure au plus 400 jours."))
    clean_reason = " ".join((reason or "").split())
    if len(clean_reason) > REASON_MAX or not text.is_line(clean_reason):
        raise AvailabilityError(
            "reason_too_long",
            _("Le motif de l'absence est trop long (%(n)d caractères au plus).")
            % {"n": REASON_MAX},
            "reason",
        )
    exception = AvailabilityException(
        volunteer_id=volunteer.id,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=clean_reason or None,
    )
    db.add(exception)
    await db.flush()
    publish(db, OpeningChanged(volunteer.association_id))
    return exception


async def list_exceptions(
    db: AsyncSession, volunteer_id: int, *, after: datetime | None = None
) -> list[AvailabilityException]:
    """A volunteer's absences (those ending after `after`, if given), in time order."""
    query = select(AvailabilityException).where(AvailabilityException.volunteer_id == volunteer_id)
    if after is not None:
        query = query.where(AvailabilityException.ends_at > after)
    rows = await db.scalars(query.order_by(AvailabilityException.starts_at))
    return list(rows)


async def delete_exception(db: AsyncSession, volunteer_id: int, exception_id: int) -> bool:
    """Remove one of the volunteer's absences."""
    result = await db.execute(
        delete(AvailabilityException)
        .where(
            AvailabilityException.id == exception_id,
            AvailabilityException.volunteer_id == volunteer_id,
        )
        .returning(AvailabilityException.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    await _opening_changed(db, volunteer_id)
    return True


async def _opening_changed(db: AsyncSession, volunteer_id: int) -> None:
    """The volunteer's permanences changed: their association's queue hours are read again."""
    association_id = await db.scalar(select(User.association_id).where(User.id == volunteer_id))
    if association_id is not None:
        publish(db, OpeningChanged(association_id))


# -- Opening hours of the drop-in queue ---------------------------------------------------------


@dataclass(frozen=True)
class Opening:
    """Whether the association's permanences are open now, and when they next open or close."""

    is_open: bool
    next_change: datetime | None  # closing time if open, next opening if closed; None: never


def _wall_to_utc(day: date, at: time, tz: tzinfo) -> datetime:
    """A permanence boundary on the local clock as an instant (skipped times move forward)."""
    return window_end_utc(datetime.combine(day, at), tz)


async def opening_windows(
    db: AsyncSession, association_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """When at least one active volunteer holds a permanence (and is not absent) in
    [start, end), as merged UTC intervals. The drop-in queue is open exactly then."""
    rows = await _permanences(db, association_id, start, end)
    if not rows:
        return []
    absences = await _absences(db, sorted({row.volunteer_id for row in rows}), start, end)
    low, high = math.floor(start.timestamp()), _seconds(end)  # whole seconds around the range
    intervals: list[tuple[int, int]] = []
    for row in rows:
        tz = ZoneInfo(row.timezone)
        first = (start.astimezone(tz) - timedelta(days=1)).date()
        last = end.astimezone(tz).date()
        day = first + timedelta(days=(row.weekday - first.weekday()) % 7)
        absent = absences.get(row.volunteer_id)
        while day <= last:
            valid = (row.valid_from is None or row.valid_from <= day) and (
                row.valid_until is None or day <= row.valid_until
            )
            if valid:
                opens = max(_seconds(_wall_to_utc(day, row.start_time, tz)), low)
                closes = min(_seconds(_wall_to_utc(day, row.end_time, tz)), high)
                pieces = [(opens, closes)] if opens < closes else []
                if absent is not None:
                    pieces = _subtract(pieces, absent)
                intervals.extend(pieces)
            day += timedelta(days=7)
    merged = _Busy(intervals)
    return [
        (datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC))
        for a, b in zip(merged.starts, merged.ends, strict=True)
    ]


def _subtract(pieces: list[tuple[int, int]], busy: _Busy) -> list[tuple[int, int]]:
    """The parts of the intervals outside the busy ones."""
    result = []
    for start, end in pieces:
        cursor = start
        for busy_start, busy_end in zip(busy.starts, busy.ends, strict=True):
            if busy_end <= cursor or busy_start >= end:
                continue
            if busy_start > cursor:
                result.append((cursor, busy_start))
            cursor = max(cursor, busy_end)
        if cursor < end:
            result.append((cursor, end))
    return result


async def opening(db: AsyncSession, association_id: int, now: datetime) -> Opening:
    """Open or closed now, from the permanences of the next 8 days."""
    windows = await opening_windows(db, association_id, now, now + timedelta(days=8))
    for start, end in windows:
        if start <= now < end:
            return Opening(True, end)
        if start > now:
            return Opening(False, start)
    return Opening(False, None)
