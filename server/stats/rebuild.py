"""Rebuild the rollups from stat_events in SQL: after bulk imports (Core inserts bypass the
flush hook) and for repairs. The keys are those of ``rollups.py``, derived in SQL."""

from __future__ import annotations

import time as clock
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
)
from sqlalchemy import (
    table as table_clause,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from server.stats.events import EventKind
from server.stats.rollups import (
    ALL,
    BUCKET_LIMITS,
    CHECK_FOUND,
    KEY_COLUMNS,
    KIND_CHANNELS,
    LANGUAGE_DIM,
    LANGUAGE_KINDS,
    LANGUAGE_WANTED_DIM,
    LONGEST_BUCKET,
    MONTHLY,
    NONE,
    PLACED_KINDS,
    RIGHTS_BAND,
    RIGHTS_CHECKED,
    RIGHTS_EVENT_KINDS,
    RIGHTS_FOUND,
    RIGHTS_UNCLAIMED,
    ROLLUPS,
    SESSIONS,
    UNMET,
    UNMET_CALLBACK_REASONS,
    UNMET_KINDS,
    UNMET_QUEUE_REASONS,
    UNSPECIFIED_LANGUAGE,
)
from server.store.engine import begin_write
from server.store.models import StatEvent

REBUILD_CACHE_KIB = 256 * 1024  # SQLite page cache while rebuilding
REBUILD_WORK_MEM = "64MB"
MARGIN = timedelta(hours=3)  # PostgreSQL sorts and hashes of one month in memory
_FACTS = "_rollup_facts"  # temporary tables of rebuild_rollups
_FACT_THEMES = "_rollup_fact_themes"
_FACT_ORGS = "_rollup_fact_orgs"
_DAYS = "_rollup_days"  # the per-channel daily rows of one chunk
_TEMPORARY = (_DAYS, _FACT_ORGS, _FACT_THEMES, _FACTS)  # in the order they can be dropped
PREFIX_COLUMNS = KEY_COLUMNS[:4]  # the primary key's columns before ``day``
Executor = AsyncSession | AsyncConnection
_INSERT = f"INSERT INTO {{table}} ({', '.join(KEY_COLUMNS)}, count, duration_sum) "
# A row the deletion missed (its prefix is newer than the rebuild's search: a live event's)
# holds a count the month's events, read under the lock, include: overwrite it (SQLite;
# PostgreSQL deletes those rows too and inserts without ON CONFLICT, see ``rebuild_month``).
_OVERWRITE = (
    f" ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET count = excluded.count,"
    " duration_sum = excluded.duration_sum"
)


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
    local day, dashboard channel, derived kind (``rollups.derived_kind``), duration bucket,
    benefit, language (``rollups.language_of``) and whether it was asked for (1, else NULL);
    facts no key uses are nulled."""
    e = StatEvent
    kind = e.kind
    sheet = kind == SESSIONS
    rights = kind.in_(RIGHTS_EVENT_KINDS)
    channel = case(
        *(
            (kind.in_(sorted(k.value for k in kinds)), literal(dashboard_channel))
            for dashboard_channel, kinds in KIND_CHANNELS
        ),
        else_=func.substr(func.coalesce(e.channel, NONE), 1, 20),
    )
    derived = case(
        (and_(kind == EventKind.QUEUE_LEFT.value, e.reason.in_(UNMET_QUEUE_REASONS)), UNMET),
        (
            and_(kind == EventKind.CALLBACK_RESOLVED.value, e.reason.in_(UNMET_CALLBACK_REASONS)),
            UNMET,
        ),
        (kind.in_(sorted(k.value for k in UNMET_KINDS)), UNMET),
        (and_(kind == RIGHTS_CHECKED, e.reason == CHECK_FOUND), RIGHTS_FOUND),
        (
            and_(kind == RIGHTS_UNCLAIMED, e.reason != NONE),
            func.substr(literal(RIGHTS_BAND) + e.reason, 1, 40),
        ),
        else_=null(),
    )
    by_language = or_(kind.in_(LANGUAGE_KINDS), derived == UNMET)
    keys = {
        "association_id": func.coalesce(e.association_id, 0),
        "day": _local_day_sql(dialect, zone, first, last),
        "kind": func.substr(kind, 1, 40),
        "channel": channel,
        "derived": derived,
        # A rights event's theme is its benefit (the ``benefit`` dimension), not a theme.
        "theme": case((rights, null()), else_=e.theme),
        "themes": case((rights, null()), else_=cast(e.themes, Text)),
        "benefit": case(
            (kind == RIGHTS_UNCLAIMED, func.substr(func.coalesce(e.theme, NONE), 1, 40))
        ),
        "organisations": case((sheet, cast(e.organisations, Text))),
        "departement": case((or_(kind.in_(PLACED_KINDS), derived.is_not(None)), e.departement)),
        "outcome": case((sheet, func.substr(e.outcome, 1, 40))),
        "autonomy": case((sheet, func.substr(e.autonomy, 1, 40))),
        "volunteer": case((sheet, cast(e.volunteer_id, Text))),
        "bucket": case((sheet, _bucket_sql())),
        "language": case(
            (
                by_language,
                func.substr(
                    func.coalesce(func.nullif(e.language, NONE), UNSPECIFIED_LANGUAGE), 1, 40
                ),
            )
        ),
        "wanted": case((and_(by_language, e.language_wanted.is_(True)), 1)),
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
    """The INSERTs turning the grouped facts into the chunk's daily rows, channel by channel."""
    facet_values = {
        "all": ("''", "1 = 1"),
        "dep": (
            "COALESCE(f.departement, '')",
            f"(f.kind IN ({_sql_list(PLACED_KINDS)})"
            f" OR substr(f.kind, 1, {len(RIGHTS_BAND)}) = '{RIGHTS_BAND}')",
        ),
        "benefit": ("f.benefit", "f.benefit IS NOT NULL"),
        LANGUAGE_DIM: ("f.language", f"f.kind IN ({_sql_list(LANGUAGE_KINDS)})"),
        LANGUAGE_WANTED_DIM: (
            "f.language",
            f"f.kind IN ({_sql_list(LANGUAGE_KINDS)}) AND f.wanted = 1",
        ),
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
                _INSERT.format(table=_DAYS)  # noqa: S608
                + f"SELECT f.association_id, '{dim}', f.channel, {theme}, f.day, f.kind, {value},"  # noqa: S608
                f" SUM(f.n), SUM(f.duration) FROM {_FACTS} f{joins}{theme_join}"
                f" WHERE {condition}"
                f" GROUP BY {', '.join(keys)}"
            )
    return statements


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


async def _drop_temporary(db: Executor) -> None:
    for name in _TEMPORARY:
        await db.execute(text(f"DROP TABLE IF EXISTS {name}"))


async def _create_temporary(db: Executor, dialect: str) -> None:
    temporary = "TEMPORARY TABLE"
    serial = "SERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY"
    await _drop_temporary(db)
    await db.execute(
        text(
            f"CREATE {temporary} {_FACTS} (gid {serial}, association_id INTEGER, day DATE,"
            " kind VARCHAR(40), channel VARCHAR(20), derived VARCHAR(40), theme VARCHAR(30),"
            " themes TEXT, benefit VARCHAR(40), organisations TEXT, departement VARCHAR(3),"
            " outcome VARCHAR(40), autonomy VARCHAR(40), volunteer VARCHAR(40),"
            " bucket VARCHAR(10), language VARCHAR(40), wanted INTEGER, n BIGINT,"
            " duration BIGINT)"
        )
    )
    for name, field_sql in ((_FACT_THEMES, "th VARCHAR(30)"), (_FACT_ORGS, "org VARCHAR(40)")):
        await db.execute(
            text(
                f"CREATE {temporary} {name} (gid INTEGER, {field_sql}, PRIMARY KEY"
                f" (gid, {field_sql.split()[0]}))"
            )
        )
    await db.execute(
        text(
            f"CREATE {temporary} {_DAYS} (association_id INTEGER, dim VARCHAR(10),"
            " channel VARCHAR(20), theme VARCHAR(30), day DATE, kind VARCHAR(40),"
            " value VARCHAR(40), count BIGINT, duration_sum BIGINT)"
        )
    )


def _prefixes_sql(table: str, association_id: int | None) -> str:
    """The distinct (association_id, dim, channel, theme) of a rollup table in one statement:
    a loose index scan, level by level (CTE ``l<n>`` holds the first n+1 columns), each step
    a ``min()`` seek on the primary key (a few hundred steps), where ``DISTINCT`` or a ``day``
    range alone would read the whole table (``day`` comes fifth in the primary key, and
    neither SQLite nor PostgreSQL 15 skips over the columns before it)."""
    cols = PREFIX_COLUMNS

    def following(level: int, keys: list[str], after: str | None) -> str:
        equal = [f"{cols[i]} = {keys[i]}" for i in range(level)]
        if after is not None:
            equal.append(f"{cols[level]} > {after}")
        where = f" WHERE {' AND '.join(equal)}" if equal else ""
        return f"(SELECT min({cols[level]}) FROM {table}{where})"  # noqa: S608

    if association_id is None:
        first, step = following(0, [], None), following(0, [], "l0.k0")
    else:
        only = int(association_id)
        first = f"(SELECT min(association_id) FROM {table} WHERE association_id = {only})"  # noqa: S608
        step = "NULL"
    ctes = [f"l0(k0) AS (SELECT {first} UNION ALL SELECT {step} FROM l0 WHERE k0 IS NOT NULL)"]  # noqa: S608
    for level in range(1, len(cols)):
        known = [f"k{i}" for i in range(level)]
        parent, mine = f"l{level - 1}", f"l{level}"
        outer = [f"{parent}.{k}" for k in known]
        inner = [f"{mine}.{k}" for k in known]
        ctes.append(
            f"{mine}({', '.join(known)}, k{level}) AS ("  # noqa: S608
            f"SELECT {', '.join(outer)}, {following(level, outer, None)} FROM {parent}"
            f" WHERE {parent}.k{level - 1} IS NOT NULL UNION ALL"
            f" SELECT {', '.join(inner)}, {following(level, inner, f'{mine}.k{level}')}"
            f" FROM {mine} WHERE {mine}.k{level} IS NOT NULL)"
        )
    last = len(cols) - 1
    columns = ", ".join(f"k{i}" for i in range(len(cols)))
    select_last = f"SELECT {columns} FROM l{last} WHERE k{last} IS NOT NULL"  # noqa: S608
    return f"WITH RECURSIVE {', '.join(ctes)} {select_last}"


Prefixes = dict[str, list[tuple[Any, ...]]]  # rollup table name -> its key prefixes


async def key_prefixes(db: Executor, association_id: int | None = None) -> Prefixes:
    """The distinct (association_id, dim, channel, theme) of both rollup tables
    (``_prefixes_sql``): where ``rebuild_month`` deletes. Found once per rebuild: on
    PostgreSQL each search costs about 0.4 s of server CPU (dead index entries of the rows
    just replaced), as much as a month's rebuild."""
    found: Prefixes = {}
    for table in (ROLLUPS, MONTHLY):
        rows = await db.execute(text(_prefixes_sql(table.name, association_id)))
        found[table.name] = [tuple(row) for row in rows]
    return found


async def _delete_days(
    db: Executor, table: Table, prefixes: list[tuple[Any, ...]], first: date, after: date
) -> None:
    """Delete the rows of [first, after) of a rollup table: one primary-key range per prefix."""
    if not prefixes:
        return
    c = table.c
    statement = delete(table).where(
        *(c[name] == bindparam(f"p_{name}") for name in PREFIX_COLUMNS),
        c.day >= bindparam("p_first", type_=Date),
        c.day < bindparam("p_after", type_=Date),
    )
    params = [
        {
            **{f"p_{n}": v for n, v in zip(PREFIX_COLUMNS, prefix, strict=True)},
            "p_first": first,
            "p_after": after,
        }
        for prefix in prefixes
    ]
    await db.execute(statement, params)


def months_between(first: date, last: date) -> list[date]:
    """The first days of the calendar months from ``first``'s to ``last``'s."""
    months = []
    current = first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
    return months


async def event_months(db: Executor, zone: ZoneInfo) -> list[date]:
    """The local months the events span (every association): the rebuild's chunks."""
    first = await db.scalar(select(func.min(StatEvent.occurred_at)))
    last = await db.scalar(select(func.max(StatEvent.occurred_at)))
    if first is None or last is None:
        return []
    return months_between(first.astimezone(zone).date(), last.astimezone(zone).date())


async def rebuild_month(
    db: Executor,
    zone: ZoneInfo,
    month: date,
    association_id: int | None = None,
    prefixes: Prefixes | None = None,
) -> int:
    """Recompute the daily and monthly rollups of one local month from stat_events (all
    associations, or one); the daily rows written. Run it in a transaction of its own: on
    SQLite its first statement takes the write lock, on PostgreSQL it locks both rollup tables
    against writers (SHARE ROW EXCLUSIVE) before reading the events, so that a live event is
    either in the events read or added to the rows written, never lost nor counted twice.

    All in SQL, same keys as ``rollups._keys``: the month's events grouped by what the rollups
    keep go to a temporary table, their themes and organisations are listed with json_each /
    json_array_elements, one INSERT … SELECT … GROUP BY per dimension writes the per-channel
    daily rows to a temporary table; from it come the daily rows, their ``'*'`` channel (an
    event has one channel) and the month's rows, each one INSERT in primary-key order."""
    dialect = db.get_bind().dialect.name if isinstance(db, AsyncSession) else db.dialect.name
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    if dialect == "postgresql":
        await db.execute(
            text(f"LOCK TABLE {ROLLUPS.name}, {MONTHLY.name} IN SHARE ROW EXCLUSIVE MODE")
        )
        await db.execute(text(f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'"))
    if prefixes is None:
        prefixes = await key_prefixes(db, association_id)
    for table in (ROLLUPS, MONTHLY):
        await _delete_days(db, table, prefixes[table.name], month, following)
    # The month's UTC bounds with a margin wider than any daylight-saving shift, in case
    # the database's time zone rules differ from Python's; the local day decides (below).
    low = datetime.combine(month, time(), zone) - MARGIN
    high = datetime.combine(following, time(), zone) + MARGIN
    if dialect == "sqlite":
        # Hundreds of thousands of rows sorted: a 2 MB page cache would thrash (reset below).
        await db.execute(text(f"PRAGMA cache_size = -{REBUILD_CACHE_KIB}"))
    grouped = _facts_select(dialect, zone, low, high).where(
        StatEvent.occurred_at >= low, StatEvent.occurred_at < high
    )
    if association_id is not None:
        grouped = grouped.where(StatEvent.association_id == association_id)
    inner = grouped.subquery()
    facts = select(*inner.c).where(inner.c.day >= month, inner.c.day < following)
    await _create_temporary(db, dialect)
    fact_table = table_clause(_FACTS, *(column(c.name) for c in facts.selected_columns))
    await db.execute(
        insert(fact_table).from_select([c.name for c in facts.selected_columns], facts)
    )
    # A derived kind (unmet demand, a check that found a right, an amount band) is a kind of
    # its own: copies of the events that have one (themes, benefit and département kept).
    await db.execute(
        text(
            f"INSERT INTO {_FACTS} (association_id, day, kind, channel, derived, theme, themes,"  # noqa: S608
            " benefit, departement, language, wanted, n, duration) SELECT association_id, day,"
            " derived, channel, NULL, theme, themes, benefit, departement, language, wanted, n,"
            f" duration FROM {_FACTS} WHERE derived IS NOT NULL"
        )
    )
    if dialect == "postgresql":
        await db.execute(text(f"ANALYZE {_FACTS}"))
    for statement in (*_list_statements(dialect), *_expand_statements()):
        await db.execute(text(statement))
    keys = ", ".join(KEY_COLUMNS)
    star = "association_id, dim, theme, day, kind, value"
    month_keys = "association_id, dim, channel, theme, kind, value"
    month_star = "association_id, dim, theme, kind, value"
    overwrite = _OVERWRITE
    if dialect == "postgresql":
        # Plain INSERTs: ON CONFLICT's speculative insertion cost ~20 % of the server's CPU
        # (100k sessions: 22.4 -> 18.3 s, daily rows). No conflict is left to resolve: a row of
        # the month that the deletion above missed has a prefix newer than the search (a live
        # event's), and that event, read under the lock, gives the month's rows the same
        # prefix: every prefix of the rows to write that the search did not know is deleted
        # here. A conflict would still fail loudly (unique violation), never count twice.
        rows = await db.execute(
            text(f"SELECT DISTINCT association_id, dim, channel, theme FROM {_DAYS}")  # noqa: S608
        )
        written_prefixes = {tuple(row) for row in rows}
        written_prefixes |= {(a, dim, ALL, theme) for a, dim, _, theme in written_prefixes}
        for table in (ROLLUPS, MONTHLY):  # the month's rows share the daily rows' prefixes
            known = set(prefixes[table.name])
            fresh = sorted(p for p in written_prefixes if p not in known)
            await _delete_days(db, table, fresh, month, following)
        overwrite = ""
    written = 0
    for statement in (
        # "WHERE 1 = 1": SQLite's reading of INSERT … SELECT … ON CONFLICT needs a WHERE.
        f"SELECT {keys}, count, duration_sum FROM {_DAYS} WHERE 1 = 1 ORDER BY {keys}",  # noqa: S608
        f"SELECT association_id, dim, '{ALL}', theme, day, kind, value, SUM(count),"  # noqa: S608
        f" SUM(duration_sum) FROM {_DAYS} WHERE 1 = 1 GROUP BY {star} ORDER BY {star}",
    ):
        result = await db.execute(text(_INSERT.format(table=ROLLUPS.name) + statement + overwrite))
        written += int(result.rowcount or 0)  # type: ignore[attr-defined]
    for statement in (
        f"SELECT association_id, dim, channel, theme, :month, kind, value, SUM(count),"  # noqa: S608
        f" SUM(duration_sum) FROM {_DAYS} WHERE 1 = 1 GROUP BY {month_keys}"
        f" ORDER BY {month_keys}",
        f"SELECT association_id, dim, '{ALL}', theme, :month, kind, value, SUM(count),"  # noqa: S608
        f" SUM(duration_sum) FROM {_DAYS} WHERE 1 = 1 GROUP BY {month_star}"
        f" ORDER BY {month_star}",
    ):
        await db.execute(
            text(_INSERT.format(table=MONTHLY.name) + statement + overwrite).bindparams(
                bindparam("month", type_=Date)
            ),
            {"month": month},
        )
    await _drop_temporary(db)
    if dialect == "sqlite":
        await db.execute(text("PRAGMA cache_size = -2000"))
    return written


async def delete_outside(
    db: Executor, months: list[date], prefixes: Prefixes, association_id: int | None = None
) -> None:
    """Delete the rollups of the days before the first month and from the one after the last
    (all of them without months): no event is left there."""
    if not months:
        for table in (ROLLUPS, MONTHLY):
            wipe = delete(table)
            if association_id is not None:
                wipe = wipe.where(table.c.association_id == association_id)
            await db.execute(wipe)
        return
    following = (months[-1].replace(day=28) + timedelta(days=4)).replace(day=1)
    for table in (ROLLUPS, MONTHLY):
        await _delete_days(db, table, prefixes[table.name], date.min, months[0])
        await _delete_days(db, table, prefixes[table.name], following, date.max)


async def analyze(db: Executor) -> None:
    """Fresh planner statistics on PostgreSQL (until autovacuum comes by, new rows have none:
    seconds-long plans)."""
    dialect = db.get_bind().dialect.name if isinstance(db, AsyncSession) else db.dialect.name
    if dialect == "postgresql":
        await db.execute(text(f"ANALYZE {ROLLUPS.name}, {MONTHLY.name}"))


async def rebuild_rollups(
    db: AsyncSession, zone: ZoneInfo, association_id: int | None = None
) -> int:
    """Recompute the daily and monthly rollups from stat_events (all associations, or one),
    days counted in ``zone``, in the caller's transaction; returns the daily rows written.
    For bulk imports (Core inserts bypass the flush hook) and tests: a live database rebuilds
    with ``rebuild_in_chunks`` (``permanence stats rebuild``), one month per transaction."""
    months = await event_months(db, zone)
    prefixes = await key_prefixes(db, association_id)
    await delete_outside(db, months, prefixes, association_id)
    written = 0
    for month in months:
        written += await rebuild_month(db, zone, month, association_id, prefixes)
    await analyze(db)
    return written


@dataclass(frozen=True)
class Progress:
    """Where a chunked rebuild stands, after each month."""

    done: int
    total: int
    month: date
    rows: int  # daily rows written so far
    elapsed_s: float


async def rebuild_in_chunks(
    sessionmaker: async_sessionmaker[AsyncSession],
    zone: ZoneInfo,
    association_id: int | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> int:
    """The rebuild of a live database: one transaction per month (``rebuild_month``), so the
    write lock (SQLite) or the rollup tables' lock (PostgreSQL) is held for one month's work
    (~4 s per month at 1M sessions over 2 years on a 2-core machine, busy), and every committed
    state is exact. Safe to
    run again (idempotent) or to stop: the months done are done. The daily rows written."""
    started = clock.perf_counter()
    async with sessionmaker.begin() as db:
        await begin_write(db)
        months = await event_months(db, zone)
        prefixes = await key_prefixes(db, association_id)
        await delete_outside(db, months, prefixes, association_id)
    written = 0
    for done, month in enumerate(months, 1):
        async with sessionmaker.begin() as db:
            await begin_write(db)
            written += await rebuild_month(db, zone, month, association_id, prefixes)
        if progress is not None:
            progress(Progress(done, len(months), month, written, clock.perf_counter() - started))
    async with sessionmaker.begin() as db:
        await analyze(db)
    return written
