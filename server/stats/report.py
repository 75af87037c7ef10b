"""The coordinator's statistics: daily rollups of the events, and the figures of ``/stats``.

Rollup design (table ``stat_rollups``, model ``StatRollup``)
-------------------------------------------------------------
Every dashboard query groups by *time + one dimension*, filtered by period, channel and theme.
So each event adds 1 to a few small counters, one per (dimension, value), rather than to one
row keyed by every dimension at once (that key is nearly unique per helped session: the table
would be as big as the events). The key is::

    (association_id, dim, channel, theme, day, kind, value) -> count, duration_sum

- ``day``: the local date in the deployment's time zone (``settings.timezone``).
- ``dim``/``value``: ``all``/"" (every event), ``dep``/département code ("" when no postal code
  was given, "99" when it could not be placed) for the kinds the map counts (``DEP_KINDS``),
  and, on sheets only, ``outcome``, ``autonomy``, ``org`` (one row per organisation),
  ``vol`` (volunteer id) and ``dur`` (duration bucket). No key exists that no query reads.
- ``channel`` and ``theme`` are written twice: the event's own value ("" for none) and ``'*'``
  ("all"). An unfiltered query reads only the ``'*'`` rows, a filtered one only its value: no
  double counting, and the rows read stay few (about kinds × départements per day).
- Themes are multi-valued on sheets: the event gets one row per distinct theme (its ``theme``
  plus its ``themes``) besides the ``'*'`` row, so "by theme" counts a sheet under each of its
  themes (their sum can exceed the total) and a theme filter counts it once.
- ``kind`` is the event kind, plus the synthetic kind ``unmet`` for unmet demand: people who left
  the queue (left/lost/gone), call-backs expired or closed on a wrong number, booking searches
  that found no slot. ``channel`` is normalised to link/appointment/drop_in/callback.

Monthly tier (table ``stat_rollups_monthly``): the same keys with ``day`` = the first local
day of the month, kept in the same transaction. A period reads its whole months there and
only its edge days (before the first and after the last whole month) in the daily table, one
UNION ALL branch per range so that each stays a primary-key seek; weekly volumes read days.

Maintenance: the application's sessionmakers (``server/db.py``) run ``maintain_rollups``
after every flush: the StatEvents inserted (or changed, or deleted through the ORM) by a flush are
turned into counter deltas and applied to both tiers with ``INSERT … ON CONFLICT DO UPDATE
SET count = count + excluded.count`` in the same transaction, keys sorted so that concurrent
writers lock rows in the same order. A flush hook rather than code in ``record()``: some
callers set the event's association or channel after ``record()`` returns. Rows written by
Core bulk inserts are not seen: call ``rebuild_rollups`` afterwards (the demo generator does);
it derives the same keys in SQL (see its docstring), and tests check that both paths agree.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Table,
    Text,
    and_,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy import (
    table as table_clause,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from server import geo, taxonomy
from server.i18n import N_, _
from server.stats.events import UNKNOWN_DEPARTEMENT, EventKind
from server.store.models import StatEvent, StatRollup, StatRollupMonthly, User

ALL = "*"
NONE = ""
UNMET = "unmet"
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
SESSIONS = EventKind.SHEET_FILED.value  # a helped session is counted by its handoff sheet
DEMAND_KINDS = (
    EventKind.APPOINTMENT_BOOKED.value,
    EventKind.QUEUE_JOINED.value,
    EventKind.CALLBACK_REQUESTED.value,
)
VOLUME_KINDS = (SESSIONS, EventKind.SESSION_ENDED.value, *DEMAND_KINDS, UNMET)
DEP_KINDS = (SESSIONS, UNMET, *DEMAND_KINDS)  # the kinds counted by département
FACET_DIMS = ("org", "outcome", "autonomy", "dur", "vol")
_ROLLUPS: Table = StatRollup.__table__  # type: ignore[assignment]
_MONTHLY: Table = StatRollupMonthly.__table__  # type: ignore[assignment]
_PK = ("association_id", "dim", "channel", "theme", "day", "kind", "value")


# -- Keys ---------------------------------------------------------------------------------------


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
    """The rollup keys one event adds to, as (key, dim). Only the keys some query reads:
    sheet facets on sheets, départements on the kinds the map and ranking count."""
    themes = list(dict.fromkeys(t[:30] for t in (facts.theme, *facts.themes) if t)) or [NONE]
    kinds = [facts.kind[:40]]
    if is_unmet(facts.kind, facts.reason):
        kinds.append(UNMET)
    channel = channel_of(facts.kind, facts.channel)
    association = facts.association_id or 0
    for kind in kinds:
        dims: list[tuple[str, str]] = [("all", NONE)]
        if kind in DEP_KINDS:
            dims.append(("dep", facts.departement or NONE))
        if kind == SESSIONS:
            if facts.outcome:
                dims.append(("outcome", facts.outcome[:40]))
            if facts.autonomy:
                dims.append(("autonomy", facts.autonomy[:40]))
            dims.extend(("org", org) for org in dict.fromkeys(o[:40] for o in facts.organisations))
            if facts.volunteer_id is not None:
                dims.append(("vol", str(facts.volunteer_id)))
            if facts.bucket is not None:
                dims.append(("dur", facts.bucket))
        for ch in (channel, ALL):
            for th in (*themes, ALL):
                for dim, value in dims:
                    yield (association, dim, ch, th, facts.day, kind, value), dim


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


def _upsert_rows(dialect: str, rows: list[dict[str, Any]], table: Table = _ROLLUPS) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
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


def maintain_rollups(zone: ZoneInfo) -> Callable[[Session], None]:
    """The after-flush hook of the application's sessions (``server/db.py``): rollup days are
    counted in ``zone``, the deployment's time zone."""

    def hook(session: Session) -> None:
        apply_flush(session, zone)

    return hook


def apply_flush(session: Session, zone: ZoneInfo) -> None:
    """Add the StatEvents this flush wrote to the rollups, in the flush's transaction."""
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
    months: dict[tuple[Any, ...], list[int]] = {}
    for key, (count, duration) in totals.items():
        month_key = (*key[:4], key[4].replace(day=1), *key[5:])
        cell = months.setdefault(month_key, [0, 0])
        cell[0] += count
        cell[1] += duration
    connection = session.connection()
    for table, changes in ((_ROLLUPS, totals), (_MONTHLY, months)):
        rows = _rows(changes)
        for start in range(0, len(rows), 500):
            statement = _upsert_rows(connection.dialect.name, rows[start : start + 500], table)
            connection.execute(statement)


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


REBUILD_CACHE_KIB = 256 * 1024  # SQLite page cache while rebuilding
_FACTS = "_rollup_facts"  # temporary tables of rebuild_rollups
_FACT_THEMES = "_rollup_fact_themes"
_FACT_ORGS = "_rollup_fact_orgs"


def _facts_select(dialect: str, zone: ZoneInfo, first: datetime, last: datetime) -> Any:
    """stat_events grouped by what the rollups keep, with the derived columns computed in SQL:
    local day, dashboard channel, unmet flag, duration bucket; facts no key uses are nulled."""
    e = StatEvent
    kind = e.kind
    sheet = kind == SESSIONS
    channel = case(
        (kind.in_([k.value for k in _APPOINTMENT_KINDS]), literal("appointment")),
        (kind.in_([k.value for k in _QUEUE_KINDS]), literal("drop_in")),
        (kind.in_([k.value for k in _CALLBACK_KINDS]), literal("callback")),
        else_=func.substr(func.coalesce(e.channel, NONE), 1, 20),
    )
    unmet = case(
        (and_(kind == EventKind.QUEUE_LEFT.value, e.reason.in_(UNMET_QUEUE_REASONS)), 1),
        (and_(kind == EventKind.CALLBACK_RESOLVED.value, e.reason.in_(UNMET_CALLBACK_REASONS)), 1),
        (kind.in_([EventKind.CALLBACK_EXPIRED.value, EventKind.NO_SLOT_FOUND.value]), 1),
        else_=0,
    )
    keys = {
        "association_id": func.coalesce(e.association_id, 0),
        "day": _local_day_sql(dialect, zone, first, last),
        "kind": func.substr(kind, 1, 40),
        "channel": channel,
        "unmet": unmet,
        "theme": e.theme,
        "themes": cast(e.themes, Text),
        "organisations": case((sheet, cast(e.organisations, Text))),
        "departement": case((or_(kind.in_(DEP_KINDS), unmet == 1), e.departement)),
        "outcome": case((sheet, func.substr(e.outcome, 1, 40))),
        "autonomy": case((sheet, func.substr(e.autonomy, 1, 40))),
        "volunteer": case((sheet, cast(e.volunteer_id, Text))),
        "bucket": case((sheet, _bucket_sql())),
    }
    columns = [expr.label(name) for name, expr in keys.items()]
    return select(
        *columns,
        func.count().label("n"),
        func.coalesce(func.sum(e.duration_seconds), 0).label("duration"),
    ).group_by(*columns)


def _json_strings(dialect: str, column: str) -> tuple[str, str]:
    """FROM fragment and value expression listing the non-empty strings of a JSON list."""
    if dialect == "postgresql":
        return (
            f"CROSS JOIN LATERAL json_array_elements(CASE WHEN json_typeof(f.{column}::json)"
            f" = 'array' THEN f.{column}::json ELSE '[]'::json END) AS j(v)"
            " WHERE json_typeof(j.v) = 'string' AND j.v #>> '{}' <> ''",
            "j.v #>> '{}'",
        )
    return (
        f", json_each(CASE WHEN json_type(f.{column}) = 'array' THEN f.{column} ELSE '[]' END) j"
        " WHERE j.type = 'text' AND j.value <> ''",
        "j.value",
    )


_INSERT = (
    "INSERT INTO {table} (association_id, dim, channel, theme, day, kind, value, count,"
    " duration_sum) "
)


def _expand_statements(dialect: str) -> list[str]:
    """The INSERTs turning the grouped facts into the daily rollups (channel by channel)."""
    facet_values = {
        "all": ("''", "1 = 1"),
        "dep": ("COALESCE(f.departement, '')", f"f.kind IN ({_sql_list(DEP_KINDS)})"),
        "outcome": ("f.outcome", f"f.kind = '{SESSIONS}' AND f.outcome <> ''"),
        "autonomy": ("f.autonomy", f"f.kind = '{SESSIONS}' AND f.autonomy <> ''"),
        "vol": ("f.volunteer", f"f.kind = '{SESSIONS}' AND f.volunteer IS NOT NULL"),
        "dur": ("f.bucket", f"f.kind = '{SESSIONS}' AND f.bucket IS NOT NULL"),
        "org": ("o.org", f"f.kind = '{SESSIONS}'"),
    }
    statements = []
    for dim, (value, condition) in facet_values.items():
        joins = f" JOIN {_FACT_ORGS} o ON o.gid = f.gid" if dim == "org" else ""
        for by_theme in (False, True):
            theme = "t.th" if by_theme else f"'{ALL}'"
            theme_join = f" JOIN {_FACT_THEMES} t ON t.gid = f.gid" if by_theme else ""
            keys = ["f.association_id", "f.channel", theme, "f.day", "f.kind", value]
            keys = [key for key in keys if not key.startswith("'")]  # no constants (PostgreSQL)
            statements.append(
                _INSERT.format(table=_ROLLUPS.name)  # noqa: S608
                + f"SELECT f.association_id, '{dim}', f.channel, {theme}, f.day, f.kind, {value},"  # noqa: S608
                f" SUM(f.n), SUM(f.duration) FROM {_FACTS} f{joins}{theme_join}"
                f" WHERE {condition}"
                f" GROUP BY {', '.join(keys)}"
            )
    return statements


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _month_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return "CAST(date_trunc('month', day) AS DATE)"
    return "date(day, 'start of month')"


async def rebuild_rollups(
    db: AsyncSession, zone: ZoneInfo, association_id: int | None = None
) -> int:
    """Recompute the daily and monthly rollups from stat_events (all associations, or one),
    days counted in ``zone``; returns the daily rows written. For bulk imports (Core inserts
    bypass the flush hook) and repairs.

    All in SQL, same keys as ``_deltas``: the events grouped by what the rollups keep go to a
    temporary table, their themes and organisations are listed with json_each /
    json_array_elements, one INSERT … SELECT … GROUP BY per dimension writes the per-channel
    rows, then the ``'*'`` channel rows are summed from them (an event has one channel), and
    the monthly rows from the daily ones."""
    where = "" if association_id is None else f" WHERE association_id = {int(association_id)}"
    also = "" if association_id is None else f" AND association_id = {int(association_id)}"
    for table in (_ROLLUPS, _MONTHLY):
        wipe = delete(table)
        if association_id is not None:
            wipe = wipe.where(table.c.association_id == association_id)
        await db.execute(wipe)
    # The bounds of the day expression, over every association: two index lookups (SQLite
    # scans the table for min() and max() in one query).
    first = await db.scalar(select(func.min(StatEvent.occurred_at)))
    last = await db.scalar(select(func.max(StatEvent.occurred_at)))
    if first is None or last is None:
        return 0
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        # Millions of rows sorted and inserted: a 2 MB page cache would thrash (reset below).
        await db.execute(text(f"PRAGMA cache_size = -{REBUILD_CACHE_KIB}"))
    facts = _facts_select(dialect, zone, first, last)
    if association_id is not None:
        facts = facts.where(StatEvent.association_id == association_id)
    temporary = "TEMPORARY TABLE" + (" IF NOT EXISTS" if dialect == "sqlite" else "")
    serial = "SERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY"
    on_commit = " ON COMMIT DROP" if dialect == "postgresql" else ""
    for name in (_FACT_ORGS, _FACT_THEMES, _FACTS):
        await db.execute(text(f"DROP TABLE IF EXISTS {name}"))
    await db.execute(
        text(
            f"CREATE {temporary} {_FACTS} (gid {serial}, association_id INTEGER, day DATE,"
            " kind VARCHAR(40), channel VARCHAR(20), unmet INTEGER, theme VARCHAR(30),"
            " themes TEXT, organisations TEXT, departement VARCHAR(3), outcome VARCHAR(40),"
            " autonomy VARCHAR(40), volunteer VARCHAR(40), bucket VARCHAR(10), n BIGINT,"
            f" duration BIGINT){on_commit}"
        )
    )
    for name, field_sql in ((_FACT_THEMES, "th VARCHAR(30)"), (_FACT_ORGS, "org VARCHAR(40)")):
        await db.execute(
            text(
                f"CREATE {temporary} {name} (gid INTEGER, {field_sql}, PRIMARY KEY"
                f" (gid, {field_sql.split()[0]})){on_commit}"
            )
        )
    fact_table = table_clause(_FACTS, *(column(c.name) for c in facts.selected_columns))
    await db.execute(
        insert(fact_table).from_select([c.name for c in facts.selected_columns], facts)
    )
    # Unmet demand is a kind of its own: copies of the unmet events (themes and département kept).
    await db.execute(
        text(
            f"INSERT INTO {_FACTS} (association_id, day, kind, channel, unmet, theme, themes,"  # noqa: S608
            " departement, n, duration) SELECT association_id, day, :unmet, channel, 0, theme,"
            f" themes, departement, n, duration FROM {_FACTS} WHERE unmet = 1"
        ),
        {"unmet": UNMET},
    )
    ignore = "" if dialect == "postgresql" else " OR IGNORE"
    conflict = " ON CONFLICT DO NOTHING" if dialect == "postgresql" else ""
    await db.execute(
        text(
            f"INSERT{ignore} INTO {_FACT_THEMES} (gid, th) SELECT f.gid, substr(f.theme, 1, 30)"  # noqa: S608
            f" FROM {_FACTS} f WHERE f.theme <> ''{conflict}"
        )
    )
    source, value = _json_strings(dialect, "themes")
    await db.execute(
        text(
            f"INSERT{ignore} INTO {_FACT_THEMES} (gid, th) SELECT f.gid, substr({value}, 1, 30)"  # noqa: S608
            f" FROM {_FACTS} f {source}{conflict}"
        )
    )
    await db.execute(
        text(
            f"INSERT INTO {_FACT_THEMES} (gid, th) SELECT f.gid, '' FROM {_FACTS} f"  # noqa: S608
            f" WHERE NOT EXISTS (SELECT 1 FROM {_FACT_THEMES} t WHERE t.gid = f.gid)"
        )
    )
    source, value = _json_strings(dialect, "organisations")
    await db.execute(
        text(
            f"INSERT{ignore} INTO {_FACT_ORGS} (gid, org) SELECT f.gid, substr({value}, 1, 40)"  # noqa: S608
            f" FROM {_FACTS} f {source} AND f.kind = '{SESSIONS}'{conflict}"
        )
    )
    for statement in _expand_statements(dialect):
        await db.execute(text(statement))
    # Per-channel months from per-channel days, then the "*" channel of both tiers: each
    # summed from the smallest table that has it (an event has one channel).
    month = _month_sql(dialect)
    await db.execute(
        text(
            _INSERT.format(table=_MONTHLY.name)  # noqa: S608
            + f"SELECT association_id, dim, channel, theme, {month}, kind, value, SUM(count),"  # noqa: S608
            f" SUM(duration_sum) FROM {_ROLLUPS.name}{where}"
            f" GROUP BY association_id, dim, channel, theme, {month}, kind, value"
        )
    )
    for table in (_ROLLUPS, _MONTHLY):
        await db.execute(
            text(
                _INSERT.format(table=table.name)  # noqa: S608
                + f"SELECT association_id, dim, '{ALL}', theme, day, kind, value, SUM(count),"  # noqa: S608
                f" SUM(duration_sum) FROM {table.name} WHERE channel <> '{ALL}'{also}"
                " GROUP BY association_id, dim, theme, day, kind, value"
            )
        )
    for name in (_FACT_ORGS, _FACT_THEMES, _FACTS):
        await db.execute(text(f"DROP TABLE IF EXISTS {name}"))
    if dialect == "sqlite":
        await db.execute(text("PRAGMA cache_size = -2000"))
    else:
        # Fresh tables have no planner statistics until autovacuum comes by: seconds-long plans.
        await db.execute(text(f"ANALYZE {_ROLLUPS.name}, {_MONTHLY.name}"))
    written = await db.scalar(
        select(func.count())
        .select_from(_ROLLUPS)
        .where(
            *([_ROLLUPS.c.association_id == association_id] if association_id is not None else [])
        )
    )
    return int(written or 0)


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
    table: Table,
    association_id: int,
    filters: Filters,
    dim: str | Iterable[str],
    by_theme: bool = False,
) -> list[Any]:
    """Predicates on everything but the period, equalities first (the primary key's order)."""
    t = table.c
    clauses: list[Any] = [
        t.association_id == association_id,
        t.dim == dim if isinstance(dim, str) else t.dim.in_(list(dim)),
        t.channel == (filters.channel or ALL),
    ]
    if by_theme:
        clauses.append(t.theme == filters.theme if filters.theme else t.theme != ALL)
    else:
        clauses.append(t.theme == (filters.theme or ALL))
    return clauses


def _tiers(filters: Filters, days_only: bool = False) -> list[tuple[Table, Any]]:
    """Where to read the period: whole calendar months in the monthly table, the days before
    the first and after the last whole month in the daily one."""
    daily, monthly = _ROLLUPS.c.day, _MONTHLY.c.day
    first = filters.start if filters.start.day == 1 else _next_month(filters.start)
    after = _next_month(filters.end)  # first day after the last whole month (exclusive)
    if filters.end != after - timedelta(days=1):
        after = filters.end.replace(day=1)
    if days_only or first >= after:
        return [(_ROLLUPS, and_(daily >= filters.start, daily <= filters.end))]
    tiers: list[tuple[Table, Any]] = [(_MONTHLY, and_(monthly >= first, monthly < after))]
    # One branch per edge: a single range each keeps the primary key seek (an OR would not).
    if filters.start < first:
        tiers.append((_ROLLUPS, and_(daily >= filters.start, daily < first)))
    if after <= filters.end:
        tiers.append((_ROLLUPS, and_(daily >= after, daily <= filters.end)))
    return tiers


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _union(statements: list[Any]) -> Any:
    return statements[0] if len(statements) == 1 else union_all(*statements)


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
    """Read the rollups of one association for these filters: four grouped queries, each over
    the monthly table for whole months and the daily one for the edge days (and for weeks)."""
    report = Report(filters=filters, periods=_periods(filters))
    tiers = _tiers(filters)
    # Volumes: totals from the "*" rows (or the filtered channel), the split by channel from
    # the per-channel rows of the known channels.
    channels = [filters.channel] if filters.channel else [ALL, *CHANNELS]
    volumes = []
    for table, period in _tiers(filters, days_only=filters.granularity != "month"):
        t = table.c
        volumes.append(
            select(t.day, t.kind, t.channel, func.sum(t.count), func.sum(t.duration_sum))
            .where(t.association_id == association_id, t.dim == "all")
            .where(t.channel.in_(channels), t.theme == (filters.theme or ALL), period)
            .where(t.kind.in_(VOLUME_KINDS))
            .group_by(t.day, t.kind, t.channel)
        )
    for day, kind, channel, count, duration in await db.execute(_union(volumes)):
        bucket = report.volumes.setdefault(period_of(day, filters.granularity), Counter())
        count = int(count)
        if channel != ALL:
            bucket[f"{kind}:{channel}"] += count
            report.totals[f"{kind}:{channel}"] += count
        if channel == ALL or filters.channel:
            bucket[kind] += count
            report.totals[kind] += count
            if kind == SESSIONS:
                report.duration_sum += int(duration)
    themes = []
    for table, period in tiers:
        statement = (
            select(table.c.theme, table.c.kind, func.sum(table.c.count))
            .where(*_where(table, association_id, filters, "all", by_theme=True), period)
            .where(table.c.kind.in_(DEP_KINDS))
            .group_by(table.c.theme, table.c.kind)
        )
        if table is _ROLLUPS and not filters.theme:
            # "theme <> '*'" would scan every day of the key prefix: seek the themes of the
            # period's months instead (each daily theme is in its month's rows).
            m = _MONTHLY.c
            statement = statement.where(
                table.c.theme.in_(
                    select(m.theme)
                    .distinct()
                    .where(*_where(_MONTHLY, association_id, filters, "all", by_theme=True))
                    .where(m.day >= filters.start.replace(day=1), m.day <= filters.end)
                )
            )
        themes.append(statement)
    for theme, kind, count in await db.execute(_union(themes)):
        report.themes.setdefault(theme, Counter())[kind] += int(count)
    facets = [
        select(table.c.dim, table.c.value, func.sum(table.c.count))
        .where(*_where(table, association_id, filters, FACET_DIMS), period)
        .where(table.c.kind == SESSIONS)
        .group_by(table.c.dim, table.c.value)
        for table, period in tiers
    ]
    for dim, value, count in await db.execute(_union(facets)):
        report.facets.setdefault(dim, Counter())[value] += int(count)
    volunteer_ids = [int(v) for v in report.facets.get("vol", {}) if v.isdigit()]
    if volunteer_ids:
        names = await db.execute(
            select(User.id, User.name).where(
                User.id.in_(volunteer_ids), User.association_id == association_id
            )
        )
        report.volunteer_names = {str(uid): name for uid, name in names}
    deps = [
        select(table.c.value, table.c.kind, func.sum(table.c.count))
        .where(*_where(table, association_id, filters, "dep"), period)
        .where(table.c.kind.in_(DEP_KINDS))
        .group_by(table.c.value, table.c.kind)
        for table, period in tiers
    ]
    deps_rows = await db.execute(_union(deps))
    by_code = {d.code: Departement(d.code, d.name, d.population) for d in geo.departements()}
    report.unknown = Departement("", _("inconnu"), None)
    for code, kind, count in deps_rows:
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
    """Today in the given zone (a validated setting)."""
    return datetime.now(UTC).astimezone(ZoneInfo(zone_name)).date()


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
