"""Synthetic statistics history for demos and benchmarks: ``permanence demo --sessions N``.

Only ``stat_events`` rows are written (then the rollups are rebuilt): no person, no session,
no sheet exists behind them, so nothing here is personal data. Each of the N sessions is an
accompaniment that ended with a handoff sheet, with the events the real code records for its
channel:

- ``link``: session_created, beneficiary_joined, media_shared, session_ended, sheet_filed;
- ``appointment``: appointment_booked (days before; ``channel`` = how it was booked), then the
  session's events (no session_created: bookings are counted by the booking events);
- ``drop_in``: queue_joined, queue_taken (the wait), session_created and the session's events;
- ``callback``: callback_requested, sometimes an unanswered callback_attempted, callback_resolved
  (``visio_link``, the request's age), session_created and the session's events.

Besides, demand that found no help: no_slot_found, queue_joined + queue_left (left, lost, gone),
callback_requested + callback_expired (too_old, unreachable), and appointments cancelled or
missed. It is markedly higher in a few under-served départements (UNDER_SERVED), where fewer
sessions take place, so that the "where to open a permanence" ranking has something to show.

Realism: weekly rhythm (fewer on Saturdays, almost none on Sundays), yearly rhythm (tax season
in April–May, back to school in September, a dip in August and at Christmas), office hours in
the deployment's time zone (``settings.timezone``), départements drawn in proportion to their
population (``server.geo``; ~3 % of postal codes unplaceable, "99", and some people give
none), themes with realistic frequencies and matching organisations, outcomes about 60 %
resolved / 20 % partial / 12 % follow-up / 8 % oriented, durations log-normal around a
25-minute median. Everything follows from ``seed``.

Like the real events, every step of a person's demand (booking, queue, call-back, sheet)
carries their département.

Some sessions include a rights check (issue 16): one ``rights_checked`` and one
``rights_unclaimed`` per benefit found probably due and not received, with its amount band,
as ``server/rights/tally.py`` records them (coded facts only). Checks are more frequent
on social, housing, family and money sessions, and find more in the under-served départements.

Each person's booking, queue and call-back steps carry the language of the pages they used
(issue 17): mostly French, then Arabic, Dari, Ukrainian, English, Romanian and Spanish; about
two in five of the others asked for a volunteer speaking it. Among the demand left unmet the
other languages are more frequent, and more of them asked for their language (fewer
volunteers speak it). Drawn from a generator of their own, like the vault's.

Every synthetic event carries a ``session_id`` starting with MARKER, so that existing synthetic
history can be found (``has_history``) and replaced (``delete_history``) without touching real
events.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from server import geo, taxonomy
from server.rights.benefits import BENEFITS
from server.room_vault import COPY_REASON
from server.settings import Settings
from server.stats.events import UNKNOWN_DEPARTEMENT, EventKind
from server.stats.rebuild import rebuild_rollups
from server.stats.rollups import CHECK_FOUND, CHECK_NONE
from server.store.models import Motif, Role, StatEvent, User, utcnow

MARKER = "synthetic-"
K = EventKind  # short, for the many events below
T = TypeVar("T")
BATCH_ROWS = 5000
# Created (without a password: no login) for an association that has no volunteer.
DEMO_VOLUNTEERS = ("Alex (historique démo)", "Inès (historique démo)", "Marc (historique démo)")

CHANNELS = {"link": 20, "appointment": 35, "drop_in": 30, "callback": 15}
BOOKED_VIA = {"public": 70, "referrer": 25, "api": 5}
# Share of unplaceable postal codes, and of people giving none.
UNKNOWN_SHARE = 0.03
NO_POSTAL_CODE_SHARE = 0.05
# Départements short of permanences: fewer sessions per inhabitant, much more unmet demand.
UNDER_SERVED = ("02", "08", "23", "36", "58", "973")
UNDER_SERVED_SESSIONS = 0.5
UNDER_SERVED_UNMET = 5.0
# Unmet demand per session held, and how it shows.
UNMET_PER_SESSION = 0.12
UNMET_KINDS = {"no_slot_found": 40, "queue_left": 35, "callback_expired": 25}
QUEUE_LEFT_REASONS = {"left": 55, "lost": 35, "gone": 10}
CALLBACK_EXPIRED_REASONS = {"too_old": 60, "unreachable": 40}
APPOINTMENT_CANCELLED = 0.08
# The vault (coffre-fort): some people make one during a session and add a few documents, some
# show one; half keep the category encrypted. Drawn from a generator of their own, so that the
# rest of the history is the same with or without them.
VAULT_CREATED_SHARE = 0.06
VAULT_SHOWN_SHARE = 0.05
VAULT_COPY_SHARE = 0.3
VAULT_CATEGORY_SHARED = 0.5
VAULT_CATEGORIES = {
    "identite": 30, "caf": 20, "impots": 15, "sante": 10, "logement": 10, "emploi": 5,
    "retraite": 5, "autre": 5,
}  # fmt: skip
APPOINTMENT_NO_SHOW = 0.06
# Rights checks (droits potentiels non réclamés): the share of sessions with one, by main theme;
# how often a check finds something (higher where permanences are lacking); how many benefits
# then; which ones, and the bands of their estimated monthly amounts. Drawn from a generator
# of their own, like the vault's.
RIGHTS_CHECK_SHARE = {"social_sante": 0.25, "logement": 0.2, "famille": 0.2, "argent_impots": 0.15}
RIGHTS_CHECK_OTHER = 0.03
RIGHTS_FOUND_SHARE = 0.4
RIGHTS_FOUND_UNDER_SERVED = 0.6
RIGHTS_HOW_MANY = {1: 60, 2: 30, 3: 10}
RIGHTS_BENEFITS = {
    "ppa": 22, "aide_logement": 20, "css_gratuite": 14, "rsa": 12, "css_participation": 7,
    "cheque_energie": 6, "asf": 4, "af": 3, "cf": 3, "paje_base": 3, "aah": 2, "aspa": 2, "ars": 2,
}  # fmt: skip
RIGHTS_BANDS: dict[str, dict[str | None, int]] = {
    "ppa": {"50_100": 20, "100_200": 45, "200_400": 35},
    "aide_logement": {"50_100": 15, "100_200": 40, "200_400": 40, "400_800": 5},
    "css_gratuite": {None: 1},  # no amount
    "rsa": {"200_400": 35, "400_800": 60, "800_plus": 5},
    "css_participation": {"lt50": 100},
    "cheque_energie": {"lt50": 100},  # a yearly 48–277 € counted for a twelfth
    "asf": {"100_200": 40, "200_400": 60},
    "af": {"100_200": 70, "200_400": 30},
    "cf": {"100_200": 30, "200_400": 70},
    "paje_base": {"100_200": 60, "200_400": 40},
    "aah": {"400_800": 40, "800_plus": 60},
    "aspa": {"200_400": 30, "400_800": 50, "800_plus": 20},
    "ars": {"lt50": 60, "50_100": 40},  # a yearly ~420 € per child counted for a twelfth
}

# The language of the pages a person used (server/i18n.py codes), and how often someone who
# used another language than French asked for a volunteer speaking it; unmet demand has more
# of the other languages, more often asked for.
LANGUAGES = {"fr": 82, "ar": 6, "fa-AF": 3, "uk": 3, "en": 2, "ro": 2, "es": 2}
LANGUAGE_WANTED_SHARE = 0.4
UNMET_OTHER_LANGUAGES = 1.6  # weight factor of the languages other than French
UNMET_LANGUAGE_WANTED_SHARE = 0.55

THEMES = {
    "social_sante": 30,
    "argent_impots": 20,
    "travail": 12,
    "papiers": 10,
    "logement": 10,
    "famille": 6,
    "transports": 4,
    "etrangers": 4,
    "justice": 2,
    "loisirs": 1,
    "associations": 1,
}
SECOND_THEME = 0.25
# Which organisations a theme leads to, and how often.
ORGANISATIONS: dict[str, dict[str, int]] = {
    "social_sante": {"caf": 40, "cpam": 40, "cnav": 10, "mdph": 7, "msa": 3},
    "argent_impots": {"dgfip": 70, "banque": 25, "energie": 5},
    "travail": {"france_travail": 85, "autre": 15},
    "papiers": {"ants": 80, "mairie": 20},
    "logement": {"bailleur": 45, "caf": 30, "energie": 25},
    "famille": {"ecole": 50, "caf": 40, "mairie": 10},
    "transports": {"ants": 60, "autre": 40},
    "etrangers": {"prefecture": 85, "autre": 15},
    "justice": {"autre": 100},
    "loisirs": {"mairie": 50, "autre": 50},
    "associations": {"mairie": 40, "autre": 60},
}
SEASONAL_THEMES = {"argent_impots": (4, 5, 2.5), "famille": (9, 9, 2.5)}  # months, factor
OUTCOMES = {"resolved": 60, "partial": 20, "follow_up": 12, "oriented": 8}
AUTONOMY = {"alone": 25, "with_help": 55, "done_for": 20}
MEDIA = {"screen": 65, "camera": 30, "photo": 5}
DURATION_MEDIAN_SECONDS = 25 * 60
DURATION_SIGMA = 0.5
DURATION_MU = math.log(DURATION_MEDIAN_SECONDS)
WEEKDAY = (1.15, 1.1, 0.95, 1.1, 0.9, 0.25, 0.04)
MONTH = (1.0, 1.0, 1.05, 1.35, 1.4, 1.05, 0.8, 0.45, 1.3, 1.15, 1.05, 0.85)
CHRISTMAS = 0.35  # 20 December – 2 January
# Local opening hours: weight of each hour.
HOURS = {9: 6, 10: 10, 11: 10, 12: 4, 13: 3, 14: 10, 15: 10, 16: 9, 17: 5, 18: 2}


class _Choice(Generic[T]):
    """Weighted choice with precomputed cumulative weights (random.choices re-adds each time)."""

    def __init__(self, weights: Mapping[T, float]) -> None:
        self.values = list(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))
        self.total = self.cumulative[-1]

    def __call__(self, rng: random.Random) -> T:
        return self.values[bisect.bisect(self.cumulative, rng.random() * self.total)]


@dataclass(frozen=True)
class _Context:
    """What the generator draws from, fixed before the first draw."""

    association_id: int
    zone: ZoneInfo  # the deployment's: days, months and office hours are local
    volunteers: _Choice[int]
    day_starts: list[datetime]  # local midnight of each day, in UTC
    day_weights: list[float]  # how busy each day is (week and year rhythms)
    served: _Choice[str]  # département of a person who was helped
    unmet: _Choice[str]  # département of a person who was not
    motif_of_theme: dict[str, int]
    any_motif: list[int]


def _yearly(day: date) -> float:
    if (day.month == 12 and day.day >= 20) or (day.month == 1 and day.day <= 2):
        return CHRISTMAS
    return MONTH[day.month - 1]


def _departements() -> tuple[dict[str, float], dict[str, float]]:
    """Population weights for people helped and for unmet demand."""
    served: dict[str, float] = {}
    unmet: dict[str, float] = {}
    for dep in geo.departements():
        if not dep.population:
            continue
        short = dep.code in UNDER_SERVED
        served[dep.code] = dep.population * (UNDER_SERVED_SESSIONS if short else 1.0)
        unmet[dep.code] = dep.population * (UNDER_SERVED_UNMET if short else 1.0)
    for weights in (served, unmet):
        total = sum(weights.values())
        weights[UNKNOWN_DEPARTEMENT] = total * UNKNOWN_SHARE / (1 - UNKNOWN_SHARE)
    return served, unmet


async def _volunteers(db: AsyncSession, association_id: int) -> list[int]:
    """Ids of the association's volunteers; a few demo ones are created if it has none."""
    query = (
        select(User.id)
        .where(User.association_id == association_id, User.role == Role.VOLUNTEER)
        .order_by(User.id)
    )
    ids = list(await db.scalars(query))
    if ids:
        return ids
    for number, name in enumerate(DEMO_VOLUNTEERS, 1):
        email = f"historique-{association_id}-{number}@demo.invalid"
        db.add(User(association_id=association_id, email=email, name=name, role=Role.VOLUNTEER))
    await db.flush()
    return list(await db.scalars(query))


async def has_history(db: AsyncSession, association_id: int) -> bool:
    """True if the association already has synthetic events."""
    found = await db.scalar(
        select(StatEvent.id)
        .where(StatEvent.association_id == association_id, StatEvent.session_id.like(MARKER + "%"))
        .limit(1)
    )
    return found is not None


async def delete_history(db: AsyncSession, association_id: int) -> int:
    """Delete the association's synthetic events (real ones stay); how many."""
    result = await db.execute(
        delete(StatEvent).where(
            StatEvent.association_id == association_id, StatEvent.session_id.like(MARKER + "%")
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def generate(
    db: AsyncSession,
    settings: Settings,
    association_id: int,
    sessions: int,
    *,
    days: int = 365,
    seed: int = 2026,
    now: datetime | None = None,
) -> int:
    """Insert ``sessions`` synthetic sessions over the ``days`` before ``now`` and the demand
    around them, then rebuild the rollups; how many events were written."""
    if sessions < 0 or days <= 0:
        raise ValueError("sessions must be >= 0 and days > 0")
    now = now or utcnow()
    rng = random.Random(seed)
    # Days are local to the deployment's zone, as the app's sessions count rollup days.
    zone = ZoneInfo(settings.timezone)
    context = await _context(db, zone, association_id, days, now)
    writer = _Writer(await db.connection())
    pending: asyncio.Task[None] | None = None
    events = _events(rng, context, sessions)
    while batch := list(itertools.islice(events, BATCH_ROWS)):
        # The driver inserts one batch (in its thread, outside the GIL for SQLite) while the
        # next one is generated.
        rows = writer.convert(batch)
        if pending is not None:
            await pending
        pending = asyncio.ensure_future(writer.write(rows))
    if pending is not None:
        await pending
    await rebuild_rollups(db, zone, association_id)
    return writer.written


COLUMNS = (
    "occurred_at",
    "kind",
    "association_id",
    "session_id",
    "channel",
    "media",
    "duration_seconds",
    "motif_id",
    "reason",
    "departement",
    "theme",
    "themes",
    "organisations",
    "outcome",
    "autonomy",
    "volunteer_id",
    "language",
    "language_wanted",
)
Row = tuple[Any, ...]  # the values of COLUMNS


class _Writer:
    """Bulk insert into stat_events at the driver's speed.

    ``conn.execute(insert(...), rows)`` spends most of its time building parameters value by
    value. Here the INSERT is compiled once for the connection's dialect and only the columns
    that have a bind processor (UTC datetimes, JSON) go through it, exactly as SQLAlchemy would
    apply it, with the empty JSON list serialised once; the tuples go to the driver's
    executemany.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        dialect = conn.dialect
        table = StatEvent.__table__
        statement = insert(StatEvent).values({name: bindparam(name) for name in COLUMNS})
        compiled = statement.compile(dialect=dialect)
        if tuple(compiled.positiontup or ()) != COLUMNS:
            raise RuntimeError(f"{dialect.name}: positional parameters in COLUMNS order expected")
        self.sql = str(compiled)
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(COLUMNS):
            column_type = table.columns[name].type
            process: Callable[[Any], Any] | None
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and isinstance(column_type, JSON):
                process = _cache_empty(process)
            if process is not None:
                self.processors.append((index, process))
        self.written = 0

    def convert(self, rows: Sequence[Row]) -> list[Row]:
        """The driver's parameters for ``rows``."""
        processors = self.processors
        converted = []
        for row in rows:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            converted.append(tuple(values))
        return converted

    async def write(self, rows: list[Row]) -> None:
        """Insert converted rows in one executemany."""
        await self.conn.exec_driver_sql(self.sql, rows)
        self.written += len(rows)


def _cache_empty(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Most events have no themes nor organisations: serialise the empty list once."""
    empty = process([])
    return lambda value: process(value) if value else empty


async def _context(
    db: AsyncSession, zone: ZoneInfo, association_id: int, days: int, now: datetime
) -> _Context:
    today = now.astimezone(zone).date()
    dates = [today - timedelta(days=days - offset) for offset in range(days)]  # up to yesterday
    day_starts = [datetime.combine(d, time(), zone).astimezone(UTC) for d in dates]
    day_weights = [WEEKDAY[d.weekday()] * _yearly(d) for d in dates]
    served, unmet = _departements()
    volunteer_ids = await _volunteers(db, association_id)
    # A few volunteers do most of the work (long tail), as in real associations.
    volunteers = _Choice({vid: 1 / (rank + 1) ** 0.7 for rank, vid in enumerate(volunteer_ids)})
    motif_of_theme: dict[str, int] = {}
    any_motif: list[int] = []
    rows = await db.execute(
        select(Motif.id, Motif.theme)
        .where(Motif.association_id == association_id)
        .order_by(Motif.position, Motif.id)
    )
    for motif_id, theme in rows.all():
        any_motif.append(motif_id)
        if theme:
            motif_of_theme.setdefault(theme, motif_id)
    return _Context(
        association_id=association_id,
        zone=zone,
        volunteers=volunteers,
        day_starts=day_starts,
        day_weights=day_weights,
        served=_Choice(served),
        unmet=_Choice(unmet),
        motif_of_theme=motif_of_theme,
        any_motif=any_motif,
    )


class _Draws:
    """The weighted choices, built once."""

    def __init__(self) -> None:
        self.channel = _Choice(CHANNELS)
        self.booked_via = _Choice(BOOKED_VIA)
        self.hour = _Choice(HOURS)
        self.theme = _Choice(THEMES)
        self.theme_in_month: dict[int, _Choice[str]] = {}
        for month in range(1, 13):
            weights: dict[str, float] = dict(THEMES)
            for theme, (first, last, factor) in SEASONAL_THEMES.items():
                if first <= month <= last:
                    weights[theme] *= factor  # taxes in spring, school in September
            self.theme_in_month[month] = _Choice(weights)
        self.organisation = {theme: _Choice(weights) for theme, weights in ORGANISATIONS.items()}
        self.outcome = _Choice(OUTCOMES)
        self.autonomy = _Choice(AUTONOMY)
        self.media = _Choice(MEDIA)
        self.unmet_kind = _Choice(UNMET_KINDS)
        self.left_reason = _Choice(QUEUE_LEFT_REASONS)
        self.expired_reason = _Choice(CALLBACK_EXPIRED_REASONS)
        self.rights_benefit = _Choice(
            {code: weight for code, weight in RIGHTS_BENEFITS.items() if code in BENEFITS}
        )


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainders): exact and repeatable."""
    whole = sum(weights)
    shares = [total * weight / whole for weight in weights]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


Speaker = tuple[str, bool]  # a person's language code, and whether they asked for it


class _Speakers:
    """The language of each person, from a generator of its own (the rest of the history is
    the same with or without languages)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.helped = _Choice(LANGUAGES)
        others = {code: w * UNMET_OTHER_LANGUAGES for code, w in LANGUAGES.items() if code != "fr"}
        self.unhelped = _Choice({"fr": LANGUAGES["fr"], **others})

    def __call__(self, unmet: bool = False) -> Speaker:
        """A person's language and whether they asked for a volunteer speaking it (never for
        French: the pages offer it for the other languages only)."""
        code = (self.unhelped if unmet else self.helped)(self.rng)
        share = UNMET_LANGUAGE_WANTED_SHARE if unmet else LANGUAGE_WANTED_SHARE
        return code, code != "fr" and self.rng.random() < share


def _events(rng: random.Random, ctx: _Context, sessions: int) -> Iterator[Row]:
    """Every event of the history, day by day (so that rows arrive nearly in time order, which
    keeps the occurred_at index warm): the sessions held, then the demand left unmet."""
    draws = _Draws()
    vault_rng = random.Random(f"vault-{ctx.association_id}-{sessions}")
    rights_rng = random.Random(f"rights-{ctx.association_id}-{sessions}")
    speakers = _Speakers(random.Random(f"language-{ctx.association_id}-{sessions}"))
    held = allocate(sessions, ctx.day_weights)
    missed = allocate(round(sessions * UNMET_PER_SESSION), ctx.day_weights)
    index = unmet_index = 0
    for day, midnight in enumerate(ctx.day_starts):
        month = midnight.astimezone(ctx.zone).month
        for _ in range(held[day]):
            start = _office_time(rng, draws, midnight)
            sid = f"{MARKER}{index:09d}"
            rows = list(_session(rng, ctx, draws, sid, start, month, speakers))
            yield from rows
            yield from _vault(vault_rng, ctx, sid, start)
            yield from _rights(rights_rng, ctx, draws, rows[-1])
            index += 1
        for _ in range(missed[day]):
            when = _office_time(rng, draws, midnight)
            sid = f"{MARKER}u{unmet_index:09d}"
            yield from _unmet(rng, ctx, draws, sid, when, speakers(unmet=True))
            unmet_index += 1


def _office_time(rng: random.Random, draws: _Draws, midnight: datetime) -> datetime:
    """A moment in one of the day's opening hours (``midnight`` is the local one, in UTC)."""
    return midnight + timedelta(hours=draws.hour(rng), seconds=rng.randrange(3600))


def _session(
    rng: random.Random,
    ctx: _Context,
    draws: _Draws,
    sid: str,
    start: datetime,
    month: int,
    speakers: _Speakers,
) -> Iterator[Row]:
    """The events of one session held on ``channel``, ending with its handoff sheet; the
    steps of the person's demand carry their language."""
    assoc = ctx.association_id
    channel = draws.channel(rng)
    dep = _departement(rng, ctx.served)
    volunteer = ctx.volunteers(rng)
    main = draws.theme_in_month[month](rng)
    theme_list = [main]
    if rng.random() < SECOND_THEME:
        other = draws.theme(rng)
        if other != main:
            theme_list.append(other)
    orgs = {draws.organisation[t](rng) for t in theme_list}
    motif = ctx.motif_of_theme.get(main, ctx.any_motif[-1] if ctx.any_motif else None)
    duration = int(min(3 * 3600, max(180, rng.lognormvariate(DURATION_MU, DURATION_SIGMA))))

    if channel == "appointment":
        booked = start - timedelta(days=rng.randint(1, 20), minutes=rng.randint(0, 600))
        via = draws.booked_via(rng)
        speaker = speakers()
        yield _row(
            assoc, K.APPOINTMENT_BOOKED, booked, sid, via, motif=motif, dep=dep, lang=speaker
        )
        # Some other bookings were cancelled or missed.
        missed = rng.random()
        if missed < APPOINTMENT_CANCELLED + APPOINTMENT_NO_SHOW:
            other_sid = sid.replace(MARKER, MARKER + "a", 1)
            other_person = speakers()
            yield _row(
                assoc,
                K.APPOINTMENT_BOOKED,
                booked,
                other_sid,
                "public",
                motif=motif,
                lang=other_person,
            )
            if missed < APPOINTMENT_CANCELLED:
                cancelled = booked + (start - booked) * rng.random()
                yield _row(
                    assoc, K.APPOINTMENT_CANCELLED, cancelled, other_sid, None, lang=other_person
                )
            else:
                no_show = start + timedelta(minutes=20)
                yield _row(assoc, K.NO_SHOW, no_show, other_sid, channel, lang=other_person)
    elif channel == "drop_in":
        wait = int(rng.expovariate(1 / 600)) + 20
        joined = start - timedelta(seconds=wait)
        speaker = speakers()
        yield _row(assoc, K.QUEUE_JOINED, joined, sid, channel, motif=motif, dep=dep, lang=speaker)
        yield _row(
            assoc,
            K.QUEUE_TAKEN,
            start,
            sid,
            channel,
            motif=motif,
            duration=wait,
            dep=dep,
            lang=speaker,
        )
        yield _row(assoc, K.SESSION_CREATED, start, sid, channel)
    elif channel == "callback":
        age = int(rng.expovariate(1 / 86400)) + 600
        asked = start - timedelta(seconds=age)
        speaker = speakers()
        yield _row(
            assoc, K.CALLBACK_REQUESTED, asked, sid, channel, motif=motif, dep=dep, lang=speaker
        )
        if rng.random() < 0.3:
            tried = asked + (start - asked) / 2
            yield _row(
                assoc,
                K.CALLBACK_ATTEMPTED,
                tried,
                sid,
                channel,
                motif=motif,
                reason="no_answer",
                dep=dep,
                lang=speaker,
            )
        yield _row(
            assoc,
            K.CALLBACK_RESOLVED,
            start,
            sid,
            channel,
            motif=motif,
            reason="visio_link",
            duration=age,
            dep=dep,
            lang=speaker,
        )
        yield _row(assoc, K.SESSION_CREATED, start, sid, channel)
    else:
        created = start - timedelta(seconds=rng.randint(30, 300))
        yield _row(assoc, K.SESSION_CREATED, created, sid, channel)

    yield _row(assoc, K.BENEFICIARY_JOINED, start, sid, channel)
    shared = start + timedelta(seconds=20)
    yield _row(assoc, K.MEDIA_SHARED, shared, sid, channel, media=draws.media(rng))
    ended = start + timedelta(seconds=duration)
    yield _row(assoc, K.SESSION_ENDED, ended, sid, channel, duration=duration)
    yield _row(
        assoc,
        K.SHEET_FILED,
        ended + timedelta(seconds=rng.randint(30, 600)),
        sid,
        channel,
        dep=dep,
        theme=main,
        themes=theme_list,
        organisations=[code for code in ORGANISATIONS_ORDER if code in orgs],
        outcome=draws.outcome(rng),
        autonomy=draws.autonomy(rng),
        volunteer=volunteer,
        duration=duration,
    )


_VAULT_CATEGORY = _Choice(VAULT_CATEGORIES)


def _vault(rng: random.Random, ctx: _Context, sid: str, start: datetime) -> Iterator[Row]:
    """The vault steps of a session: a vault made from the room and its first documents, or a
    document shown (what issue 15's statistics count; no content, no name)."""
    assoc, later = ctx.association_id, start + timedelta(minutes=5)
    draw = rng.random()
    if draw < VAULT_CREATED_SHARE:
        dep = _departement(rng, ctx.served)
        yield _row(assoc, K.VAULT_CREATED, later, sid, None, dep=dep)
        for n in range(1 + int(rng.expovariate(1 / 1.5))):
            shared = rng.random() < VAULT_CATEGORY_SHARED
            category = _VAULT_CATEGORY(rng) if shared else taxonomy.VAULT_NON_PRECISE
            added = later + timedelta(minutes=n + 1)
            yield _row(assoc, K.VAULT_DOCUMENT_ADDED, added, sid, None, dep=dep, theme=category)
    elif draw < VAULT_CREATED_SHARE + VAULT_SHOWN_SHARE:
        reason = COPY_REASON if rng.random() < VAULT_COPY_SHARE else None
        dep = _departement(rng, ctx.served)
        yield _row(assoc, K.VAULT_DOCUMENT_SHOWN, later, sid, "link", dep=dep, reason=reason)


_RIGHTS_HOW_MANY = _Choice(RIGHTS_HOW_MANY)
_RIGHTS_BAND = {code: _Choice(bands) for code, bands in RIGHTS_BANDS.items()}
RIGHTS_MARKER = MARKER + "rights"  # a check's events are tied to no session, even here


def _rights(rng: random.Random, ctx: _Context, draws: _Draws, sheet: Row) -> Iterator[Row]:
    """Maybe a rights check made during the session of ``sheet`` (its handoff sheet's row), as
    ``record_check`` leaves it when the sheet is filed: the session's département and channel,
    the benefits found probably due and not received with their amount bands."""
    when, channel, dep, theme = sheet[0], sheet[4], sheet[9], sheet[10]
    if rng.random() >= RIGHTS_CHECK_SHARE.get(theme, RIGHTS_CHECK_OTHER):
        return
    assoc = ctx.association_id
    found_share = RIGHTS_FOUND_UNDER_SERVED if dep in UNDER_SERVED else RIGHTS_FOUND_SHARE
    found: list[str] = []
    if rng.random() < found_share:
        how_many = _RIGHTS_HOW_MANY(rng)
        while len(found) < how_many:
            code = draws.rights_benefit(rng)
            if code not in found:
                found.append(code)
    reason = CHECK_FOUND if found else CHECK_NONE
    yield _row(assoc, K.RIGHTS_CHECKED, when, RIGHTS_MARKER, channel, dep=dep, reason=reason)
    for code in found:
        band = _RIGHTS_BAND[code](rng)
        yield _row(
            assoc,
            K.RIGHTS_UNCLAIMED,
            when,
            RIGHTS_MARKER,
            channel,
            dep=dep,
            theme=code,
            reason=band,
        )


def _unmet(
    rng: random.Random, ctx: _Context, draws: _Draws, sid: str, when: datetime, speaker: Speaker
) -> Iterator[Row]:
    """One person who found no help, more often where permanences are lacking; each of their
    steps carries their language."""
    assoc = ctx.association_id
    dep = _departement(rng, ctx.unmet)
    motif = ctx.motif_of_theme.get(draws.theme(rng))
    kind = draws.unmet_kind(rng)
    if kind == "no_slot_found":
        yield _row(assoc, K.NO_SLOT_FOUND, when, sid, None, dep=dep, lang=speaker)
    elif kind == "queue_left":
        wait = int(rng.expovariate(1 / 900)) + 30
        left = when + timedelta(seconds=wait)
        reason = draws.left_reason(rng)
        yield _row(assoc, K.QUEUE_JOINED, when, sid, "drop_in", motif=motif, dep=dep, lang=speaker)
        yield _row(
            assoc,
            K.QUEUE_LEFT,
            left,
            sid,
            "drop_in",
            motif=motif,
            reason=reason,
            duration=wait,
            dep=dep,
            lang=speaker,
        )
    else:
        reason = draws.expired_reason(rng)
        yield _row(
            assoc, K.CALLBACK_REQUESTED, when, sid, "callback", motif=motif, dep=dep, lang=speaker
        )
        if reason == "unreachable":
            for attempt in range(3):
                yield _row(
                    assoc,
                    K.CALLBACK_ATTEMPTED,
                    when + timedelta(days=attempt + 1),
                    sid,
                    "callback",
                    motif=motif,
                    reason="no_answer",
                    dep=dep,
                    lang=speaker,
                )
            age = 3 * 86400
        else:
            age = 7 * 86400 + rng.randrange(3600)
        closed = when + timedelta(seconds=age)
        yield _row(
            assoc,
            K.CALLBACK_EXPIRED,
            closed,
            sid,
            "callback",
            motif=motif,
            reason=reason,
            duration=age,
            dep=dep,
            lang=speaker,
        )


ORGANISATIONS_ORDER: tuple[str, ...] = tuple(
    dict.fromkeys(code for weights in ORGANISATIONS.values() for code in weights)
)


def _departement(rng: random.Random, weights: _Choice[str]) -> str | None:
    if rng.random() < NO_POSTAL_CODE_SHARE:
        return None
    return weights(rng)


def _row(
    association_id: int,
    kind: EventKind,
    occurred_at: datetime,
    session_id: str,
    channel: str | None,
    *,
    motif: int | None = None,
    dep: str | None = None,
    reason: str | None = None,
    duration: int | None = None,
    media: str | None = None,
    theme: str | None = None,
    themes: Sequence[str] = (),
    organisations: Sequence[str] = (),
    outcome: str | None = None,
    autonomy: str | None = None,
    volunteer: int | None = None,
    lang: Speaker | None = None,
) -> Row:
    """One stat_events row, the values of COLUMNS in order (``lang``: the person's language
    and whether they asked for it, on the steps of their demand)."""
    return (
        occurred_at,
        kind.value,
        association_id,
        session_id,
        channel,
        media,
        duration,
        motif,
        reason,
        dep,
        theme,
        list(themes),
        list(organisations),
        outcome,
        autonomy,
        volunteer,
        lang[0] if lang else None,
        lang[1] if lang else None,
    )
