"""Reading forms: the body itself (``read_form``), a text field cut to a length, a day, an hour
of the day.

A value that cannot be read is a ``FormError`` (a DomainError): the view shows its form again
with the French message, like any other refusal. A body that cannot be read at all is a
``FormError`` too, rendered by the error middleware as the French 400 page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

from server.errors import DomainError
from server.i18n import N_, _

# Far dates overflow time-zone arithmetic and mean nothing for a permanence or an agenda.
MAX_DAYS_AWAY = 5 * 366
_HOUR = re.compile(r"[0-9]{1,2}:[0-9]{2}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Browsers send our forms in UTF-8 (the pages are), with no charset or this one.
FORM_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
UNREADABLE = N_(
    "Ce formulaire n'a pas pu être lu. Revenez en arrière, rechargez la page et réessayez."
)


class FormError(DomainError):
    """A form field that cannot be read."""


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The submitted form's text fields, or a FormError (400) for a body that cannot be read:
    an unknown or unexpected charset, bytes that are not UTF-8, multipart without a boundary
    or a field without a name, a NUL character. Files and binary parts, which no form of ours
    sends, are left out."""
    charset = request.charset
    if charset is not None and charset.lower() not in FORM_CHARSETS:
        raise FormError("unreadable_form", _(UNREADABLE))
    try:
        posted = await request.post()
    except web.HTTPException:
        raise  # too large (413): aiohttp's own answer
    # What aiohttp raises on a body it cannot parse: LookupError (an unknown charset of a
    # part), UnicodeDecodeError and other ValueErrors (bad bytes, no boundary, a nameless or
    # nested part), RuntimeError (an unknown Content-Encoding of a part), AssertionError
    # (a part without Content-Length read in chunks), HttpProcessingError (part headers).
    except (
        LookupError,
        ValueError,
        RuntimeError,
        AssertionError,
        TypeError,
        HttpProcessingError,
    ):
        raise FormError("unreadable_form", _(UNREADABLE)) from None
    fields = [(name, value) for name, value in posted.items() if isinstance(value, str)]
    # No one types a NUL, and PostgreSQL refuses it in a text (the query would fail: a 500).
    if any("\x00" in name or "\x00" in value for name, value in fields):
        raise FormError("unreadable_form", _(UNREADABLE))
    return MultiDictProxy(MultiDict(fields))


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
