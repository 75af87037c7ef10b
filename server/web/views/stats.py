"""The coordinator's statistics: /stats (volumes, themes, map of France, where to open a
permanence, the vault, the rights checks) and /stats.csv. Figures come from the rollups
(server/stats/); the rights checks' are published by server/rights/figures.py."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from server import geo, taxonomy
from server.i18n import _
from server.rights import figures as rights_figures
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.stats.display import (
    class_of,
    french_number,
    local_today,
    median_bucket,
    period_label,
    quantile_classes,
    shown,
)
from server.stats.export import (
    TABLES,
    export_table,
    facet_rows,
    language_rows,
    theme_rows,
    vault_category_rows,
    vault_departement_rows,
    vault_volume_rows,
    volunteer_rows,
)
from server.stats.filters import FilterError, Filters, default_filters, parse_filters
from server.stats.queries import DepartementFigures, Report, build_report
from server.stats.rollups import (
    CHANNELS,
    DEMAND_KINDS,
    DURATION_BUCKETS,
    RIGHTS_UNCLAIMED,
    SESSIONS,
    UNMET,
)
from server.store.models import Role
from server.web.middlewares import status_of
from server.web.request import login_required, render, required_user

routes = web.RouteTableDef()
MAPS = ("sessions", "unmet", "rights")
PALETTES = {
    "sessions": ("#f1f5fb", "#c6dbef", "#6baed6", "#3182bd", "#08519c", "#08306b"),
    "unmet": ("#fdf3ea", "#fdd0a2", "#fd8d3c", "#e6550d", "#a63603", "#7f2704"),
    "rights": ("#f2f9f1", "#c7e9c0", "#74c476", "#31a354", "#006d2c", "#00441b"),
}
NO_DATA = "#d9d9d9"
SUPPRESSED = "url(#map-suppressed)"  # a hatching (``_map.html``): a count too small to publish
# Where each map's figures are also given as a table (the map's accessible alternative).
MAP_TABLES = {"sessions": "departements", "unmet": "departements", "rights": "droits-departements"}
OVERSEAS = ("971", "972", "973", "974", "976")
INSET_TOP = 600  # the overseas boxes go below the metropolitan map
INSET_WIDTH = 114
INSET_HEIGHT = 58


@dataclass(frozen=True)
class Area:
    """One département on the map: outline (or inset box), fill, accessible title."""

    code: str
    name: str
    d: str | None
    fill: str
    dark: bool
    title: str
    x: int = 0
    y: int = 0


def filters_or_error(request: web.Request) -> Filters:
    """The request's filters; FilterError carries the French message."""
    today = local_today(request.app[SETTINGS_KEY].timezone)
    return parse_filters(request.query, today)


async def load_report(request: web.Request, filters: Filters) -> Report:
    """The report of the logged-in coordinator's association."""
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await build_report(db, user.association_id, filters)


def _map_count(report: Report, dep: DepartementFigures, kind: str) -> int:
    if kind == "sessions":
        return dep.sessions
    if kind == "unmet":
        return dep.unmet
    return report.rights.departements.get(dep.code, Counter())[RIGHTS_UNCLAIMED]


def _rate_title(dep: DepartementFigures, kind: str, count: int, small: int | None) -> str:
    what = {
        "sessions": _("accompagnements"),
        "unmet": _("demandes non satisfaites"),
        "rights": _("droits potentiels non réclamés"),
    }[kind]
    values = {"name": dep.name, "code": dep.code, "n": french_number(count), "what": what}
    if small is not None and 0 < count < small:
        return _("%(name)s (%(code)s) : moins de %(small)s %(what)s (non publié)") % {
            **values,
            "small": small,
        }
    rate = dep.rate(count)
    if rate is None:
        return _("%(name)s (%(code)s) : %(n)s %(what)s, population inconnue") % values
    return _("%(name)s (%(code)s) : %(rate)s %(what)s pour 100 000 habitants (%(n)s)") % {
        **values,
        "rate": french_number(rate),
    }


def build_map(report: Report, kind: str, small: int) -> dict[str, Any]:
    """The choropleth: metropolitan paths, overseas insets, quantile legend. The rights
    checks' map hides small counts (hatched), as their tables do."""
    palette = PALETTES[kind]
    hide = small if kind == "rights" else None
    counts = {d.code: _map_count(report, d, kind) for d in report.departements}
    rates: dict[str, float | None] = {}
    for dep in report.departements:
        n = counts[dep.code]
        rates[dep.code] = None if hide is not None and 0 < n < hide else dep.rate(n)
    bounds = quantile_classes(r for r in rates.values() if r is not None)
    by_code = {d.code: d for d in report.departements}

    def area(dep: DepartementFigures, d: str | None, x: int = 0, y: int = 0) -> Area:
        n = counts[dep.code]
        title = _rate_title(dep, kind, n, hide)
        if hide is not None and 0 < n < hide:
            return Area(dep.code, dep.name, d, SUPPRESSED, False, title, x, y)
        cls = class_of(rates.get(dep.code), bounds)
        fill = NO_DATA if cls is None else palette[cls]
        return Area(dep.code, dep.name, d, fill, cls is not None and cls >= 4, title, x, y)

    paths = [area(by_code[p.code], p.d) for p in geo.map_paths() if p.code in by_code]
    insets = [
        area(by_code[code], None, 4 + i * (INSET_WIDTH + 8), INSET_TOP)
        for i, code in enumerate(OVERSEAS)
        if code in by_code
    ]
    legend = [(palette[0], "0")]
    low = 0.0
    for i, bound in enumerate(bounds, start=1):
        text = f"{french_number(low)} – {french_number(bound)}"
        legend.append((palette[i], text))
        low = bound
    legend.append((NO_DATA, _("population inconnue")))
    if hide is not None:
        legend.append((SUPPRESSED, _("moins de %(n)s (non publié)") % {"n": hide}))
    x0, y0, width, _height = (float(v) for v in geo.map_view_box().split())
    view_box = f"{x0:g} {y0:g} {width:g} {INSET_TOP + INSET_HEIGHT + 6 - y0:g}"
    titles = {
        "sessions": _("Accompagnements pour 100 000 habitants, par département"),
        "unmet": _("Demandes non satisfaites pour 100 000 habitants, par département"),
        "rights": _("Droits potentiels non réclamés pour 100 000 habitants, par département"),
    }
    return {
        "kind": kind,
        "title": titles[kind],
        "table": MAP_TABLES[kind],
        "paths": paths,
        "insets": insets,
        "legend": legend,
        "view_box": view_box,
        "inset_width": INSET_WIDTH,
        "inset_height": INSET_HEIGHT,
    }


def _bars(rows: list[tuple[str, int]]) -> list[tuple[str, int, float]]:
    top = max((n for _label, n in rows), default=0)
    return [(label, n, (100.0 * n / top) if top else 0.0) for label, n in rows]


def published_text(value: int | str | float | None) -> str:
    """A published figure for the page: a count in French, or "< N" as is."""
    return value if isinstance(value, str) else french_number(value)


def percent_text(value: float | None) -> str:
    """12,5 % (narrow no-break space), or "—" when not published."""
    return "—" if value is None else f"{french_number(value)}\u202f%"


def euros_text(value: int | None) -> str:
    """An estimated monthly total: "environ 12 000 €", or "—" when not published."""
    if value is None:
        return "—"
    if value == 0:
        return "0 €"
    return _("environ %(n)s €") % {"n": french_number(value)}


def page_context(report: Report, map_kind: str, small: int) -> dict[str, Any]:
    """What the dashboard template shows, computed once here."""
    f = report.filters
    sessions = report.totals[SESSIONS]
    volumes = []
    top = max(
        (report.volumes.get(p, Counter()).get(SESSIONS, 0) for p in report.periods),
        default=0,
    )
    top_unmet = max(
        (report.volumes.get(p, Counter()).get(UNMET, 0) for p in report.periods),
        default=0,
    )
    for start in report.periods:
        counts = report.volumes.get(start) or Counter()
        segments = []
        offset = 0.0
        for channel in CHANNELS:
            n = counts[f"{SESSIONS}:{channel}"]
            width = 100.0 * n / top if top else 0.0
            segments.append((channel, offset, width, n))
            offset += width
        volumes.append(
            {
                "label": period_label(start, f.granularity),
                "sessions": counts[SESSIONS],
                "ended": counts["session_ended"],
                "demand": sum(counts[k] for k in DEMAND_KINDS),
                "unmet": counts[UNMET],
                "unmet_width": 100.0 * counts[UNMET] / top_unmet if top_unmet else 0,
                "segments": segments,
            }
        )
    durations = dict(report.facets.get("dur", {}))
    median = median_bucket(durations)
    return {
        "report": report,
        "sessions": sessions,
        "mean_minutes": report.duration_sum / sessions / 60 if sessions else None,
        "median_label": _(DURATION_BUCKETS[median]) if median else None,
        "volumes": volumes,
        "themes": [
            (label, counts[SESSIONS], counts[UNMET]) for _code, label, counts in theme_rows(report)
        ],
        "facets": {
            table: _bars([(label, n) for _code, label, n in facet_rows(report, table)])
            for table in ("organisations", "outcomes", "autonomy", "durations")
        },
        "volunteers": _bars([(name, n) for _vid, name, n in volunteer_rows(report)]),
        "departements": sorted(
            [d for d in report.departements if d.sessions or d.unmet or d.demand],
            key=lambda d: (-d.sessions, d.code),
        ),
        "unknown": report.unknown,
        "ranking": report.ranking()[:20],
        "languages": _language_lines(report, small),
        "map": build_map(report, map_kind, small),
        "vault": report.vault,
        "vault_volumes": vault_volume_rows(report),
        "vault_categories": _bars([(label, n) for _code, label, n in vault_category_rows(report)]),
        "vault_departements": vault_departement_rows(report),
        **_rights_context(report, small),
        "map_kind": map_kind,
        **_form_context(f),
        "tables": {**TABLES, **rights_figures.TABLES},
        "number": french_number,
        "query": lambda **changes: "?" + urlencode(f.query(**changes)),
    }


def _language_lines(report: Report, small: int) -> list[dict[str, Any]]:
    """The language table as published, on the page too (small counts read "< N"): a rare
    language in a small association could point at one person."""
    lines = []
    for row in language_rows(report):
        f = row.figures
        lines.append(
            {
                "code": row.code,
                "name": row.name,
                "own_name": row.own_name,
                "dir": "rtl" if row.rtl else "ltr",
                "counts": [
                    published_text(shown(n, small))
                    for n in (f.demand, f.demand_wanted, f.unmet, f.unmet_wanted)
                ],
            }
        )
    return lines


def _rights_context(report: Report, small: int) -> dict[str, Any]:
    """The rights checks' section: published figures only (small counts read "< N")."""
    section = rights_figures.publish(report, small)
    return {
        "rights": section,
        "rights_benefits": rights_figures.page_order(section.benefits),
        "rights_departements": rights_figures.page_order(
            d for d in section.departements if d.any_check
        ),
        "small_count": small,
        "published": published_text,
        "percent": percent_text,
        "euros": euros_text,
    }


def _form_context(filters: Filters) -> dict[str, Any]:
    """What the filter form shows besides its values."""
    return {"filters": filters, "channels": CHANNELS, "theme_choices": taxonomy.THEMES}


@routes.get("/stats", name="stats")
@login_required(Role.COORDINATOR)
async def dashboard(request: web.Request) -> web.StreamResponse:
    """The statistics page of the coordinator's association; unusable filters show the form
    again with the French message."""
    map_kind = request.query.get("carte", "sessions")
    if map_kind not in MAPS:
        map_kind = "sessions"
    small = request.app[SETTINGS_KEY].stats_small_count
    try:
        filters = filters_or_error(request)
    except FilterError as exc:
        today = local_today(request.app[SETTINGS_KEY].timezone)
        context = {
            "error": exc.message,
            "form": dict(request.query),
            **_form_context(default_filters(today)),
        }
        return render(request, "stats/dashboard.html", context, status=status_of(exc))
    report = await load_report(request, filters)
    context = page_context(report, map_kind, small)
    context.update({"error": None, "form": filters.query()})
    return render(request, "stats/dashboard.html", context)


@routes.get("/stats.csv", name="stats-csv")
@login_required(Role.COORDINATOR)
async def export_csv(request: web.Request) -> web.StreamResponse:
    """One table of the dashboard as CSV; counts below the threshold read "< N". Unusable
    filters get the French error page (the error middleware renders the FilterError)."""
    table = request.query.get("table", "departements")
    tables = {**TABLES, **rights_figures.TABLES}
    if table not in tables:
        raise FilterError(
            "invalid_filters",
            _("Tableau inconnu : choisissez parmi %(t)s.") % {"t": ", ".join(tables)},
            "table",
        )
    filters = filters_or_error(request)
    report = await load_report(request, filters)
    small = request.app[SETTINGS_KEY].stats_small_count
    if table in rights_figures.TABLES:
        section = rights_figures.publish(report, small)
        header, rows = rights_figures.export_table(section, table)
    else:
        header, rows = export_table(report, table, small)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    name = f"statistiques-{table}-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
