"""How the figures are shown, shared by the page, the CSV files and the API: small counts
suppressed, French numbers, map classes, period labels, the local day."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from server.stats.queries import DepartementFigures
from server.stats.rollups import DURATION_BUCKETS


def shown(count: int, small: int) -> int | str:
    """A count as published: below the small-count threshold, "< N" (0 stays 0)."""
    return f"< {small}" if 0 < count < small else count


def published_rate(dep: DepartementFigures, count: int, small: int) -> float | None:
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


def period_label(start: date, granularity: str) -> str:
    """2025-03 for a month, 2025-W09 for an ISO week."""
    if granularity == "week":
        year, week, _day = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


def local_today(zone_name: str) -> date:
    """Today in the given zone (a validated setting)."""
    return datetime.now(UTC).astimezone(ZoneInfo(zone_name)).date()
