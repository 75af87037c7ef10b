"""The report of ``/stats``, its CSV files and the API: the rollups of one association read
for some filters, whole months from the monthly table and edge days from the daily one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Date, DateTime, Table, and_, cast, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from server import geo
from server.i18n import _
from server.integers import parse_int
from server.stats.events import UNKNOWN_DEPARTEMENT, EventKind
from server.stats.filters import Filters
from server.stats.rollups import (
    ALL,
    CHANNELS,
    DEMAND_KINDS,
    DEP_KINDS,
    LANGUAGE_DIM,
    LANGUAGE_DIMS,
    LANGUAGE_KINDS,
    MONTHLY,
    RIGHTS_PREFIX,
    ROLLUPS,
    SESSIONS,
    UNMET,
    VAULT_KINDS,
)
from server.store.models import User

VOLUME_KINDS = (SESSIONS, EventKind.SESSION_ENDED.value, *DEMAND_KINDS, UNMET)
FACET_DIMS = ("org", "outcome", "autonomy", "dur", "vol")


@dataclass
class DepartementFigures:
    """One département's line of a report: sessions (sheets), unmet demand and all demand,
    counts and per 100,000 inhabitants (the place itself is a ``geo.Departement``)."""

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
class LanguageFigures:
    """Demand and unmet demand of the people who used one language (an event without a
    language counts as French), and of those who asked for a volunteer speaking it."""

    code: str
    demand: int = 0
    demand_wanted: int = 0
    unmet: int = 0
    unmet_wanted: int = 0

    @property
    def is_empty(self) -> bool:
        """Nobody asked for help in this language in the period."""
        return not (self.demand or self.unmet)


@dataclass
class VaultFigures:
    """The vault's section (coffre-fort): its steps by period, documents added by category,
    and by département (where the vault was made from a room; "" otherwise). Every channel
    and theme: the dashboard's channel and theme filters are about sessions, not vaults."""

    volumes: dict[date, Counter[str]] = field(default_factory=dict)  # period -> kind -> n
    totals: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)  # documents added by category
    departements: dict[str, Counter[str]] = field(default_factory=dict)  # code -> kind -> n

    @property
    def is_empty(self) -> bool:
        """No vault step in the period."""
        return not any(self.totals.values())


@dataclass
class RightsFigures:
    """The rights checks' section (droits potentiels non réclamés), raw counts by kind:
    ``rights_checked``, ``rights_found``, ``rights_unclaimed`` and the band kinds
    (``rights_band:<code>``), over the period, by benefit and by département ("" not known;
    "99" could not be placed). The channel filter applies, the theme filter does not (a
    check's benefits are not the sessions' themes). server/rights/figures.py publishes them."""

    totals: Counter[str] = field(default_factory=Counter)  # kind -> n
    benefits: dict[str, Counter[str]] = field(default_factory=dict)  # code -> kind -> n
    departements: dict[str, Counter[str]] = field(default_factory=dict)  # code -> kind -> n

    @property
    def is_empty(self) -> bool:
        """No rights check in the period."""
        return not any(self.totals.values())


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
    departements: list[DepartementFigures] = field(default_factory=list)
    unknown: DepartementFigures = field(default_factory=lambda: DepartementFigures("", "", None))
    languages: dict[str, LanguageFigures] = field(default_factory=dict)  # code -> figures
    vault: VaultFigures = field(default_factory=VaultFigures)
    rights: RightsFigures = field(default_factory=RightsFigures)

    @property
    def is_empty(self) -> bool:
        """Nothing at all was counted in the period."""
        return not any(self.totals.values())

    def ranking(self) -> list[DepartementFigures]:
        """Where to open a permanence: highest unmet demand per 100,000 first."""
        placed = [d for d in self.departements if d.unmet > 0]
        return sorted(
            placed,
            key=lambda d: (d.unmet_rate is None, -(d.unmet_rate or 0.0), -d.unmet, d.code),
        )


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
    daily, monthly = ROLLUPS.c.day, MONTHLY.c.day
    first = filters.start if filters.start.day == 1 else _next_month(filters.start)
    after = _next_month(filters.end)  # first day after the last whole month (exclusive)
    if filters.end != after - timedelta(days=1):
        after = filters.end.replace(day=1)
    if days_only or first >= after:
        return [(ROLLUPS, and_(daily >= filters.start, daily <= filters.end))]
    tiers: list[tuple[Table, Any]] = [(MONTHLY, and_(monthly >= first, monthly < after))]
    # One branch per edge: a single range each keeps the primary key seek (an OR would not).
    if filters.start < first:
        tiers.append((ROLLUPS, and_(daily >= filters.start, daily < first)))
    if after <= filters.end:
        tiers.append((ROLLUPS, and_(daily >= after, daily <= filters.end)))
    return tiers


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _week_start(day: Any, dialect: str) -> Any:
    """The Monday of a date column's week, in SQL (``period_of`` in Python)."""
    if dialect == "postgresql":
        return cast(func.date_trunc("week", cast(day, DateTime)), Date)
    # Back six days, then forward to the next Monday (or the same day if it is one).
    return func.date(day, "-6 days", "weekday 1", type_=Date)


def _union(statements: list[Any]) -> Any:
    return statements[0] if len(statements) == 1 else union_all(*statements)


def period_of(day: date, granularity: str) -> date:
    """The first day of the week (Monday) or month a day falls in."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _periods(filters: Filters) -> list[date]:
    found = []
    current = period_of(filters.start, filters.granularity)
    while current <= filters.end:
        found.append(current)
        if filters.granularity == "week":
            current += timedelta(days=7)
        else:
            current = _next_month(current)
    return found


async def build_report(db: AsyncSession, association_id: int, filters: Filters) -> Report:
    """Read the rollups of one association for these filters: four grouped queries, each over
    the monthly table for whole months and the daily one for the edge days (and for weeks)."""
    report = Report(filters=filters, periods=_periods(filters))
    tiers = _tiers(filters)
    # Volumes: totals from the "*" rows (or the filtered channel), the split by channel from
    # the per-channel rows of the known channels.
    channels = [filters.channel] if filters.channel else [ALL, *CHANNELS]
    volumes: list[Any] = []
    weekly = filters.granularity == "week"
    for table, period in _tiers(filters, days_only=weekly):
        t = table.c
        # Weeks are summed in the database: a seventh of the rows come back to Python (the
        # weekly view over 24 months read ~14,000 daily rows into Python objects before).
        start = _week_start(t.day, db.get_bind().dialect.name) if weekly else t.day
        # One branch per channel: each a primary-key range (PostgreSQL reads "channel IN (…)"
        # as a filter over every channel and theme of the association's "all" rows).
        volumes.extend(
            select(start, t.kind, t.channel, func.sum(t.count), func.sum(t.duration_sum))
            .where(t.association_id == association_id, t.dim == "all")
            .where(t.channel == channel, t.theme == (filters.theme or ALL), period)
            .where(t.kind.in_(VOLUME_KINDS))
            .group_by(start, t.kind, t.channel)
            for channel in channels
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
        if table is ROLLUPS and not filters.theme:
            # "theme <> '*'" would scan every day of the key prefix: seek the themes of the
            # period's months instead (each daily theme is in its month's rows).
            m = MONTHLY.c
            statement = statement.where(
                table.c.theme.in_(
                    select(m.theme)
                    .distinct()
                    .where(*_where(MONTHLY, association_id, filters, "all", by_theme=True))
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
    found = (parse_int(value) for value in report.facets.get("vol", {}))
    volunteer_ids = [number for number in found if number is not None]
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
    by_code = {d.code: DepartementFigures(d.code, d.name, d.population) for d in geo.departements()}
    report.unknown = DepartementFigures("", _("inconnu"), None)
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
    report.languages = await _language_figures(db, association_id, filters, tiers)
    report.vault = await _vault_figures(db, association_id, filters)
    report.rights = await _rights_figures(db, association_id, filters)
    return report


async def _language_figures(
    db: AsyncSession, association_id: int, filters: Filters, tiers: list[tuple[Table, Any]]
) -> dict[str, LanguageFigures]:
    """Demand and unmet demand by language for the filters (channel and theme apply, as to
    the départements), from the ``lang`` and ``lang_want`` rows."""
    statements = [
        select(table.c.dim, table.c.value, table.c.kind, func.sum(table.c.count))
        .where(*_where(table, association_id, filters, LANGUAGE_DIMS), period)
        .where(table.c.kind.in_(LANGUAGE_KINDS))
        .group_by(table.c.dim, table.c.value, table.c.kind)
        for table, period in tiers
    ]
    figures: dict[str, LanguageFigures] = {}
    for dim, code, kind, count in await db.execute(_union(statements)):
        line = figures.setdefault(code, LanguageFigures(code))
        wanted = dim != LANGUAGE_DIM
        if kind == UNMET:
            if wanted:
                line.unmet_wanted += int(count)
            else:
                line.unmet += int(count)
        elif wanted:
            line.demand_wanted += int(count)
        else:
            line.demand += int(count)
    return figures


async def _vault_figures(db: AsyncSession, association_id: int, filters: Filters) -> VaultFigures:
    """The vault's steps of the period, from the rollups' "all channels" rows."""
    figures = VaultFigures()
    weekly = filters.granularity == "week"
    volumes = []
    for table, period in _tiers(filters, days_only=weekly):
        t = table.c
        start = _week_start(t.day, db.get_bind().dialect.name) if weekly else t.day
        volumes.append(
            select(start, t.kind, func.sum(t.count))
            .where(t.association_id == association_id, t.dim == "all")
            .where(t.channel == ALL, t.theme == ALL, period, t.kind.in_(VAULT_KINDS))
            .group_by(start, t.kind)
        )
    for day, kind, count in await db.execute(_union(volumes)):
        period_start = period_of(day, filters.granularity)
        figures.volumes.setdefault(period_start, Counter())[kind] += int(count)
        figures.totals[kind] += int(count)
    tiers = _tiers(filters)
    categories = [
        select(table.c.theme, func.sum(table.c.count))
        .where(table.c.association_id == association_id, table.c.dim == "all")
        .where(table.c.channel == ALL, table.c.theme != ALL, period)
        .where(table.c.kind == EventKind.VAULT_DOCUMENT_ADDED.value)
        .group_by(table.c.theme)
        for table, period in tiers
    ]
    for theme, count in await db.execute(_union(categories)):
        figures.categories[theme] += int(count)
    deps = [
        select(table.c.value, table.c.kind, func.sum(table.c.count))
        .where(table.c.association_id == association_id, table.c.dim == "dep")
        .where(table.c.channel == ALL, table.c.theme == ALL, period)
        .where(table.c.kind.in_(VAULT_KINDS))
        .group_by(table.c.value, table.c.kind)
        for table, period in tiers
    ]
    for code, kind, count in await db.execute(_union(deps)):
        figures.departements.setdefault(code, Counter())[kind] += int(count)
    return figures


async def _rights_figures(db: AsyncSession, association_id: int, filters: Filters) -> RightsFigures:
    """The rights checks of the period (the filtered channel, every theme), in one grouped
    query over the ``all``, ``dep`` and ``benefit`` rows of the rights kinds."""
    figures = RightsFigures()
    statements = [
        select(table.c.dim, table.c.value, table.c.kind, func.sum(table.c.count))
        .where(table.c.association_id == association_id)
        .where(table.c.dim.in_(("all", "dep", "benefit")))
        .where(table.c.channel == (filters.channel or ALL), table.c.theme == ALL, period)
        .where(table.c.kind.startswith(RIGHTS_PREFIX, autoescape=True))
        .group_by(table.c.dim, table.c.value, table.c.kind)
        for table, period in _tiers(filters)
    ]
    for dim, value, kind, count in await db.execute(_union(statements)):
        if dim == "all":
            figures.totals[kind] += int(count)
        elif dim == "dep":
            figures.departements.setdefault(value, Counter())[kind] += int(count)
        else:
            figures.benefits.setdefault(value, Counter())[kind] += int(count)
    return figures
