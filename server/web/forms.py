"""Reading the staff forms: a text field cut to a length, a day, an hour of the day.

A value that cannot be read is a ``FormError`` (a DomainError): the view shows its form again
with the French message, like any other refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, time
from typing import Any

from server.errors import DomainError
from server.i18n import _

# Far dates overflow time-zone arithmetic and mean nothing for a permanence or an agenda.
MAX_DAYS_AWAY = 5 * 366
_HOUR = re.compile(r"\d{1,2}:\d{2}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class FormError(DomainError):
    """A form field that cannot be read."""


def form_text(values: Mapping[str, Any], name: str, limit: int = 300) -> str:
    """A form or query value as text, cut to `limit` characters."""
    return str(values.get(name, ""))[:limit]


def parse_day(raw: str | None) -> date | None:
    """A YYYY-MM-DD form value, None when empty, FormError when malformed."""
    value = (raw or "").strip()
    if not value:
        return None
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError:
        raise FormError(
            "invalid_day", _("Date invalide : choisissez-la dans le calendrier.")
        ) from None
    if abs((day - date.today()).days) > MAX_DAYS_AWAY:
        raise FormError("day_too_far", _("Choisissez une date dans les cinq ans qui viennent."))
    return day


def parse_hour(raw: str | None) -> time:
    """An HH:MM form value, or FormError."""
    value = (raw or "").strip()
    try:
        if not _HOUR.fullmatch(value):
            raise ValueError(value)
        return time.fromisoformat(value.zfill(5))
    except ValueError:
        raise FormError("invalid_hour", _("Heure invalide : écrivez-la comme 14:00.")) from None
