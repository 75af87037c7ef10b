"""The coordinator's statistics: daily rollups of the events, and the figures of ``/stats``.

Rollup design (table ``stat_rollups``, model ``StatRollup``)
-------------------------------------------------------------
Every dashboard query groups by *time + one dimension*, filtered by period, channel and theme.
So each event adds 1 to a few small counters, one per (dimension, value), rather than to one
row keyed by every dimension at once (that key is nearly unique per helped session: the table
would be as big as the events). The key is::

    (association_id, dim, channel, theme, day, kind, value) -> count, duration_sum

- ``day``: the local date in the deployment's time zone (``PERMANENCE_TIMEZONE``).
- ``dim``/``value``: ``all``/"" (every event), ``dep``/département code ("" when no postal code
  was given, "99" when it could not be placed), ``outcome``, ``autonomy``, ``reason``, ``org``
  (one row per organisation of a sheet), ``vol`` (volunteer id of a sheet), ``dur`` (duration
  bucket of a sheet or an ended session).
- ``channel`` and ``theme`` are written twice: the event's own value ("" for none) and ``'*'``
  ("all"). An unfiltered query reads only the ``'*'`` rows, a filtered one only its value: no
  double counting, and the rows read stay few (about kinds × départements per day).
- Themes are multi-valued on sheets: the event gets one row per distinct theme (its ``theme``
  plus its ``themes``) besides the ``'*'`` row, so "by theme" counts a sheet under each of its
  themes (their sum can exceed the total) and a theme filter counts it once.
- ``kind`` is the event kind, plus the synthetic kind ``unmet`` for unmet demand: people who left
  the queue (left/lost/gone), call-backs expired or closed on a wrong number, booking searches
  that found no slot. ``channel`` is normalised to link/appointment/drop_in/callback.

Maintenance: ``server.stats`` installs a Session ``after_flush`` hook that calls
``apply_flush``: the StatEvents inserted (or changed, or deleted through the ORM) by a flush are
turned into counter deltas and applied with one ``INSERT … ON CONFLICT DO UPDATE SET count =
count + excluded.count`` in the same transaction, keys sorted so that concurrent writers lock
rows in the same order. A flush hook rather than code in ``record()``: some callers set the
event's association or channel after ``record()`` returns. Rows written by Core bulk inserts
are not seen: call ``rebuild_rollups`` afterwards (the demo generator does). Both paths derive
the keys with the same function (``_deltas``), and a test checks they agree.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Table, Text, case, cast, delete, func, inspect, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from server import geo, taxonomy
from server.i18n import N_, _
from server.models import StatEvent, StatRollup, User
from server.stats import UNKNOWN_DEPARTEMENT, EventKind

ALL = "*"
NONE = ""
UNMET = "unmet"
TIMEZONE_INFO = "stats_timezone"  # Session.info key: the zone rollup days are counted in
DEFAULT_TIMEZONE = "Europe/Paris"
MAX_SPAN_DAYS = 5 * 366
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2100, 12, 31)

CHANNELS: dict[str, str] = {
    "link": N_("Lien"),
    "appointment": N_("Rendez-vous"),
    "drop_in": N_("Sans rendez-vous"),
    "callback": N_("Rappel"),
}
DURATION_BUCKETS: dict[str, str] = {
    "0-5": N_("moins de 5 min"),
    "5-15": N_("5 à 15 min"),
    "15-30": N_("15 à 30 min"),
    "30-60": N_("30 min à 1 h"),
    "60+": N_("plus d'1 h"),
}
_BUCKET_LIMITS = ((300, "0-5"), (900, "5-15"), (1800, "15-30"), (3600, "30-60"))
UNMET_QUEUE_REASONS = frozenset({"left", "lost", "gone"})
UNMET_CALLBACK_REASONS = frozenset({"wrong_number"})

_APPOINTMENT_KINDS = {
    EventKind.APPOINTMENT_BOOKED,
    EventKind.APPOINTMENT_CANCELLED,
    EventKind.APPOINTMENT_RESCHEDULED,
    EventKind.NO_SLOT_FOUND,
    EventKind.WAITLIST_JOINED,
    EventKind.NO_SHOW,
}
_QUEUE_KINDS = {k for k in EventKind if k.value.startswith("queue_")}
_CALLBACK_KINDS = {k for k in EventKind if k.value.startswith("callback_")}
_DEP_KINDS = {
    EventKind.SHEET_FILED,
    EventKind.APPOINTMENT_BOOKED,
    EventKind.QUEUE_JOINED,
    EventKind.QUEUE_LEFT,
    EventKind.CALLBACK_REQUESTED,
    EventKind.CALLBACK_RESOLVED,
    EventKind.CALLBACK_EXPIRED,
    EventKind.NO_SLOT_FOUND,
    UNMET,
}
_DURATION_KINDS = {EventKind.SHEET_FILED, EventKind.SESSION_ENDED}
SESSIONS = EventKind.SHEET_FILED.value  # a helped session is counted by its handoff sheet
DEMAND_KINDS = (
    EventKind.APPOINTMENT_BOOKED.value,
    EventKind.QUEUE_JOINED.value,
    EventKind.CALLBACK_REQUESTED.value,
)
VOLUME_KINDS = (SESSIONS, EventKind.SESSION_ENDED.value, *DEMAND_KINDS, UNMET)
FACET_DIMS = ("org", "outcome", "autonomy", "dur", "vol")
_ROLLUPS: Table = StatRollup.__table__  # type: ignore[assignment]
_PK = ("association_id", "dim", "channel", "theme", "day", "kind", "value")


# -- Keys ---------------------------------------------------------------------------------------


def rollup_zone(session: Session | AsyncSession) -> ZoneInfo:
    """The zone rollup days are counted in: the app's settings.timezone (put in Session.info by
    ``configure_sessions``), else PERMANENCE_TIMEZONE, else Europe/Paris."""
    name = session.info.get(TIMEZONE_INFO) or os.environ.get("PERMANENCE_TIMEZONE")
    try:
        return ZoneInfo(str(name or DEFAULT_TIMEZONE))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def channel_of(kind: str, channel: str | None) -> str:
    """The dashboard channel of an event: booking, queue and call-back steps by their kind."""
    if kind in _APPOINTMENT_KINDS:
        return "appointment"
    if kind in _QUEUE_KINDS:
        return "drop_in"
    if kind in _CALLBACK_KINDS:
        return "callback"
    return (channel or NONE)[:20]


def is_unmet(kind: str, reason: str | None) -> bool:
    """Demand that found no help: left the queue, call-back lost, no slot found."""
    if kind == EventKind.QUEUE_LEFT:
        return reason in UNMET_QUEUE_REASONS
    if kind == EventKind.CALLBACK_RESOLVED:
        return reason in UNMET_CALLBACK_REASONS
    return kind in (EventKind.CALLBACK_EXPIRED, EventKind.NO_SLOT_FOUND)


def duration_bucket(seconds: int | None) -> str | None:
    """The duration class of a session (None without a duration)."""
    if seconds is None:
        return None
    for limit, code in _BUCKET_LIMITS:
        if seconds < limit:
            return code
    return "60+"


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rollups keep of an event (or of a group of identical events)."""

    day: date
    association_id: int | None
    kind: str
    channel: str | None
    theme: str | None
    themes: tuple[str, ...]
    organisations: tuple[str, ...]
    departement: str | None
    outcome: str | None
    autonomy: str | None
    reason: str | None
    volunteer_id: int | None
    bucket: str | None


def _strings(values: object) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        return ()
    return tuple(v for v in values if isinstance(v, str) and v)


def _deltas(facts: _Facts) -> Iterator[tuple[tuple[Any, ...], str]]:
    """The rollup keys one event adds to, as (key without day-independent order, dim)."""
    themes = list(dict.fromkeys(t[:30] for t in (facts.theme, *facts.themes) if t)) or [NONE]
    dims: list[tuple[str, str]] = [("all", NONE)]
    if facts.kind in _DEP_KINDS or facts.departement:
        dims.append(("dep", facts.departement or NONE))
    extra: list[tuple[str, str]] = []
    for dim, value in (
        ("outcome", facts.outcome),
        ("autonomy", facts.autonomy),
        ("reason", facts.reason),
    ):
        if value:
            extra.append((dim, value[:40]))
    extra.extend(("org", org[:40]) for org in dict.fromkeys(facts.organisations))
    if facts.volunteer_id is not None:
        extra.append(("vol", str(facts.volunteer_id)))
    if facts.bucket is not None and facts.kind in _DURATION_KINDS:
        extra.append(("dur", facts.bucket))
    channel = channel_of(facts.kind, facts.channel)
    association = facts.association_id or 0
    kinds = [(facts.kind, dims + extra)]
    if is_unmet(facts.kind, facts.reason):
        kinds.append((UNMET, dims + [d for d in extra if d[0] == "reason"]))
    for kind, kind_dims in kinds:
        for ch in (channel, ALL):
            for th in (*themes, ALL):
                for dim, value in kind_dims:
                    yield (association, dim, ch, th, facts.day, kind[:40], value), dim


def _facts_of(values: Mapping[str, Any], zone: ZoneInfo) -> _Facts:
    occurred: datetime = values["occurred_at"]
    duration = values["duration_seconds"]
    return _Facts(
        day=occurred.astimezone(zone).date(),
        association_id=values["association_id"],
        kind=values["kind"],
        channel=values["channel"],
        theme=values["theme"],
        themes=_strings(values["themes"]),
        organisations=_strings(values["organisations"]),
        departement=values["departement"],
        outcome=values["outcome"],
        autonomy=values["autonomy"],
        reason=values["reason"],
        volunteer_id=values["volunteer_id"],
        bucket=duration_bucket(duration),
    )


_FACT_COLUMNS = (
    "occurred_at",
    "association_id",
    "kind",
    "channel",
    "theme",
    "themes",
    "organisations",
    "departement",
    "outcome",
    "autonomy",
    "reason",
    "volunteer_id",
    "duration_seconds",
)


def _add(
    totals: dict[tuple[Any, ...], list[int]], facts: _Facts, count: int, duration: int
) -> None:
    for key, _dim in _deltas(facts):
        cell = totals.get(key)
        if cell is None:
            totals[key] = [count, duration]
        else:
            cell[0] += count
            cell[1] += duration


def _upsert_rows(dialect: str, rows: list[dict[str, Any]]) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = _ROLLUPS
    statement = insert(table).values(rows)
    return statement.on_conflict_do_update(
        index_elements=list(_PK),
        set_={
            "count": table.c.count + statement.excluded.count,
            "duration_sum": table.c.duration_sum + statement.excluded.duration_sum,
        },
    )


def _rows(totals: dict[tuple[Any, ...], list[int]]) -> list[dict[str, Any]]:
    return [
        {**dict(zip(_PK, key, strict=True)), "count": count, "duration_sum": duration}
        for key, (count, duration) in sorted(totals.items(), key=lambda kv: _sort_key(kv[0]))
    ]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(str(part) for part in key)


def apply_flush(session: Session) -> None:
    """after_flush hook: add the StatEvents this flush wrote to the rollups, same transaction."""
    zone = rollup_zone(session)
    totals: dict[tuple[Any, ...], list[int]] = {}
    for obj in session.new:
        if isinstance(obj, StatEvent):
            values = {name: getattr(obj, name) for name in _FACT_COLUMNS}
            _add(totals, _facts_of(values, zone), 1, values["duration_seconds"] or 0)
    for obj in session.dirty:
        if isinstance(obj, StatEvent) and session.is_modified(obj):
            state = inspect(obj)
            now = {name: getattr(obj, name) for name in _FACT_COLUMNS}
            before = dict(now)
            for name in _FACT_COLUMNS:
                history = state.attrs[name].history
                if history.deleted:
                    before[name] = history.deleted[0]
            if before != now:
                _add(totals, _facts_of(before, zone), -1, -(before["duration_seconds"] or 0))
                _add(totals, _facts_of(now, zone), 1, now["duration_seconds"] or 0)
    for obj in session.deleted:
        if isinstance(obj, StatEvent):
            values = {name: getattr(obj, name) for name in _FACT_COLUMNS}
            _add(totals, _facts_of(values, zone), -1, -(values["duration_seconds"] or 0))
    totals = {key: cell for key, cell in totals.items() if cell != [0, 0]}
    if not totals:
        return
    connection = session.connection()
    rows = _rows(totals)
    for start in range(0, len(rows), 500):
        connection.execute(_upsert_rows(connection.dialect.name, rows[start : start + 500]))


# -- Rebuild --------------------------------------------------------------------------------------


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """[(UTC instant, UTC offset in seconds from then on)] between start and end."""

    def offset(moment: datetime) -> int:
        delta = moment.astimezone(zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    changes = [(start, offset(start))]
    day = start
    while day < end:
        following = day + timedelta(days=1)
        if offset(following) != offset(day):
            low, high = day, following  # bisect to the second
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if offset(middle) == offset(low):
                    low = middle
                else:
                    high = middle
            changes.append((high.replace(microsecond=0), offset(high)))
        day = following
    return changes


def _local_day_sql(dialect: str, zone: ZoneInfo, start: datetime, end: datetime) -> Any:
    column = StatEvent.occurred_at
    if dialect == "postgresql":
        return func.date(func.timezone(zone.key, column))
    changes = _offset_changes(zone, start, end + timedelta(days=1))

    def shifted(seconds: int) -> Any:
        return func.date(column, f"{seconds:+d} seconds")

    if len(changes) == 1:
        return shifted(changes[0][1])
    whens = [(column < changes[i + 1][0], shifted(changes[i][1])) for i in range(len(changes) - 1)]
    return case(*whens, else_=shifted(changes[-1][1]))


def _bucket_sql() -> Any:
    column = StatEvent.duration_seconds
    whens = [(column < limit, literal(code)) for limit, code in _BUCKET_LIMITS]
    return case((column.is_(None), literal(None)), *whens, else_=literal("60+"))


async def rebuild_rollups(db: AsyncSession, association_id: int | None = None) -> int:
    """Recompute the rollups from stat_events (all associations, or one); returns rows written.

    For bulk imports (Core inserts bypass the flush hook) and repairs. Identical events are
    first grouped in SQL, then exploded into keys by the same code as the incremental path."""
    table = _ROLLUPS
    wipe = delete(table)
    events = select(func.min(StatEvent.occurred_at), func.max(StatEvent.occurred_at))
    if association_id is not None:
        wipe = wipe.where(table.c.association_id == association_id)
        events = events.where(StatEvent.association_id == association_id)
    await db.execute(wipe)
    first, last = (await db.execute(events)).one()
    if first is None or last is None:
        return 0
    dialect = db.get_bind().dialect.name
    zone = rollup_zone(db)
    day = _local_day_sql(dialect, zone, first, last).label("day")
    bucket = _bucket_sql().label("bucket")
    themes = cast(StatEvent.themes, Text).label("themes")
    organisations = cast(StatEvent.organisations, Text).label("organisations")
    keys = (
        day,
        StatEvent.association_id,
        StatEvent.kind,
        StatEvent.channel,
        StatEvent.theme,
        themes,
        organisations,
        StatEvent.departement,
        StatEvent.outcome,
        StatEvent.autonomy,
        StatEvent.reason,
        StatEvent.volunteer_id,
        bucket,
    )
    grouped = select(
        *keys, func.count(), func.coalesce(func.sum(StatEvent.duration_seconds), 0)
    ).group_by(*keys)
    if association_id is not None:
        grouped = grouped.where(StatEvent.association_id == association_id)
    lists: dict[str | None, tuple[str, ...]] = {}

    def parsed(raw: str | None) -> tuple[str, ...]:
        found = lists.get(raw)
        if found is None:
            try:
                found = _strings(json.loads(raw)) if raw else ()
            except ValueError:
                found = ()
            lists[raw] = found
        return found

    totals: dict[tuple[Any, ...], list[int]] = {}
    result = await db.stream(grouped.execution_options(yield_per=20_000))
    async for partition in result.partitions():
        for row in partition:
            raw_day = row[0]
            facts = _Facts(
                day=raw_day if isinstance(raw_day, date) else date.fromisoformat(raw_day),
                association_id=row[1],
                kind=row[2],
                channel=row[3],
                theme=row[4],
                themes=parsed(row[5]),
                organisations=parsed(row[6]),
                departement=row[7],
                outcome=row[8],
                autonomy=row[9],
                reason=row[10],
                volunteer_id=row[11],
                bucket=row[12],
            )
            _add(totals, facts, int(row[13]), int(row[14]))
    rows = [
        {**dict(zip(_PK, key, strict=True)), "count": count, "duration_sum": duration}
        for key, (count, duration) in totals.items()
    ]
    for start in range(0, len(rows), 5_000):
        await db.execute(table.insert(), rows[start : start + 5_000])
    return len(rows)


# -- Filters --------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter the dashboard cannot use; the message is French, for the page or the API."""


@dataclass(frozen=True)
class Filters:
    """Period (local dates, both included), optional channel and theme, time step."""

    start: date
    end: date
    channel: str | None = None
    theme: str | None = None
    granularity: str = "month"  # or "week"

    def query(self, **changes: str) -> dict[str, str]:
        """These filters as query parameters (for links), with some changed."""
        values = {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "channel": self.channel or "",
            "theme": self.theme or "",
            "step": self.granularity,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v}


def default_start(today: date) -> date:
    """The first day of the month eleven months ago: twelve calendar months with this one."""
    month = today.month - 11
    year = today.year
    if month <= 0:
        month += 12
        year -= 1
    return date(year, month, 1)


def _date(raw: str | None, fallback: date) -> date:
    if not raw:
        return fallback
    try:
        value = date.fromisoformat(raw.strip()[:10])
    except ValueError:
        raise FilterError(
            _("Date invalide : écrivez-la sous la forme AAAA-MM-JJ, par exemple 2025-01-31.")
        ) from None
    if not MIN_DATE <= value <= MAX_DATE:
        raise FilterError(_("Date hors limites : choisissez une date entre 2000 et 2100."))
    return value


def parse_filters(query: Mapping[str, str], today: date) -> Filters:
    """Read the filters of a request; FilterError (French) for anything unusable."""
    start = _date(query.get("from"), default_start(today))
    end = _date(query.get("to"), today)
    if end < start:
        raise FilterError(_("La date de fin doit être après la date de début."))
    if (end - start).days + 1 > MAX_SPAN_DAYS:
        raise FilterError(_("Période trop longue : 5 ans au plus."))
    channel = (query.get("channel") or "").strip() or None
    if channel is not None and channel not in CHANNELS:
        raise FilterError(_("Canal inconnu."))
    theme = (query.get("theme") or "").strip() or None
    if theme is not None and theme not in taxonomy.THEMES:
        raise FilterError(_("Thème inconnu."))
    step = (query.get("step") or "month").strip()
    if step not in ("month", "week"):
        raise FilterError(_("Pas de temps inconnu : month ou week."))
    return Filters(start, end, channel, theme, step)


# -- Queries --------------------------------------------------------------------------------------


def _where(
    association_id: int,
    filters: Filters,
    dim: str | Iterable[str],
    by_channel: bool = False,
    by_theme: bool = False,
) -> list[Any]:
    t = StatRollup
    clauses: list[Any] = [
        t.association_id == association_id,
        t.dim == dim if isinstance(dim, str) else t.dim.in_(list(dim)),
        t.day >= filters.start,
        t.day <= filters.end,
    ]
    if by_channel:
        clauses.append(t.channel == filters.channel if filters.channel else t.channel != ALL)
    else:
        clauses.append(t.channel == (filters.channel or ALL))
    if by_theme:
        clauses.append(t.theme == filters.theme if filters.theme else t.theme != ALL)
    else:
        clauses.append(t.theme == (filters.theme or ALL))
    return clauses


def period_of(day: date, granularity: str) -> date:
    """The first day of the week (Monday) or month a day falls in."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _periods(filters: Filters) -> list[date]:
    first = period_of(filters.start, filters.granularity)
    found = []
    current = first
    while current <= filters.end:
        found.append(current)
        if filters.granularity == "week":
            current += timedelta(days=7)
        else:
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
    return found


@dataclass
class Departement:
    """One département's line: sessions (sheets) and unmet demand, counts and per 100,000."""

    code: str
    name: str
    population: int | None
    sessions: int = 0
    unmet: int = 0
    demand: int = 0

    def rate(self, count: int) -> float | None:
        """Per 100,000 inhabitants; None without a population."""
        if not self.population:
            return None
        return count * 100_000 / self.population

    @property
    def sessions_rate(self) -> float | None:
        """Sessions per 100,000 inhabitants."""
        return self.rate(self.sessions)

    @property
    def unmet_rate(self) -> float | None:
        """Unmet demand per 100,000 inhabitants."""
        return self.rate(self.unmet)


@dataclass
class Report:
    """Everything /stats, its CSV files and the API show, for one association and filters."""

    filters: Filters
    totals: Counter[str] = field(default_factory=Counter)
    duration_sum: int = 0
    periods: list[date] = field(default_factory=list)
    volumes: dict[date, Counter[str]] = field(default_factory=dict)  # "kind" / "kind:channel"
    themes: dict[str, Counter[str]] = field(default_factory=dict)  # theme -> kind -> n
    facets: dict[str, Counter[str]] = field(default_factory=dict)  # dim -> value -> sheets
    volunteer_names: dict[str, str] = field(default_factory=dict)
    departements: list[Departement] = field(default_factory=list)
    unknown: Departement = field(default_factory=lambda: Departement("", "", None))

    @property
    def is_empty(self) -> bool:
        """Nothing at all was counted in the period."""
        return not any(self.totals.values())

    def ranking(self) -> list[Departement]:
        """Where to open a permanence: highest unmet demand per 100,000 first."""
        placed = [d for d in self.departements if d.unmet > 0]
        return sorted(
            placed,
            key=lambda d: (d.unmet_rate is None, -(d.unmet_rate or 0.0), -d.unmet, d.code),
        )


async def build_report(db: AsyncSession, association_id: int, filters: Filters) -> Report:
    """Read the rollups of one association for these filters (five small indexed queries)."""
    t = StatRollup
    report = Report(filters=filters, periods=_periods(filters))
    volumes = await db.execute(
        select(t.day, t.kind, t.channel, func.sum(t.count), func.sum(t.duration_sum))
        .where(*_where(association_id, filters, "all", by_channel=True))
        .where(t.kind.in_(VOLUME_KINDS))
        .group_by(t.day, t.kind, t.channel)
    )
    for day, kind, channel, count, duration in volumes:
        bucket = report.volumes.setdefault(period_of(day, filters.granularity), Counter())
        bucket[kind] += int(count)
        bucket[f"{kind}:{channel}"] += int(count)
        report.totals[kind] += int(count)
        report.totals[f"{kind}:{channel}"] += int(count)
        if kind == SESSIONS:
            report.duration_sum += int(duration)
    themes = await db.execute(
        select(t.theme, t.kind, func.sum(t.count))
        .where(*_where(association_id, filters, "all", by_theme=True))
        .where(t.kind.in_((SESSIONS, UNMET, *DEMAND_KINDS)))
        .group_by(t.theme, t.kind)
    )
    for theme, kind, count in themes:
        report.themes.setdefault(theme, Counter())[kind] += int(count)
    facets = await db.execute(
        select(t.dim, t.value, func.sum(t.count))
        .where(*_where(association_id, filters, FACET_DIMS))
        .where(t.kind == SESSIONS)
        .group_by(t.dim, t.value)
    )
    for dim, value, count in facets:
        report.facets.setdefault(dim, Counter())[value] += int(count)
    volunteer_ids = [int(v) for v in report.facets.get("vol", {}) if v.isdigit()]
    if volunteer_ids:
        names = await db.execute(
            select(User.id, User.name).where(
                User.id.in_(volunteer_ids), User.association_id == association_id
            )
        )
        report.volunteer_names = {str(uid): name for uid, name in names}
    deps = await db.execute(
        select(t.value, t.kind, func.sum(t.count))
        .where(*_where(association_id, filters, "dep"))
        .where(t.kind.in_((SESSIONS, UNMET, *DEMAND_KINDS)))
        .group_by(t.value, t.kind)
    )
    by_code = {d.code: Departement(d.code, d.name, d.population) for d in geo.departements()}
    report.unknown = Departement("", _("inconnu"), None)
    for code, kind, count in deps:
        line = by_code.get(code)
        if line is None or code == UNKNOWN_DEPARTEMENT:
            line = report.unknown
        if kind == SESSIONS:
            line.sessions += int(count)
        elif kind == UNMET:
            line.unmet += int(count)
        else:
            line.demand += int(count)
    report.departements = list(by_code.values())
    return report


# -- Presentation helpers (shared by the page, the CSV files and the API) -------------------------


def shown(count: int, small: int) -> int | str:
    """A count as published: below the small-count threshold, "< N" (0 stays 0)."""
    return f"< {small}" if 0 < count < small else count


def published_rate(dep: Departement, count: int, small: int) -> float | None:
    """A rate per 100,000 as published: none when its count is suppressed or no population."""
    rate = dep.rate(count)
    if rate is None or 0 < count < small:
        return None
    return round(rate, 2)


def french_number(value: float | int | None, digits: int = 1) -> str:
    """12 345,6 — French grouping (narrow no-break space) and decimal comma; "—" for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}".replace(",", "\u202f")
    return f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")


def quantile_classes(values: Iterable[float], classes: int = 5) -> list[float]:
    """Upper bounds of up to ``classes`` quantile classes of the positive values."""
    positive = sorted(v for v in values if v > 0)
    if not positive:
        return []
    bounds: list[float] = []
    for i in range(1, classes + 1):
        index = min(len(positive) - 1, math.ceil(i * len(positive) / classes) - 1)
        bound = positive[index]
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    return bounds


def class_of(value: float | None, bounds: list[float]) -> int | None:
    """0 for zero, 1.. for the quantile class, None for no value (no population)."""
    if value is None:
        return None
    if value <= 0 or not bounds:
        return 0
    return min(bisect.bisect_left(bounds, value) + 1, len(bounds))


def median_bucket(counts: Mapping[str, int]) -> str | None:
    """The duration class holding the median session."""
    total = sum(counts.values())
    if not total:
        return None
    seen = 0
    for code in DURATION_BUCKETS:
        seen += counts.get(code, 0)
        if seen * 2 >= total:
            return code
    return None


def local_today(zone_name: str) -> date:
    """Today in the given zone."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(DEFAULT_TIMEZONE)
    return datetime.now(UTC).astimezone(zone).date()


# -- Exports: CSV tables and the JSON API -------------------------------------------------------

TABLES: dict[str, str] = {
    "volumes": N_("Volumes par période"),
    "themes": N_("Par thème"),
    "organisations": N_("Par organisme"),
    "outcomes": N_("Par résultat"),
    "autonomy": N_("Par autonomie"),
    "durations": N_("Durées"),
    "volunteers": N_("Charge des bénévoles"),
    "departements": N_("Par département"),
    "ranking": N_("Où ouvrir une permanence"),
}
_FACET_TABLES = {
    "organisations": ("org", taxonomy.ORGANISATIONS),
    "outcomes": ("outcome", taxonomy.OUTCOMES),
    "autonomy": ("autonomy", taxonomy.AUTONOMY),
    "durations": ("dur", DURATION_BUCKETS),
}


def period_label(start: date, granularity: str) -> str:
    """2025-03 for a month, 2025-W09 for an ISO week."""
    if granularity == "week":
        year, week, _day = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


def facet_rows(report: Report, table: str) -> list[tuple[str, str, int]]:
    """(code, French label, sheets) for a facet table, known codes first in taxonomy order."""
    dim, labels = _FACET_TABLES[table]
    counts = report.facets.get(dim, Counter())
    rows = [(code, _(label), counts.get(code, 0)) for code, label in labels.items()]
    rows += [(code, code, n) for code, n in sorted(counts.items()) if code not in labels]
    return rows


def theme_rows(report: Report) -> list[tuple[str, str, Counter[str]]]:
    """(code, label, kind counts) per theme, "" (no theme) last."""
    rows = [
        (code, _(label), report.themes.get(code, Counter()))
        for code, label in taxonomy.THEMES.items()
    ]
    rows += [
        (code, code or _("sans thème"), counts)
        for code, counts in sorted(report.themes.items())
        if code not in taxonomy.THEMES
    ]
    return rows


def volunteer_rows(report: Report) -> list[tuple[str, str, int]]:
    """(id, name, sheets) per volunteer, busiest first."""
    counts = report.facets.get("vol", Counter())
    return sorted(
        ((vid, report.volunteer_names.get(vid, "#" + vid), n) for vid, n in counts.items()),
        key=lambda row: (-row[2], row[1]),
    )


def export_table(report: Report, table: str, small: int) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of one CSV table, small counts shown as "< N"."""
    if table == "volumes":
        header = ["period", "sessions"]
        header += [f"sessions_{c}" for c in CHANNELS]
        header += ["sessions_ended", *DEMAND_KINDS, UNMET]
        body = []
        for start in report.periods:
            counts = report.volumes.get(start, Counter())
            line: list[Any] = [period_label(start, report.filters.granularity)]
            line.append(shown(counts[SESSIONS], small))
            line += [shown(counts[f"{SESSIONS}:{c}"], small) for c in CHANNELS]
            line += [
                shown(counts[k], small)
                for k in (EventKind.SESSION_ENDED.value, *DEMAND_KINDS, UNMET)
            ]
            body.append(line)
        return header, body
    if table == "themes":
        return ["theme", "label", "sessions", "demand", UNMET], [
            [
                code,
                label,
                shown(c[SESSIONS], small),
                shown(sum(c[k] for k in DEMAND_KINDS), small),
                shown(c[UNMET], small),
            ]
            for code, label, c in theme_rows(report)
        ]
    if table in _FACET_TABLES:
        return ["code", "label", "sessions"], [
            [code, label, shown(n, small)] for code, label, n in facet_rows(report, table)
        ]
    if table == "volunteers":
        return ["volunteer_id", "name", "sessions"], [
            [vid, name, shown(n, small)] for vid, name, n in volunteer_rows(report)
        ]
    header = [
        "departement",
        "name",
        "population",
        "sessions",
        "sessions_per_100k",
        UNMET,
        "unmet_per_100k",
    ]
    lines = report.ranking() if table == "ranking" else [*report.departements, report.unknown]
    body = []
    for dep in lines:
        body.append(
            [
                dep.code or "inconnu",
                dep.name,
                dep.population if dep.population is not None else "",
                shown(dep.sessions, small),
                _rate_text(published_rate(dep, dep.sessions, small)),
                shown(dep.unmet, small),
                _rate_text(published_rate(dep, dep.unmet, small)),
            ]
        )
    if table == "ranking":
        header.insert(0, "rank")
        body = [[i, *line] for i, line in enumerate(body, start=1)]
    return header, body


def _rate_text(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.2f}"


def _dep_json(dep: Departement, small: int) -> dict[str, Any]:
    return {
        "code": dep.code or "inconnu",
        "name": dep.name,
        "population": dep.population,
        "sessions": shown(dep.sessions, small),
        "sessions_per_100k": published_rate(dep, dep.sessions, small),
        "unmet": shown(dep.unmet, small),
        "unmet_per_100k": published_rate(dep, dep.unmet, small),
    }


def report_json(report: Report, small: int) -> dict[str, Any]:
    """The API's view of a report: every count through ``shown``."""
    f = report.filters
    sessions = report.totals[SESSIONS]
    return {
        "period": {"from": f.start.isoformat(), "to": f.end.isoformat(), "step": f.granularity},
        "filters": {"channel": f.channel, "theme": f.theme},
        "small_count": small,
        "totals": {
            "sessions": shown(sessions, small),
            "sessions_ended": shown(report.totals[EventKind.SESSION_ENDED.value], small),
            "demand": shown(sum(report.totals[k] for k in DEMAND_KINDS), small),
            "unmet": shown(report.totals[UNMET], small),
            "mean_duration_minutes": round(report.duration_sum / sessions / 60, 1)
            if sessions >= small
            else None,
        },
        "volumes": [
            {
                "period": period_label(start, f.granularity),
                "sessions": shown(report.volumes.get(start, Counter())[SESSIONS], small),
                "by_channel": {
                    c: shown(report.volumes.get(start, Counter())[f"{SESSIONS}:{c}"], small)
                    for c in CHANNELS
                },
                "demand": shown(
                    sum(report.volumes.get(start, Counter())[k] for k in DEMAND_KINDS), small
                ),
                "unmet": shown(report.volumes.get(start, Counter())[UNMET], small),
            }
            for start in report.periods
        ],
        "themes": [
            {
                "code": code or None,
                "label": label,
                "sessions": shown(c[SESSIONS], small),
                "unmet": shown(c[UNMET], small),
            }
            for code, label, c in theme_rows(report)
        ],
        **{
            table: [
                {"code": code, "label": label, "sessions": shown(n, small)}
                for code, label, n in facet_rows(report, table)
            ]
            for table in _FACET_TABLES
        },
        "volunteers": [
            {"id": int(vid) if vid.isdigit() else None, "name": name, "sessions": shown(n, small)}
            for vid, name, n in volunteer_rows(report)
        ],
        "departements": [_dep_json(d, small) for d in [*report.departements, report.unknown]],
        "ranking": [_dep_json(d, small) for d in report.ranking()],
    }
