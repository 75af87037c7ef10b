"""Rebuild the rollups from stat_events in SQL: after bulk imports (Core inserts bypass the
flush hook) and for repairs. The keys are those of ``rollups.py``, derived in SQL."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Text,
    and_,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy import (
    table as table_clause,
)
from sqlalchemy.ext.asyncio import AsyncSession

from server.stats.events import EventKind
from server.stats.rollups import (
    ALL,
    BUCKET_LIMITS,
    DEP_KINDS,
    KEY_COLUMNS,
    KIND_CHANNELS,
    LONGEST_BUCKET,
    MONTHLY,
    NONE,
    ROLLUPS,
    SESSIONS,
    UNMET,
    UNMET_CALLBACK_REASONS,
    UNMET_KINDS,
    UNMET_QUEUE_REASONS,
)
from server.store.models import StatEvent

REBUILD_CACHE_KIB = 256 * 1024  # SQLite page cache while rebuilding
_FACTS = "_rollup_facts"  # temporary tables of rebuild_rollups
_FACT_THEMES = "_rollup_fact_themes"
_FACT_ORGS = "_rollup_fact_orgs"
_TEMPORARY = (_FACT_ORGS, _FACT_THEMES, _FACTS)  # in the order they can be dropped
_INSERT = f"INSERT INTO {{table}} ({', '.join(KEY_COLUMNS)}, count, duration_sum) "


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
    whens = [(column < limit, literal(code)) for limit, code in BUCKET_LIMITS]
    return case((column.is_(None), literal(None)), *whens, else_=literal(LONGEST_BUCKET))


def _facts_select(dialect: str, zone: ZoneInfo, first: datetime, last: datetime) -> Any:
    """stat_events grouped by what the rollups keep, with the derived columns computed in SQL:
    local day, dashboard channel, unmet flag, duration bucket; facts no key uses are nulled."""
    e = StatEvent
    kind = e.kind
    sheet = kind == SESSIONS
    channel = case(
        *(
            (kind.in_(sorted(k.value for k in kinds)), literal(dashboard_channel))
            for dashboard_channel, kinds in KIND_CHANNELS
        ),
        else_=func.substr(func.coalesce(e.channel, NONE), 1, 20),
    )
    unmet = case(
        (and_(kind == EventKind.QUEUE_LEFT.value, e.reason.in_(UNMET_QUEUE_REASONS)), 1),
        (and_(kind == EventKind.CALLBACK_RESOLVED.value, e.reason.in_(UNMET_CALLBACK_REASONS)), 1),
        (kind.in_(sorted(k.value for k in UNMET_KINDS)), 1),
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


def _list_statements(dialect: str) -> list[str]:
    """The INSERTs listing each fact group's themes (its theme and its themes; '' for none)
    and, on sheets, its organisations, one row per distinct value."""
    ignore = "" if dialect == "postgresql" else " OR IGNORE"
    conflict = " ON CONFLICT DO NOTHING" if dialect == "postgresql" else ""
    themes, theme = _json_strings(dialect, "themes")
    organisations, organisation = _json_strings(dialect, "organisations")
    sources = (  # (table, its column, width, FROM … WHERE fragment after "f", value)
        (_FACT_THEMES, "th", 30, "WHERE f.theme <> ''", "f.theme"),
        (_FACT_THEMES, "th", 30, themes, theme),
        (_FACT_ORGS, "org", 40, f"{organisations} AND f.kind = '{SESSIONS}'", organisation),
    )
    statements = [
        f"INSERT{ignore} INTO {table} (gid, {field}) SELECT f.gid, substr({value}, 1, {width})"  # noqa: S608
        f" FROM {_FACTS} f {source}{conflict}"
        for table, field, width, source, value in sources
    ]
    statements.append(  # the groups with no theme at all
        f"INSERT INTO {_FACT_THEMES} (gid, th) SELECT f.gid, '' FROM {_FACTS} f"  # noqa: S608
        f" WHERE NOT EXISTS (SELECT 1 FROM {_FACT_THEMES} t WHERE t.gid = f.gid)"
    )
    return statements


def _expand_statements() -> list[str]:
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
                _INSERT.format(table=ROLLUPS.name)  # noqa: S608
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


async def _drop_temporary(db: AsyncSession) -> None:
    for name in _TEMPORARY:
        await db.execute(text(f"DROP TABLE IF EXISTS {name}"))


async def rebuild_rollups(
    db: AsyncSession, zone: ZoneInfo, association_id: int | None = None
) -> int:
    """Recompute the daily and monthly rollups from stat_events (all associations, or one),
    days counted in ``zone``; returns the daily rows written. For bulk imports (Core inserts
    bypass the flush hook) and repairs.

    All in SQL, same keys as ``rollups._keys``: the events grouped by what the rollups keep go
    to a temporary table, their themes and organisations are listed with json_each /
    json_array_elements, one INSERT … SELECT … GROUP BY per dimension writes the per-channel
    rows, then the ``'*'`` channel rows are summed from them (an event has one channel), and
    the monthly rows from the daily ones."""
    where = "" if association_id is None else f" WHERE association_id = {int(association_id)}"
    also = "" if association_id is None else f" AND association_id = {int(association_id)}"
    for table in (ROLLUPS, MONTHLY):
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
    await _drop_temporary(db)
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
    for statement in (*_list_statements(dialect), *_expand_statements()):
        await db.execute(text(statement))
    # Per-channel months from per-channel days, then the "*" channel of both tiers: each
    # summed from the smallest table that has it (an event has one channel).
    month = _month_sql(dialect)
    await db.execute(
        text(
            _INSERT.format(table=MONTHLY.name)  # noqa: S608
            + f"SELECT association_id, dim, channel, theme, {month}, kind, value, SUM(count),"  # noqa: S608
            f" SUM(duration_sum) FROM {ROLLUPS.name}{where}"
            f" GROUP BY association_id, dim, channel, theme, {month}, kind, value"
        )
    )
    for table in (ROLLUPS, MONTHLY):
        await db.execute(
            text(
                _INSERT.format(table=table.name)  # noqa: S608
                + f"SELECT association_id, dim, '{ALL}', theme, day, kind, value, SUM(count),"  # noqa: S608
                f" SUM(duration_sum) FROM {table.name} WHERE channel <> '{ALL}'{also}"
                " GROUP BY association_id, dim, theme, day, kind, value"
            )
        )
    await _drop_temporary(db)
    if dialect == "sqlite":
        await db.execute(text("PRAGMA cache_size = -2000"))
    else:
        # Fresh tables have no planner statistics until autovacuum comes by: seconds-long plans.
        await db.execute(text(f"ANALYZE {ROLLUPS.name}, {MONTHLY.name}"))
    written = await db.scalar(
        select(func.count())
        .select_from(ROLLUPS)
        .where(
            *([ROLLUPS.c.association_id == association_id] if association_id is not None else [])
        )
    )
    return int(written or 0)
