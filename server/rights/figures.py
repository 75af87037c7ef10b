"""Droits potentiels non réclamés: the rights checks' figures as published on /stats, in its
CSV files and in /api/v1/stats, from the raw counts of ``server.stats.queries.RightsFigures``.

From events to figures (the events: ``server/rights/statistics.py``):

- **checks**: ``rights_checked`` events; **checks with rights**: those that found at least one
  benefit probably due and not received (derived kind ``rights_found``).
- **unclaimed**: ``rights_unclaimed`` events, one per benefit found in a check; by benefit it
  is the number of checks that found that benefit (a check finds a benefit once).
- **share**: by benefit, the checks that found it over all the checks of the period and scope;
  overall and by département, the checks with rights over the checks. In percent, one decimal.
- **estimated monthly total**: the sum over the unclaimed benefits of their amount band's
  ``BAND_ESTIMATE`` (the band's middle; 1,000 € for "800 € and more"), rounded to two
  significant figures and shown as "environ 12 000 € par mois". A band is already an estimate
  within a factor of two: two significant figures say "about" without false precision, stay
  readable from 25 € to millions, and blur differences between published totals (a published
  total minus its published parts does not give back a suppressed part exactly). Bounds
  ("10 000 – 20 000 €") were the other choice: the open top band has no upper bound, and a
  span reads as two figures to compare. Benefits without an amount (the free complémentaire
  santé solidaire) add nothing; their own estimate is "sans objet" (``None``).

Suppression (``stats_small_count``, the same rule as the other tables: ``display.shown``): a
count from 1 to N-1 reads "< N", everywhere, the page included (unlike the other sections,
the page too: these figures are about people's incomes and are made to be shown to partners);
a share is published only when its count and the checks it divides by are not suppressed; an
estimate only when the number of unclaimed benefits with an amount band behind it is not
(one person's band would show otherwise); a rate per 100,000 inhabitants as ``published_rate``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.i18n import N_, _
from server.rights.benefits import AMOUNT_BANDS, BAND_ESTIMATE, BENEFITS
from server.stats.display import published_rate, shown
from server.stats.export import spreadsheet_safe
from server.stats.queries import DepartementFigures, Report
from server.stats.rollups import RIGHTS_BAND, RIGHTS_CHECKED, RIGHTS_FOUND, RIGHTS_UNCLAIMED

TABLES: dict[str, str] = {
    "rights_benefits": N_("Droits potentiels non réclamés : par aide"),
    "rights_departements": N_("Droits potentiels non réclamés : par département"),
}
UNKNOWN = "inconnu"  # the code of the line without a known département (as in export.py)
Published = int | str  # a count as published: the count, or "< N"


def about(value: int) -> int:
    """A non-negative amount rounded half up to two significant figures (12 345 -> 12 000)."""
    if value < 100:
        return value
    step = int(10 ** (len(str(value)) - 2))
    return (value + step // 2) // step * step


def banded(counts: Counter[str]) -> int:
    """How many unclaimed benefits behind these counts have an amount band."""
    return sum(counts[RIGHTS_BAND + code] for code, _low, _high in AMOUNT_BANDS)


def estimate(counts: Counter[str]) -> int:
    """The exact sum of the band estimates (never published as is: see ``about``)."""
    return sum(counts[RIGHTS_BAND + code] * BAND_ESTIMATE[code] for code in BAND_ESTIMATE)


def _suppressed(count: int, small: int) -> bool:
    return 0 < count < small


def published_share(part: int, whole: int, small: int) -> float | None:
    """``part`` in percent of ``whole``, one decimal; None when either is suppressed or
    ``whole`` is 0."""
    if whole == 0 or _suppressed(part, small) or _suppressed(whole, small):
        return None
    return round(100 * part / whole, 1)


def published_estimate(counts: Counter[str], small: int) -> int | None:
    """The estimated monthly total in euros, rounded (``about``); None when the benefits with
    a band behind it are too few to publish."""
    if _suppressed(banded(counts), small):
        return None
    return about(estimate(counts))


def _rank(count: int, small: int) -> float:
    """Sort key of a published count: suppressed counts rank together, below the threshold."""
    if _suppressed(count, small):
        return small - 0.5
    return float(count)


@dataclass(frozen=True)
class BenefitLine:
    """One benefit: the checks that found it, their share of all checks, the estimate."""

    code: str
    label: str
    unclaimed: Published
    share: float | None
    estimate: int | None  # None: suppressed, or no amount (``has_amount``)
    has_amount: bool
    rank: float  # for the page's order (published counts only)


@dataclass(frozen=True)
class DepartementLine:
    """One département ("inconnu": not given or not placed)."""

    code: str
    name: str
    population: int | None
    checks: Published
    unclaimed: Published
    unclaimed_per_100k: float | None
    share: float | None  # of the checks that found at least one right
    estimate: int | None
    rank: float
    any_check: bool


@dataclass(frozen=True)
class RightsSection:
    """The published figures of the rights checks for one report."""

    checks: Published
    found: Published
    share: float | None
    unclaimed: Published
    estimate: int | None
    benefits: list[BenefitLine]
    departements: list[DepartementLine]  # INSEE order, the unknown line last

    @property
    def is_empty(self) -> bool:
        """No check in the period."""
        return self.checks == 0


def _benefit_lines(report: Report, checks: int, small: int) -> list[BenefitLine]:
    found = report.rights.benefits
    codes = [*BENEFITS, *sorted(code for code in found if code not in BENEFITS)]
    lines = []
    for code in codes:
        counts = found.get(code, Counter())
        benefit = BENEFITS.get(code)
        has_amount = benefit is None or not benefit.boolean
        n = counts[RIGHTS_UNCLAIMED]
        lines.append(
            BenefitLine(
                code=code,
                label=_(benefit.label) if benefit else code,
                unclaimed=shown(n, small),
                share=published_share(n, checks, small),
                estimate=published_estimate(counts, small) if has_amount else None,
                has_amount=has_amount,
                rank=_rank(n, small),
            )
        )
    return lines


def _departement_line(
    place: DepartementFigures, counts: Counter[str], small: int
) -> DepartementLine:
    checks, unclaimed = counts[RIGHTS_CHECKED], counts[RIGHTS_UNCLAIMED]
    return DepartementLine(
        code=place.code or UNKNOWN,
        name=place.name,
        population=place.population,
        checks=shown(checks, small),
        unclaimed=shown(unclaimed, small),
        unclaimed_per_100k=published_rate(place, unclaimed, small),
        share=published_share(counts[RIGHTS_FOUND], checks, small),
        estimate=published_estimate(counts, small),
        rank=_rank(unclaimed, small),
        any_check=bool(checks or unclaimed),
    )


def _merged(counters: Iterable[Counter[str]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for counts in counters:
        total.update(counts)
    return total


def publish(report: Report, small: int) -> RightsSection:
    """The rights checks' figures of a report, each through the suppression rules."""
    figures = report.rights
    checks = figures.totals[RIGHTS_CHECKED]
    known = {d.code for d in report.departements}
    lines = [
        _departement_line(place, figures.departements.get(place.code, Counter()), small)
        for place in report.departements
    ]
    # No département given (""), or one that could not be placed ("99"): one line.
    unknown = _merged(counts for code, counts in figures.departements.items() if code not in known)
    lines.append(_departement_line(DepartementFigures("", _("inconnu"), None), unknown, small))
    return RightsSection(
        checks=shown(checks, small),
        found=shown(figures.totals[RIGHTS_FOUND], small),
        share=published_share(figures.totals[RIGHTS_FOUND], checks, small),
        unclaimed=shown(figures.totals[RIGHTS_UNCLAIMED], small),
        estimate=published_estimate(figures.totals, small),
        benefits=_benefit_lines(report, checks, small),
        departements=lines,
    )


def page_order(lines: Iterable[Any]) -> list[Any]:
    """Lines by published count, highest first (suppressed ones together), then in order."""
    return sorted(lines, key=lambda line: -line.rank)


# -- CSV and JSON -------------------------------------------------------------------------------


def _cell(value: float | int | str | None, digits: int = 1) -> Any:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def export_table(section: RightsSection, table: str) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a CSV table of TABLES, no cell a formula."""
    if table == "rights_benefits":
        header = ["benefit", "label", "unclaimed", "share_of_checks_pct", "estimated_monthly_eur"]
        body = [
            [b.code, b.label, b.unclaimed, _cell(b.share), _cell(b.estimate)]
            for b in section.benefits
        ]
    elif table == "rights_departements":
        header = [
            "departement",
            "name",
            "population",
            "checks",
            "unclaimed",
            "unclaimed_per_100k",
            "share_with_rights_pct",
            "estimated_monthly_eur",
        ]
        body = [
            [
                d.code,
                d.name,
                _cell(d.population),
                d.checks,
                d.unclaimed,
                _cell(d.unclaimed_per_100k, 2),
                _cell(d.share),
                _cell(d.estimate),
            ]
            for d in section.departements
        ]
    else:
        raise KeyError(table)
    return header, [[spreadsheet_safe(cell) for cell in line] for line in body]


def rights_json(section: RightsSection) -> dict[str, Any]:
    """The API's ``rights`` object."""
    return {
        "checks": section.checks,
        "checks_with_rights": section.found,
        "share_with_rights_pct": section.share,
        "unclaimed": section.unclaimed,
        "estimated_monthly_eur": section.estimate,
        "benefits": [
            {
                "code": b.code,
                "label": b.label,
                "unclaimed": b.unclaimed,
                "share_of_checks_pct": b.share,
                "estimated_monthly_eur": b.estimate,
            }
            for b in section.benefits
        ],
        "departements": [
            {
                "code": d.code,
                "name": d.name,
                "population": d.population,
                "checks": d.checks,
                "unclaimed": d.unclaimed,
                "unclaimed_per_100k": d.unclaimed_per_100k,
                "share_with_rights_pct": d.share,
                "estimated_monthly_eur": d.estimate,
            }
            for d in section.departements
        ],
    }
