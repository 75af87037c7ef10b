"""The exports of a report: the dashboard's tables as CSV, and the JSON of the API. Every
count goes through ``display.shown`` (small counts read "< N")."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

from server import i18n, taxonomy
from server.i18n import N_, _
from server.integers import parse_int
from server.stats.display import period_label, published_rate, shown
from server.stats.events import EventKind
from server.stats.filters import Filters
from server.stats.queries import DepartementFigures, LanguageFigures, Report
from server.stats.rollups import CHANNELS, DEMAND_KINDS, DURATION_BUCKETS, SESSIONS, UNMET

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
    "languages": N_("Par langue"),
    "vault": N_("Coffre-fort : par période"),
    "vault_categories": N_("Coffre-fort : documents par type"),
    "vault_departements": N_("Coffre-fort : par département"),
}
# The vault's columns: CSV names and the event kind each counts.
VAULT_COLUMNS: tuple[tuple[str, EventKind], ...] = (
    ("vaults_created", EventKind.VAULT_CREATED),
    ("documents_added", EventKind.VAULT_DOCUMENT_ADDED),
    ("documents_shown", EventKind.VAULT_DOCUMENT_SHOWN),
    ("vaults_deleted", EventKind.VAULT_DELETED),
)
# Every language of the beneficiary's side (server/i18n.py LANGUAGES) named in French; the
# tables add its own name: "Arabe (العربية)".
LANGUAGE_NAMES: dict[str, str] = {lang.code: lang.french for lang in i18n.LANGUAGES}
_FACET_TABLES = {
    "organisations": ("org", taxonomy.ORGANISATIONS),
    "outcomes": ("outcome", taxonomy.OUTCOMES),
    "autonomy": ("autonomy", taxonomy.AUTONOMY),
    "durations": ("dur", DURATION_BUCKETS),
}


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


@dataclass(frozen=True)
class LanguageRow:
    """One line of the language table: the language named in French and in itself."""

    code: str
    name: str  # in French
    own_name: str | None  # named in itself, when that differs (None for French, unknown codes)
    rtl: bool
    figures: LanguageFigures

    @property
    def label(self) -> str:
        """The label in tables: « Arabe (العربية) », « Français », or an unknown code as is."""
        return f"{self.name} ({self.own_name})" if self.own_name else self.name


def language_rows(report: Report) -> list[LanguageRow]:
    """Every language of the beneficiary's side in the switch's order, counted or not, then
    any other code found in the events (a language since removed)."""
    rows = []
    for language in i18n.LANGUAGES:
        name = _(LANGUAGE_NAMES.get(language.code, language.code)).capitalize()
        own = None if language.name == name else language.name
        figures = report.languages.get(language.code) or LanguageFigures(language.code)
        rows.append(LanguageRow(language.code, name, own, language.rtl, figures))
    rows += [
        LanguageRow(code, code, None, False, figures)
        for code, figures in sorted(report.languages.items())
        if code not in i18n.BY_CODE
    ]
    return rows


_LANGUAGE_FIELDS = (
    "demand",
    "demand_language_wanted",
    UNMET,
    "unmet_language_wanted",
)


def _language_counts(figures: LanguageFigures, small: int) -> list[int | str]:
    """A language's published counts, in the order of ``_LANGUAGE_FIELDS``."""
    counts = (figures.demand, figures.demand_wanted, figures.unmet, figures.unmet_wanted)
    return [shown(n, small) for n in counts]


def vault_volume_rows(report: Report) -> list[tuple[str, list[int]]]:
    """(period label, counts in VAULT_COLUMNS order) for every period of the report."""
    rows = []
    for start in report.periods:
        counts = report.vault.volumes.get(start, Counter())
        rows.append(
            (
                period_label(start, report.filters.granularity),
                [counts[kind.value] for _name, kind in VAULT_COLUMNS],
            )
        )
    return rows


def vault_category_rows(report: Report) -> list[tuple[str, str, int]]:
    """(code, French label, documents added) per category, in the page's order, then the
    documents whose category stays encrypted, then any unknown code."""
    counts = report.vault.categories
    rows = [
        (code, _(label), counts.get(code, 0)) for code, label in taxonomy.VAULT_CATEGORIES.items()
    ]
    hidden = taxonomy.VAULT_NON_PRECISE
    rows.append((hidden, _(taxonomy.VAULT_NON_PRECISE_LABEL), counts.get(hidden, 0)))
    known = {*taxonomy.VAULT_CATEGORIES, hidden}
    rows += [(code, code, n) for code, n in sorted(counts.items()) if code not in known]
    return rows


def vault_departement_rows(report: Report) -> list[tuple[str, str, list[int]]]:
    """(code, name, counts in VAULT_COLUMNS order) per département with a vault step; vaults
    made without a room ("" : not known) last."""
    names = {d.code: d.name for d in report.departements}
    rows = [
        (code, names.get(code, code), [counts[kind.value] for _name, kind in VAULT_COLUMNS])
        for code, counts in sorted(report.vault.departements.items())
        if code
    ]
    if "" in report.vault.departements:
        counts = report.vault.departements[""]
        rows.append(("", _("inconnu"), [counts[kind.value] for _name, kind in VAULT_COLUMNS]))
    return rows


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"):
# names typed by people (volunteers, unknown codes) could then open links or leak other cells.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: a leading ``'`` before a formula character
    (numbers are left alone: -3 is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_table(report: Report, table: str, small: int) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of one CSV table, small counts shown as "< N", no cell a formula."""
    header, body = _table(report, table, small)
    return header, [[spreadsheet_safe(cell) for cell in line] for line in body]


def _vault_table(report: Report, table: str, small: int) -> tuple[list[str], list[list[Any]]]:
    columns = [name for name, _kind in VAULT_COLUMNS]
    if table == "vault":
        return ["period", *columns], [
            [label, *(shown(n, small) for n in counts)]
            for label, counts in vault_volume_rows(report)
        ]
    if table == "vault_categories":
        return ["category", "label", "documents_added"], [
            [code, label, shown(n, small)] for code, label, n in vault_category_rows(report)
        ]
    return ["departement", "name", *columns], [
        [code or "inconnu", name, *(shown(n, small) for n in counts)]
        for code, name, counts in vault_departement_rows(report)
    ]


def _table(report: Report, table: str, small: int) -> tuple[list[str], list[list[Any]]]:
    if table.startswith("vault"):
        return _vault_table(report, table, small)
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
    if table == "languages":
        return ["language", "label", *_LANGUAGE_FIELDS], [
            [row.code, row.label, *_language_counts(row.figures, small)]
            for row in language_rows(report)
        ]
    # The départements' columns are those of the API, "code" named "departement".
    header = ["departement", *_DEPARTEMENT_FIELDS[1:]]
    lines = report.ranking() if table == "ranking" else [*report.departements, report.unknown]
    body = [[_csv_cell(v) for v in _departement_json(dep, small).values()] for dep in lines]
    if table == "ranking":
        header.insert(0, "rank")
        body = [[i, *line] for i, line in enumerate(body, start=1)]
    return header, body


_DEPARTEMENT_FIELDS = (
    "code",
    "name",
    "population",
    "sessions",
    "sessions_per_100k",
    UNMET,
    "unmet_per_100k",
)


def _departement_json(dep: DepartementFigures, small: int) -> dict[str, Any]:
    """One département's published figures, in the order of ``_DEPARTEMENT_FIELDS``."""
    values = (
        dep.code or "inconnu",
        dep.name,
        dep.population,
        shown(dep.sessions, small),
        published_rate(dep, dep.sessions, small),
        shown(dep.unmet, small),
        published_rate(dep, dep.unmet, small),
    )
    return dict(zip(_DEPARTEMENT_FIELDS, values, strict=True))


def _csv_cell(value: Any) -> Any:
    """None (no population, a suppressed rate) as an empty cell; rates with two decimals."""
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else value


def _volume_json(start: date, counts: Counter[str], filters: Filters, small: int) -> dict[str, Any]:
    return {
        "period": period_label(start, filters.granularity),
        "sessions": shown(counts[SESSIONS], small),
        "by_channel": {c: shown(counts[f"{SESSIONS}:{c}"], small) for c in CHANNELS},
        "demand": shown(sum(counts[k] for k in DEMAND_KINDS), small),
        "unmet": shown(counts[UNMET], small),
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
            _volume_json(start, report.volumes.get(start, Counter()), f, small)
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
            {"id": parse_int(vid), "name": name, "sessions": shown(n, small)}
            for vid, name, n in volunteer_rows(report)
        ],
        "departements": [
            _departement_json(d, small) for d in [*report.departements, report.unknown]
        ],
        "ranking": [_departement_json(d, small) for d in report.ranking()],
        "languages": [
            {
                "code": row.code,
                "label": row.label,
                **dict(zip(_LANGUAGE_FIELDS, _language_counts(row.figures, small), strict=True)),
            }
            for row in language_rows(report)
        ],
    }
