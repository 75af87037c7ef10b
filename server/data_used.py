"""Data used by the beneficiary's device during a session (issue 14: prepaid mobile data).

The beneficiary's page measures the bytes of every peer connection it had (``web/static/js/
usage.js``) and reports its running total over ``/assist`` (``usage``, PROTOCOL.md). The total
is kept on the session row (``data_bytes``) and only ever grows; the volunteer reads it after
the session, with its duration. A technical figure about a session, no personal data: it lives
and dies with the session row (``server/retention.py`` anonymises the row and keeps it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from babel.units import format_unit

from server.i18n import DEFAULT_LOCALE, _
from server.store.models import AssistanceSession

# More than any session could use (a 4 h session at 10 Mbit/s is 18 GB): a report above it is
# refused, and what is stored never passes it.
MAX_DATA_BYTES = 20 * 10**9

_KILO, _MEGA, _GIGA = 10**3, 10**6, 10**9


def record(session: AssistanceSession, sid: str, used: int) -> int | None:
    """Take a report of ``used`` bytes from the socket ``sid``: kept if that socket holds the
    beneficiary's seat of this live session and the figure is larger than the stored one (a
    page can only make it grow). Returns the stored figure, None when the report is not taken."""
    if not session.is_live or session.beneficiary_sid != sid:
        return None
    used = min(used, MAX_DATA_BYTES)
    if session.data_bytes is None or used > session.data_bytes:
        session.data_bytes = used
    return session.data_bytes


def duration(session: AssistanceSession, now: datetime | None = None) -> timedelta | None:
    """How long the session lasted: from its first media (or the beneficiary's arrival) to its
    end (or ``now`` while it runs); None if the beneficiary never came."""
    started = session.first_media_at or session.beneficiary_joined_at
    end = session.ended_at or now
    if started is None or end is None:
        return None
    return max(end - started, timedelta(0))


def format_size(size: int, locale: str = DEFAULT_LOCALE) -> str:
    """Bytes for humans, decimal units as carriers count them: "850 ko", "14 Mo", "1,2 Go"."""
    if size >= _GIGA:
        return format_unit(size / _GIGA, "digital-gigabyte", "short", "#,##0.#", locale=locale)
    if size >= 10 * _MEGA:
        return format_unit(round(size / _MEGA), "digital-megabyte", "short", locale=locale)
    if size >= _MEGA:
        return format_unit(size / _MEGA, "digital-megabyte", "short", "#,##0.#", locale=locale)
    return format_unit(max(1, round(size / _KILO)), "digital-kilobyte", "short", locale=locale)


def format_duration(length: timedelta, locale: str = DEFAULT_LOCALE) -> str:
    """A session's length for humans: "40 s", "21 min", "1 h 20 min"."""
    seconds = int(length.total_seconds())
    if seconds < 60:
        return format_unit(seconds, "duration-second", "short", locale=locale)
    minutes = round(seconds / 60)
    if minutes < 60:
        return format_unit(minutes, "duration-minute", "short", locale=locale)
    hours = format_unit(minutes // 60, "duration-hour", "short", locale=locale)
    if minutes % 60 == 0:
        return hours
    rest = format_unit(minutes % 60, "duration-minute", "short", locale=locale)
    return f"{hours}\N{NO-BREAK SPACE}{rest}"


def describe(session: AssistanceSession, locale: str = DEFAULT_LOCALE) -> str:
    """The sentence the volunteer reads after the session, from the stored figure."""
    if session.data_bytes is None:
        return _("Données utilisées par la personne : non mesurées.")
    size = format_size(session.data_bytes, locale)
    length = duration(session)
    if length is None:
        return _("Données utilisées par la personne : environ %(size)s.") % {"size": size}
    return _("Données utilisées par la personne : environ %(size)s en %(duration)s.") % {
        "size": size,
        "duration": format_duration(length, locale),
    }
