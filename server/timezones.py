"""Times as people read them: the zones a beneficiary can pick (metropolitan France and the
overseas territories), their French names, and days, hours and moments written in French."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime

from server.availability import AvailabilityError, zone
from server.i18n import N_, _, babel_locale
from server.integers import parse_int
from server.settings import DEFAULT_TIMEZONE

# The instants a link or a form may carry (epoch seconds): nothing a permanence offers lies
# outside them, and near year 9999 a conversion to a zone ahead of UTC overflows.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# Zones a beneficiary can pick to read the times in: metropolitan France and the overseas
# territories (IANA names).
ZONES: tuple[tuple[str, str], ...] = (
    ("Europe/Paris", N_("France métropolitaine, heure de Paris")),
    ("America/Guadeloupe", N_("Guadeloupe")),
    ("America/Martinique", N_("Martinique")),
    ("America/Cayenne", N_("Guyane")),
    ("Indian/Reunion", N_("La Réunion")),
    ("Indian/Mayotte", N_("Mayotte")),
    ("America/Miquelon", N_("Saint-Pierre-et-Miquelon")),
    ("America/St_Barthelemy", N_("Saint-Barthélemy")),
    ("America/Marigot", N_("Saint-Martin")),
    ("Pacific/Noumea", N_("Nouvelle-Calédonie")),
    ("Pacific/Tahiti", N_("Polynésie française, Tahiti")),
    ("Pacific/Marquesas", N_("Polynésie française, Marquises")),
    ("Pacific/Gambier", N_("Polynésie française, Gambier")),
    ("Pacific/Wallis", N_("Wallis-et-Futuna")),
)
ZONE_NAMES = frozenset(name for name, _label in ZONES)


def zone_label(name: str) -> str:
    """The French name of a zone of ZONES (the IANA name for any other)."""
    return next((_(label) for zone_name, label in ZONES if zone_name == name), name)


def day_label(day: date) -> str:
    """A local day in French, capitalised for a heading: "Mardi 2 mars 2027"."""
    text = format_date(day, "EEEE d MMMM y", locale=babel_locale())
    return text[:1].upper() + text[1:]


def hour_label(moment: datetime, tz: ZoneInfo) -> str:
    """An instant as local hours and minutes, e.g. "14:30"."""
    return format_datetime(moment, "HH:mm", tzinfo=tz, locale=babel_locale())


def parse_timestamp(value: object) -> datetime | None:
    """Epoch seconds (ASCII digits) as an aware UTC instant from EARLIEST to LATEST, else None."""
    seconds = parse_int(value, int(EARLIEST.timestamp()), int(LATEST.timestamp()))
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def safe_zone(name: str | None, default: str) -> str:
    """`name` if it is one of the offered zones, else `default` (the site's TIMEZONE)."""
    return name if name in ZONE_NAMES else default


@dataclass(frozen=True)
class When:
    """A moment as people read it: "mardi 2 mars 2027", "14:00", in a named zone."""

    day: str
    time: str
    zone: str

    @classmethod
    def of(cls, moment: datetime, zone_name: str) -> When:
        """Format an aware datetime in this zone, in French."""
        try:
            tz: ZoneInfo = zone(zone_name)
        except AvailabilityError:  # a stored zone this system no longer knows
            tz, zone_name = ZoneInfo(DEFAULT_TIMEZONE), DEFAULT_TIMEZONE
        return cls(
            day=format_datetime(moment, "EEEE d MMMM y", tzinfo=tz, locale=babel_locale()),
            time=format_datetime(moment, "HH:mm", tzinfo=tz, locale=babel_locale()),
            zone=zone_label(zone_name),
        )
