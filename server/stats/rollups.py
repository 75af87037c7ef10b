"""Daily and monthly rollups of the statistics events, kept up to date at every flush.

Rollup design (table ``stat_rollups``, model ``StatRollup``)
-------------------------------------------------------------
Every dashboard query groups by *time + one dimension*, filtered by period, channel and theme.
So each event adds 1 to a few small counters, one per (dimension, value), rather than to one
row keyed by every dimension at once (that key is nearly unique per helped session: the table
would be as big as the events). The key is::

    (association_id, dim, channel, theme, day, kind, value) -> count, duration_sum

- ``day``: the local date in the deployment's time zone (``settings.timezone``).
- ``dim``/``value``: ``all``/"" (every event), ``dep``/département code ("" when no postal code
  was given, "99" when it could not be placed) for the kinds the map counts (``DEP_KINDS``), the
  vault's kinds (``VAULT_KINDS``: their own section of the page) and the rights checks' kinds
  (``RIGHTS_KINDS`` and the band kinds; ``is_placed`` says which), ``benefit``/benefit code on
  the unclaimed rights and their band kinds, ``lang``/language code (server/i18n.py; an event
  without one, recorded before languages existed, counts as French) on demand and unmet demand
  (``LANGUAGE_KINDS``), and ``lang_want``/language code on the same kinds for the people who
  asked for a volunteer speaking their language (``language_wanted``), and, on sheets only,
  ``outcome``, ``autonomy``, ``org`` (one row per organisation), ``vol`` (volunteer id) and
  ``dur`` (duration bucket). No key exists that no query reads.
- ``channel`` and ``theme`` are written twice: the event's own value ("" for none) and ``'*'``
  ("all"). An unfiltered query reads only the ``'*'`` rows, a filtered one only its value: no
  double counting, and the rows read stay few (about kinds × départements per day).
- Themes are multi-valued on sheets: the event gets one row per distinct theme (its ``theme``
  plus its ``themes``) besides the ``'*'`` row, so "by theme" counts a sheet under each of its
  themes (their sum can exceed the total) and a theme filter counts it once.
- ``kind`` is the event kind, plus at most one derived kind (``derived_kind``): ``unmet`` for
  unmet demand (people who left the queue (left/lost/gone), call-backs expired or closed on a
  wrong number, booking searches that found no slot); ``rights_found`` for a rights check that
  found at least one benefit probably due and not received (its ``reason`` is ``found``);
  ``rights_band:<band>`` for an unclaimed benefit whose estimated monthly amount falls in that
  band (its ``reason``), so that an estimated total can be summed by département and by benefit
  without any amount in the events. ``channel`` is normalised to
  link/appointment/drop_in/callback.
- A rights event's ``theme`` is its benefit's code: it is counted under the ``benefit``
  dimension, not as a theme (the dashboard's theme filter is about sessions), so its rows have
  no theme but ``'*'`` and "".

Monthly tier (table ``stat_rollups_monthly``): the same keys with ``day`` = the first local
day of the month, kept in the same transaction. A period reads its whole months there and
only its edge days (before the first and after the last whole month) in the daily table, one
UNION ALL branch per range so that each stays a primary-key seek (``queries.py``); weekly
volumes read days.

Maintenance: the application's sessionmakers (``server/db.py``) run ``maintain_rollups``
after every flush: the StatEvents inserted (or changed, or deleted through the ORM) by a flush are
turned into counter deltas and applied to both tiers with ``INSERT … ON CONFLICT DO UPDATE
SET count = count + excluded.count`` in the same transaction, keys sorted so that concurrent
writers lock rows in the same order. A flush hook rather than code in ``record()``: some
callers set the event's association or channel after ``record()`` returns. Rows written by
Core bulk inserts are not seen: call ``rebuild_rollups`` (``rebuild.py``) afterwards (the demo
generator does); it derives the same keys in SQL (see its docstring), and tests check that
both paths agree.

The rest of the package reads these tables: ``filters.py`` (what a request asks for),
``queries.py`` (the report), ``display.py`` (how a figure is shown) and ``export.py`` (CSV
tables and the API's JSON).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.i18n import FRENCH, N_
from server.stats.events import EventKind
from server.store.models import StatEvent, StatRollup, StatRollupMonthly

ALL = "*"
NONE = ""
UNMET = "unmet"

CHANNELS: dict[str, str] = {
    "link": N_("Lien"),
    "appointment": N_("Rendez-vous"),
    "drop_in": N_("Sans rendez-vous"),
    "callback": N_("Rappel"),
}
DURATION_BUCKETS: dict[str, str] = {
    "0-5": N_("moins de 5 min"),
    "5-15": N_("5 à 15 min"),
    "15-30": N_("15 à 30 min"),
    "30-60": N_("30 min à 1 h"),
    "60+": N_("plus d'1 h"),
}
BUCKET_LIMITS = ((300, "0-5"), (900, "5-15"), (1800, "15-30"), (3600, "30-60"))
LONGEST_BUCKET = "60+"
UNMET_QUEUE_REASONS = frozenset({"left", "lost", "gone"})
UNMET_CALLBACK_REASONS = frozenset({"wrong_number"})
UNMET_KINDS = frozenset({EventKind.CALLBACK_EXPIRED, EventKind.NO_SLOT_FOUND})  # always unmet

# The dashboard channel of the booking, queue and call-back steps, whatever their own channel.
KIND_CHANNELS: tuple[tuple[str, frozenset[EventKind]], ...] = (
    (
        "appointment",
        frozenset(
            {
                EventKind.APPOINTMENT_BOOKED,
                EventKind.APPOINTMENT_CANCELLED,
                EventKind.APPOINTMENT_RESCHEDULED,
                EventKind.NO_SLOT_FOUND,
                EventKind.WAITLIST_JOINED,
                EventKind.NO_SHOW,
            }
        ),
    ),
    ("drop_in", frozenset(k for k in EventKind if k.value.startswith("queue_"))),
    ("callback", frozenset(k for k in EventKind if k.value.startswith("callback_"))),
)
SESSIONS = EventKind.SHEET_FILED.value  # a helped session is counted by its handoff sheet
DEMAND_KINDS = (
    EventKind.APPOINTMENT_BOOKED.value,
    EventKind.QUEUE_JOINED.value,
    EventKind.CALLBACK_REQUESTED.value,
)
DEP_KINDS = (SESSIONS, UNMET, *DEMAND_KINDS)  # the kinds the map counts by département
# The vault's steps (coffre-fort), counted by month and by département in their own section;
# ``vault_document_added`` carries the document's category as its theme.
VAULT_KINDS = (
    EventKind.VAULT_CREATED.value,
    EventKind.VAULT_DOCUMENT_ADDED.value,
    EventKind.VAULT_DOCUMENT_SHOWN.value,
    EventKind.VAULT_DELETED.value,
)
# Rights checks (server/rights/tally.py): one ``rights_checked`` per check (``reason``
# CHECK_FOUND when it found a benefit probably due and not received, else CHECK_NONE), one
# ``rights_unclaimed`` per such benefit (``theme`` its code, ``reason`` its amount band).
RIGHTS_CHECKED = EventKind.RIGHTS_CHECKED.value
RIGHTS_UNCLAIMED = EventKind.RIGHTS_UNCLAIMED.value
RIGHTS_FOUND = "rights_found"  # derived: a check that found at least one unclaimed benefit
RIGHTS_BAND = "rights_band:"  # derived, + the band code: an unclaimed benefit in that band
RIGHTS_PREFIX = "rights_"  # every rights kind, derived or not, starts with it
CHECK_FOUND = "found"
CHECK_NONE = "none"
RIGHTS_KINDS = (RIGHTS_CHECKED, RIGHTS_FOUND, RIGHTS_UNCLAIMED)
RIGHTS_EVENT_KINDS = (RIGHTS_CHECKED, RIGHTS_UNCLAIMED)  # the recorded ones (theme = benefit)
PLACED_KINDS = (*DEP_KINDS, *VAULT_KINDS, *RIGHTS_KINDS)  # kinds with a row per département
# Demand and unmet demand by language: the kinds with ``lang`` rows (and ``lang_want`` rows for
# the people who asked for a volunteer speaking their language).
LANGUAGE_KINDS = (*DEMAND_KINDS, UNMET)
LANGUAGE_DIM = "lang"
LANGUAGE_WANTED_DIM = "lang_want"
LANGUAGE_DIMS = (LANGUAGE_DIM, LANGUAGE_WANTED_DIM)
UNSPECIFIED_LANGUAGE = FRENCH.code  # events recorded before languages existed
ROLLUPS: Table = StatRollup.__table__  # type: ignore[assignment]
MONTHLY: Table = StatRollupMonthly.__table__  # type: ignore[assignment]
KEY_COLUMNS = ("association_id", "dim", "channel", "theme", "day", "kind", "value")

Key = tuple[Any, ...]  # the values of KEY_COLUMNS
Totals = dict[Key, list[int]]  # key -> [count, duration_sum]


# -- Keys ---------------------------------------------------------------------------------------


def channel_of(kind: str, channel: str | None) -> str:
    """The dashboard channel of an event: booking, queue and call-back steps by their kind."""
    for dashboard_channel, kinds in KIND_CHANNELS:
        if kind in kinds:
            return dashboard_channel
    return (channel or NONE)[:20]


def is_unmet(kind: str, reason: str | None) -> bool:
    """Demand that found no help: left the queue, call-back lost, no slot found."""
    if kind == EventKind.QUEUE_LEFT:
        return reason in UNMET_QUEUE_REASONS
    if kind == EventKind.CALLBACK_RESOLVED:
        return reason in UNMET_CALLBACK_REASONS
    return kind in UNMET_KINDS


def derived_kind(kind: str, reason: str | None) -> str | None:
    """The rollups' derived kind of an event (``unmet``, ``rights_found``, a band kind), if any."""
    if is_unmet(kind, reason):
        return UNMET
    if kind == RIGHTS_CHECKED and reason == CHECK_FOUND:
        return RIGHTS_FOUND
    if kind == RIGHTS_UNCLAIMED and reason:
        return (RIGHTS_BAND + reason)[:40]
    return None


def is_placed(kind: str) -> bool:
    """True for the kinds counted by département (a row per département code)."""
    return kind in PLACED_KINDS or kind.startswith(RIGHTS_BAND)


def language_of(code: str | None) -> str:
    """The language an event counts under: its code, French when it has none."""
    return (code or UNSPECIFIED_LANGUAGE)[:40]


def duration_bucket(seconds: int | None) -> str | None:
    """The duration class of a session (None without a duration)."""
    if seconds is None:
        return None
    for limit, code in BUCKET_LIMITS:
        if seconds < limit:
            return code
    return LONGEST_BUCKET


_FACT_COLUMNS = (  # the StatEvent columns the rollup keys depend on
    "occurred_at",
    "association_id",
    "kind",
    "channel",
    "theme",
    "themes",
    "organisations",
    "departement",
    "outcome",
    "autonomy",
    "reason",
    "volunteer_id",
    "duration_seconds",
    "language",
    "language_wanted",
)


def _strings(values: object) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        return ()
    return tuple(v for v in values if isinstance(v, str) and v)


def _keys(event: Mapping[str, Any], zone: ZoneInfo) -> Iterator[Key]:
    """The rollup keys one event (its ``_FACT_COLUMNS``) adds to. Only the keys some query
    reads: sheet facets on sheets, départements on the kinds the map and ranking count,
    languages on demand and unmet demand."""
    occurred: datetime = event["occurred_at"]
    day = occurred.astimezone(zone).date()
    kind: str = event["kind"]
    benefit = None
    if kind in RIGHTS_EVENT_KINDS:  # the theme of a rights event is its benefit, not a theme
        named: tuple[Any, ...] = ()
        if kind == RIGHTS_UNCLAIMED:
            benefit = (event["theme"] or NONE)[:40]
    else:
        named = (event["theme"], *_strings(event["themes"]))
    themes = list(dict.fromkeys(t[:30] for t in named if t)) or [NONE]
    kinds = [kind[:40]]
    derived = derived_kind(kind, event["reason"])
    if derived is not None:
        kinds.append(derived)
    channel = channel_of(kind, event["channel"])
    association = event["association_id"] or 0
    for counted in kinds:
        dims: list[tuple[str, str]] = [("all", NONE)]
        if is_placed(counted):
            dims.append(("dep", event["departement"] or NONE))
        if benefit is not None:
            dims.append(("benefit", benefit))
        if counted in LANGUAGE_KINDS:
            language = language_of(event["language"])
            dims.append((LANGUAGE_DIM, language))
            if event["language_wanted"]:
                dims.append((LANGUAGE_WANTED_DIM, language))
        if counted == SESSIONS:
            if event["outcome"]:
                dims.append(("outcome", event["outcome"][:40]))
            if event["autonomy"]:
                dims.append(("autonomy", event["autonomy"][:40]))
            organisations = dict.fromkeys(o[:40] for o in _strings(event["organisations"]))
            dims.extend(("org", org) for org in organisations)
            if event["volunteer_id"] is not None:
                dims.append(("vol", str(event["volunteer_id"])))
            bucket = duration_bucket(event["duration_seconds"])
            if bucket is not None:
                dims.append(("dur", bucket))
        for ch in (channel, ALL):
            for th in (*themes, ALL):
                for dim, value in dims:
                    yield (association, dim, ch, th, day, counted, value)


def _accumulate(totals: Totals, key: Key, count: int, duration: int) -> None:
    cell = totals.get(key)
    if cell is None:
        totals[key] = [count, duration]
    else:
        cell[0] += count
        cell[1] += duration


def _add(totals: Totals, values: Mapping[str, Any], zone: ZoneInfo, sign: int) -> None:
    """Count one event (its column values) in (sign 1) or out of (sign -1) the totals."""
    duration = sign * (values["duration_seconds"] or 0)
    for key in _keys(values, zone):
        _accumulate(totals, key, sign, duration)


def _values(event: StatEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _FACT_COLUMNS}


@functools.cache
def _upsert(dialect: str, table: Table) -> Any:
    """One ``INSERT … ON CONFLICT DO UPDATE`` statement per dialect and table, built once and
    executed with a list of rows (executemany): SQLAlchemy compiles it once, where a multi-row
    ``VALUES`` was a new statement to build and compile for every number of rows (about 1.5 ms
    of a one-event transaction's 4.3 ms on SQLite, BENCHMARKS.md)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={
            "count": table.c.count + statement.excluded.count,
            "duration_sum": table.c.duration_sum + statement.excluded.duration_sum,
        },
    )


def _rows(totals: Totals) -> list[dict[str, Any]]:
    return [
        {**dict(zip(KEY_COLUMNS, key, strict=True)), "count": count, "duration_sum": duration}
        for key, (count, duration) in sorted(totals.items(), key=lambda kv: _sort_key(kv[0]))
    ]


def _sort_key(key: Key) -> tuple[Any, ...]:
    return tuple(str(part) for part in key)


# -- Upkeep at flush ----------------------------------------------------------------------------


def maintain_rollups(zone: ZoneInfo) -> Callable[[Session], None]:
    """The after-flush hook of the application's sessions (``server/db.py``): rollup days are
    counted in ``zone``, the deployment's time zone."""

    def hook(session: Session) -> None:
        apply_flush(session, zone)

    return hook


def apply_flush(session: Session, zone: ZoneInfo) -> None:
    """Add the StatEvents this flush wrote to the rollups, in the flush's transaction."""
    totals: Totals = {}
    for obj in session.new:
        if isinstance(obj, StatEvent):
            _add(totals, _values(obj), zone, 1)
    for obj in session.dirty:
        if isinstance(obj, StatEvent) and session.is_modified(obj):
            state = inspect(obj)
            now = _values(obj)
            before = dict(now)
            for name in _FACT_COLUMNS:
                history = state.attrs[name].history
                if history.deleted:
                    before[name] = history.deleted[0]
            if before != now:
                _add(totals, before, zone, -1)
                _add(totals, now, zone, 1)
    for obj in session.deleted:
        if isinstance(obj, StatEvent):
            _add(totals, _values(obj), zone, -1)
    totals = {key: cell for key, cell in totals.items() if cell != [0, 0]}
    if not totals:
        return
    months: Totals = {}
    for key, (count, duration) in totals.items():
        _accumulate(months, (*key[:4], key[4].replace(day=1), *key[5:]), count, duration)
    connection = session.connection()
    for table, changes in ((ROLLUPS, totals), (MONTHLY, months)):
        connection.execute(_upsert(connection.dialect.name, table), _rows(changes))
