"""What a statistics request asks for: period, channel, theme and time step, read from its
query parameters (the page, the CSV files and the API share them)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date

from server import taxonomy
from server.errors import DomainError
from server.i18n import _
from server.stats.rollups import CHANNELS

MAX_SPAN_DAYS = 5 * 366
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2100, 12, 31)
STEPS = ("month", "week")


class FilterError(DomainError):
    """A filter the dashboard cannot use (code ``invalid_filters``, field = the parameter)."""


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


def default_filters(today: date) -> Filters:
    """The last twelve calendar months, every channel and theme, by month."""
    return Filters(default_start(today), today)


def _invalid(message: str, parameter: str) -> FilterError:
    return FilterError("invalid_filters", message, parameter)


def _date(query: Mapping[str, str], parameter: str, fallback: date) -> date:
    raw = query.get(parameter)
    if not raw:
        return fallback
    try:
        value = date.fromisoformat(raw.strip()[:10])
    except ValueError:
        raise _invalid(
            _("Date invalide : écrivez-la sous la forme AAAA-MM-JJ, par exemple 2025-01-31."),
            parameter,
        ) from None
    if not MIN_DATE <= value <= MAX_DATE:
        raise _invalid(_("Date hors limites : choisissez une date entre 2000 et 2100."), parameter)
    return value


def _choice(
    query: Mapping[str, str], parameter: str, choices: Collection[str], message: str
) -> str | None:
    value = (query.get(parameter) or "").strip() or None
    if value is not None and value not in choices:
        raise _invalid(message, parameter)
    return value


def parse_filters(query: Mapping[str, str], today: date) -> Filters:
    """Read the filters of a request; FilterError (French message) for anything unusable."""
    start = _date(query, "from", default_start(today))
    end = _date(query, "to", today)
    if end < start:
        raise _invalid(_("La date de fin doit être après la date de début."), "to")
    if (end - start).days + 1 > MAX_SPAN_DAYS:
        raise _invalid(_("Période trop longue : 5 ans au plus."), "from")
    channel = _choice(query, "channel", CHANNELS, _("Canal inconnu."))
    theme = _choice(query, "theme", taxonomy.THEMES, _("Thème inconnu."))
    step = (query.get("step") or "month").strip()
    if step not in STEPS:
        raise _invalid(_("Pas de temps inconnu : month ou week."), "step")
    return Filters(start, end, channel, theme, step)
