"""Every /api/v1 request body, query, path and response body, as pydantic models.

Each constraint is written here once: pydantic enforces it on input and the OpenAPI document
states it (``server/web/api/openapi.py`` generates the document from these models). What JSON
Schema cannot say — a start in the future, a number that exists in a numbering plan, a window
counted from today — is said in the field's description and refused by the server with its own
code; ``STATED_IN_WORDS`` lists those codes, so that a test can tell such a refusal of
schema-valid data from a contradiction between the schema and the server.

Input models name, for each field, the error code and French message of a refusal
(``input_errors``): a partner's developer reads the code, the person at the desk the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from server import i18n, taxonomy, text
from server.contact import DESCRIPTION_MAX, FIRST_NAME_MAX, LANGUAGE_MAX
from server.i18n import _
from server.stats.filters import MAX_DATE, MIN_DATE
from server.stats.rollups import CHANNELS
from server.store.models import AppointmentStatus, VisitKind

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_DAYS = 31
MAX_START_DAYS = 366  # slots are never offered further ahead than a year
UUID_PATTERN = "[0-9a-f-]{36}"  # also the route pattern of booking ids
PHONE_MAX = 30
EMAIL_MAX = 254
ZONES = tuple(sorted(available_timezones()))
_ZONE_SET = frozenset(ZONES)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# An input model's field → (pydantic error type → code, French message).
ErrorText = Callable[[str], tuple[str, str]]


def _always(code: str, message: Callable[[], str]) -> ErrorText:
    return lambda _type: (code, message())


# -- Shared types -------------------------------------------------------------------------------


def _integral(value: object) -> object:
    # JSON Schema's integers include 7.0; pydantic's strict mode would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Id = TypeAliasType(
    "Id",
    Annotated[
        int,
        Field(ge=1, le=MAX_ID, description="A database id (32-bit, positive)"),
        BeforeValidator(_integral),
    ],
)
BookingId = TypeAliasType(
    "BookingId",
    Annotated[str, Field(pattern=f"^{UUID_PATTERN}$", description="A booking's id (a UUID)")],
)
Timestamp = TypeAliasType(
    "Timestamp",
    Annotated[
        AwareDatetime,
        PlainSerializer(datetime.isoformat, return_type=str),
        WithJsonSchema(
            {
                "type": "string",
                "format": "date-time",
                "description": "An instant in ISO 8601 with its UTC offset",
            }
        ),
    ],
)


def _iso_date(value: object) -> date:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise PydanticCustomError("date_format", "a date in the form YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("date_format", "a date in the form YYYY-MM-DD") from None


IsoDate = TypeAliasType(
    "IsoDate",
    Annotated[
        date,
        PlainValidator(_iso_date),
        PlainSerializer(date.isoformat, return_type=str),
        WithJsonSchema({"type": "string", "format": "date", "examples": ["2025-03-31"]}),
    ],
)


def _stats_date(value: object) -> date:
    day = _iso_date(value)
    if not MIN_DATE <= day <= MAX_DATE:
        raise PydanticCustomError("date_range", "a date from 2000 to 2100")
    return day


StatsDate = TypeAliasType(
    "StatsDate",
    Annotated[
        date,
        PlainValidator(_stats_date),
        WithJsonSchema(
            {
                "type": "string",
                "format": "date",
                "pattern": "^(?:20[0-9]{2}|2100)-",
                "description": "A local date from 2000-01-01 to 2100-12-31",
            }
        ),
    ],
)


def _zone_name(value: object) -> str:
    if not isinstance(value, str) or (value and value not in _ZONE_SET):
        raise PydanticCustomError("time_zone", "an IANA time zone name")
    return value


TimeZoneName = TypeAliasType(
    "TimeZoneName",
    Annotated[
        str,
        PlainValidator(_zone_name),
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["", *ZONES],
                "description": "An IANA time zone name (the server's zone list); empty: the "
                "association's zone",
                "examples": ["Europe/Paris", "Indian/Reunion"],
            }
        ),
    ],
)


def _one_of(values: Mapping[str, object], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or (value and value not in values):
            raise PydanticCustomError("enum", "one of the listed {what}", {"what": what})
        return value

    return check


Channel = TypeAliasType(
    "Channel",
    Annotated[
        str,
        PlainValidator(_one_of(CHANNELS, "channels")),
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["", *CHANNELS],
                "description": "How people reached a volunteer; empty: every channel",
            }
        ),
    ],
)
LanguageCode = TypeAliasType(
    "LanguageCode",
    Annotated[
        str,
        PlainValidator(_one_of(dict.fromkeys(i18n.CODES), "languages")),
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["", *i18n.CODES],
                "description": "A language of the beneficiary's side (BCP 47 code); empty: French",
            }
        ),
    ],
)
Theme = TypeAliasType(
    "Theme",
    Annotated[
        str,
        PlainValidator(_one_of(taxonomy.THEMES, "themes")),
        WithJsonSchema(
            {
                "type": "string",
                "enum": ["", *taxonomy.THEMES],
                "description": "A theme of the handoff sheets; empty: every theme",
            }
        ),
    ],
)
Count = TypeAliasType(
    "Count",
    Annotated[
        int | Annotated[str, Field(pattern="^< [0-9]+$")],
        Field(
            description='A count; below small_count it reads "< N" (never re-identifying)',
        ),
    ],
)
Rate = Annotated[
    float | None,
    Field(
        description="Per 100,000 inhabitants; null when the count is suppressed or the "
        "population unknown (Mayotte)"
    ),
]


# -- Inputs ---------------------------------------------------------------------------------------


class NoInput(BaseModel):
    """An operation that takes no parameter."""

    input_errors: ClassVar[dict[str, ErrorText]] = {}


class SlotQuery(BaseModel):
    """GET /api/v1/slots: which motif, which kind of visit, which days."""

    model_config = ConfigDict(populate_by_name=True)

    motif_id: Id = Field(description="An active motif of your association (see listMotifs)")
    kind: VisitKind | Literal[""] = Field(
        VisitKind.FIRST, description="First visit (longer) or follow-up; empty: first"
    )
    from_: IsoDate | Literal[""] = Field(
        "",
        alias="from",
        description="First local day, from yesterday to 366 days after today in `tz` "
        "(else 400 invalid_range); empty: today",
    )
    days: int = Field(7, ge=1, le=MAX_DAYS, description="How many local days")
    tz: TimeZoneName = Field("", description="The zone the days are counted in")

    input_errors: ClassVar[dict[str, ErrorText]] = {
        "motif_id": _always("invalid_motif", lambda: _("Motif inconnu.")),
        "kind": _always(
            "invalid_kind", lambda: _("Le type de visite doit être first ou follow_up.")
        ),
        "from": _always(
            "invalid_range", lambda: _("Période invalide (from=AAAA-MM-JJ, days=1 à 31).")
        ),
        "days": _always(
            "invalid_range", lambda: _("Période invalide (from=AAAA-MM-JJ, days=1 à 31).")
        ),
        "tz": _always("invalid_timezone", lambda: _("Fuseau horaire inconnu.")),
    }


class BookingPath(BaseModel):
    """DELETE /api/v1/bookings/{booking_id}."""

    booking_id: BookingId = Field(description="The id createBooking answered")

    input_errors: ClassVar[dict[str, ErrorText]] = {}  # the route pattern already refused


class Needs(BaseModel):
    """What helps the beneficiary during the visit."""

    interpreter_language: (
        Annotated[str, Field(max_length=LANGUAGE_MAX, pattern=text.LINE_PATTERN)] | None
    ) = Field(None, description="The language an interpreter should speak, if one is needed")
    hearing: bool = Field(False, description="Hearing support (written chat, captions)")
    first_time_computer: bool = Field(False, description="First time on a computer")


def _first_name_error(error_type: str) -> tuple[str, str]:
    return (
        "invalid_first_name",
        _("Écrivez votre prénom en lettres (%(n)d caractères au plus).") % {"n": FIRST_NAME_MAX},
    )


def _description_error(error_type: str) -> tuple[str, str]:
    if error_type == "string_too_long":
        return (
            "description_too_long",
            _("Votre message est trop long (%(n)d caractères au plus).") % {"n": DESCRIPTION_MAX},
        )
    return "invalid_description", _("Votre message contient des caractères non autorisés.")


def _blank_email(value: str) -> str:
    # An empty string means "no e-mail"; spaces alone are neither an address nor "none".
    if value and not value.strip():
        raise PydanticCustomError("email", "an e-mail address")
    return value


class BookingRequest(BaseModel):
    """POST /api/v1/bookings: the slot, and how to reach the beneficiary."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "A phone number or an e-mail address is required (both are "
            "welcome): the beneficiary gets the confirmation and the reminder there.",
            "anyOf": [
                {
                    "required": ["phone"],
                    "properties": {"phone": {"type": "string", "pattern": "[0-9]"}},
                },
                {
                    "required": ["email"],
                    "properties": {"email": {"type": "string", "minLength": 1}},
                },
            ],
        }
    )

    motif_id: Id = Field(description="An active motif of your association (see listMotifs)")
    kind: VisitKind | Literal[""] | None = Field(
        VisitKind.FIRST, description="First visit (longer) or follow-up; empty or null: first"
    )
    starts_at: AwareDatetime = Field(
        description="The start of a free slot (see listSlots), with its UTC offset. It must be "
        "in the future, at least the booking notice from now (400 past, too_soon) and within "
        "the booking horizon (400 too_far) and be the start of a slot someone offers (400 "
        "outside_availability); a slot just taken is a 409 slot_taken.",
        examples=["2030-01-07T09:00:00+01:00"],
    )
    first_name: str = Field(
        min_length=1,
        max_length=FIRST_NAME_MAX,
        pattern=r"^[ '’.\p{L}-]*\p{L}[ '’.\p{L}-]*$",
        description="The beneficiary's first name: letters, spaces, apostrophes, dots and "
        "dashes (it is repeated in the messages we send)",
        examples=["Josette"],
    )
    phone: Annotated[str, Field(max_length=PHONE_MAX, pattern="^[0-9 .()/+\u00a0\u202f-]*$")] | (
        None
    ) = Field(
        None,
        description="A number of metropolitan France or of an overseas département or "
        "collectivité (the server's PHONE_REGIONS, else 400 phone_outside_france) that exists in "
        "its numbering plan (else 400 invalid_phone); without an e-mail it must be a mobile, "
        "landlines take no SMS (else 400 no_reachable_contact). Empty: no phone. At most "
        "SMS_PER_RECIPIENT_PER_DAY SMS go to one number a day; past it, e-mail only.",
        examples=["06 12 34 56 78", "+262 692 12 34 56"],
    )
    email: (
        Annotated[
            str,
            Field(max_length=EMAIL_MAX),
            AfterValidator(_blank_email),
            WithJsonSchema(
                {
                    "anyOf": [
                        {"type": "string", "format": "email", "maxLength": EMAIL_MAX},
                        {"const": ""},
                    ]
                }
            ),
        ]
        | None
    ) = Field(
        None,
        description="A plain address (dot-atom local part, a domain of letters, digits and "
        "dashes with a top-level domain of 2 characters or more), else 400 invalid_email. "
        "Empty: no e-mail.",
        examples=["josette@exemple.fr"],
    )
    postal_code: Annotated[str, Field(pattern="^(?:[0-9]{5})?$")] | None = Field(
        None,
        description="Where the beneficiary lives (statistics by département only); empty: unknown",
        examples=["75011"],
    )
    description: (
        Annotated[str, Field(max_length=DESCRIPTION_MAX, pattern=text.LINES_PATTERN)] | None
    ) = Field(None, description="What the beneficiary needs help with, for the volunteer")
    timezone: TimeZoneName | None = Field(
        None, description="The beneficiary's zone: times in the messages, and the phone's region"
    )
    needs: Needs | None = None
    language: LanguageCode | None = Field(
        None,
        description="The language the beneficiary reads: the confirmation and the reminders "
        "are written in it. Empty or null: French.",
        examples=["ar"],
    )
    language_wanted: bool = Field(
        False,
        description="The beneficiary asks for a volunteer who speaks `language`: the "
        "appointment goes to one of them when one is free at `starts_at`, else to anyone free "
        "then. Ignored for French.",
    )

    input_errors: ClassVar[dict[str, ErrorText]] = {
        "motif_id": _always("invalid_motif", lambda: _("Motif inconnu.")),
        "kind": _always(
            "invalid_kind", lambda: _("Le type de visite doit être first ou follow_up.")
        ),
        "starts_at": _always(
            "invalid_starts_at", lambda: _("starts_at doit être une date ISO 8601 avec fuseau.")
        ),
        "first_name": _first_name_error,
        "phone": _always(
            "invalid_phone",
            lambda: _("Ce numéro de téléphone n'est pas valide. Exemple : 06 12 34 56 78."),
        ),
        "email": _always(
            "invalid_email",
            lambda: _("Cette adresse e-mail n'est pas valide. Exemple : prenom@exemple.fr."),
        ),
        "postal_code": _always(
            "invalid_postal_code", lambda: _("Le code postal a 5 chiffres, par exemple 75011.")
        ),
        "description": _description_error,
        "timezone": _always("invalid_timezone", lambda: _("Fuseau horaire inconnu.")),
        "needs": _always("invalid_needs", lambda: _("Réponse invalide.")),
        "language": _always("invalid_language", lambda: _("Langue inconnue.")),
        "language_wanted": _always("invalid_language_wanted", lambda: _("Réponse invalide.")),
        "": _always(
            "missing_contact",
            lambda: _(
                "Donnez un numéro de téléphone ou une adresse e-mail pour recevoir le rappel."
            ),
        ),
    }
    # A refusal of the whole body (the anyOf above) is about this field on the form.
    body_field: ClassVar[str] = "phone"

    @model_validator(mode="after")
    def _phone_or_email(self) -> BookingRequest:
        if not (self.phone or "").strip() and not (self.email or "").strip():
            raise PydanticCustomError("missing_contact", "a phone number or an e-mail address")
        return self


class StatisticsQuery(BaseModel):
    """GET /api/v1/stats: the same filters as the /stats page."""

    model_config = ConfigDict(populate_by_name=True)

    from_: StatsDate | Literal[""] = Field(
        "",
        alias="from",
        description="First local day; empty: the first day of the month 11 months ago",
    )
    to: StatsDate | Literal[""] = Field(
        "",
        description="Last local day, on or after `from`, at most 5 years after it (else 400 "
        "invalid_filters); empty: today",
    )
    channel: Channel = ""
    theme: Theme = ""
    step: Literal["", "month", "week"] = Field("", description="Time step; empty: month")

    input_errors: ClassVar[dict[str, ErrorText]] = {
        "from": lambda error_type: ("invalid_filters", _date_filter_message(error_type)),
        "to": lambda error_type: ("invalid_filters", _date_filter_message(error_type)),
        "channel": _always("invalid_filters", lambda: _("Canal inconnu.")),
        "theme": _always("invalid_filters", lambda: _("Thème inconnu.")),
        "step": _always("invalid_filters", lambda: _("Pas de temps inconnu : month ou week.")),
    }


def _date_filter_message(error_type: str) -> str:
    if error_type == "date_range":
        return _("Date hors limites : choisissez une date entre 2000 et 2100.")
    return _("Date invalide : écrivez-la sous la forme AAAA-MM-JJ, par exemple 2025-01-31.")


# Refusals (400) of schema-valid input, as (code, field): each is a rule the schema states in
# words only, in the description of that field.
STATED_IN_WORDS: frozenset[tuple[str, str | None]] = frozenset(
    {
        ("invalid_range", "from"),  # slots: `from` within yesterday … today + 366 days
        ("past", "starts_at"),  # bookings: starts_at in the future…
        ("too_soon", "starts_at"),  # …at least the booking notice from now…
        ("too_far", "starts_at"),  # …and within the booking horizon…
        ("outside_availability", "starts_at"),  # …and the start of an offered slot
        ("invalid_phone", "phone"),  # a number that exists in its numbering plan
        ("no_reachable_contact", "phone"),  # a landline without an e-mail
        ("invalid_filters", "to"),  # statistics: `to` on or after `from`…
        ("invalid_filters", "from"),  # …and at most 5 years after it
    }
)


# -- Outputs --------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Why a request was refused."""

    code: str = Field(description="A stable English code, for programs", examples=["slot_taken"])
    message: str = Field(description="A French message, for the people using your software")
    field: str | None = Field(None, description="The input field it is about, if one")
    errors: dict[str, str] | None = Field(
        None, description="Field → French message, when several fields are wrong"
    )


class Error(BaseModel):
    """Every refusal: ``{"error": {"code", "message", "field"?, "errors"?}}``."""

    error: ErrorBody


class Motif(BaseModel):
    """Why people book, with the visit lengths."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    first_visit_minutes: int
    follow_up_minutes: int


class MotifList(BaseModel):
    """The association's active motifs."""

    motifs: list[Motif]


class Slot(BaseModel):
    """A start that `capacity` volunteers are free for."""

    model_config = ConfigDict(from_attributes=True)

    starts_at: Timestamp
    ends_at: Timestamp
    capacity: int = Field(ge=1)


class SlotList(BaseModel):
    """Free slots, in time order."""

    slots: list[Slot]


class Booking(BaseModel):
    """A booking made with this referrer's account."""

    id: BookingId
    motif_id: int
    kind: VisitKind
    starts_at: Timestamp
    ends_at: Timestamp
    status: AppointmentStatus
    first_name: str
    created_at: Timestamp
    moved_to: BookingId | None = Field(description="Set when the booking was moved: its new id")


class BookingList(BaseModel):
    """This referrer's bookings, newest first."""

    bookings: list[Booking]


class BookingCreated(Booking):
    """A new booking, with what the beneficiary needs to join."""

    join_url: str = Field(json_schema_extra={"format": "uri"})
    code: str = Field(
        pattern="^[0-9]{6,10}$",
        description="The join code (CODE_DIGITS digits, 8 by default), usable from 15 minutes "
        "before the start, for a beneficiary who cannot open links",
    )
    manage_url: str = Field(
        json_schema_extra={"format": "uri"},
        description="The beneficiary's link to cancel or move the booking",
    )


class Period(BaseModel):
    """The period a report covers."""

    model_config = ConfigDict(populate_by_name=True)

    from_: IsoDate = Field(alias="from")
    to: IsoDate
    step: Literal["month", "week"]


class ReportFilters(BaseModel):
    """The filters a report applied."""

    channel: str | None
    theme: str | None


class Totals(BaseModel):
    """Totals over the period."""

    sessions: Count
    sessions_ended: Count
    demand: Count
    unmet: Count
    mean_duration_minutes: float | None


class Volume(BaseModel):
    """One month or week."""

    period: str = Field(examples=["2025-03", "2025-W09"])
    sessions: Count
    by_channel: dict[str, Count]
    demand: Count
    unmet: Count


class ThemeRow(BaseModel):
    """Sessions and unmet demand of a theme (code null: no theme)."""

    code: str | None
    label: str
    sessions: Count
    unmet: Count


class FacetRow(BaseModel):
    """Sessions by organisation, outcome, autonomy or duration."""

    code: str
    label: str
    sessions: Count


class VolunteerRow(BaseModel):
    """Sessions by volunteer (id null: not a known account)."""

    id: int | None
    name: str
    sessions: Count


class Departement(BaseModel):
    """A département's sessions and unmet demand, with rates per 100,000 inhabitants."""

    code: str = Field(description='INSEE code, or "inconnu"')
    name: str
    population: int | None
    sessions: Count
    sessions_per_100k: Rate
    unmet: Count
    unmet_per_100k: Rate


class LanguageDemand(BaseModel):
    """Demand and unmet demand of the people who used one language on the beneficiary's pages
    (events recorded before languages existed count as French)."""

    code: str = Field(description="Language code (BCP 47), e.g. fr, ar, fa-AF")
    label: str = Field(examples=["Arabe (العربية)"])
    demand: Count = Field(description="Appointments booked, queue places, call-backs asked")
    demand_language_wanted: Count = Field(
        description="Of the demand, people who asked for a volunteer speaking their language"
    )
    unmet: Count
    unmet_language_wanted: Count = Field(
        description="Of the unmet demand, people who asked for a volunteer speaking their language"
    )


Share = Annotated[
    float | None,
    Field(
        description="In percent, one decimal; null when its count or the checks it divides by "
        "are suppressed (below small_count), or there is no check"
    ),
]
EstimatedEuros = Annotated[
    int | None,
    Field(
        ge=0,
        description="Estimated monthly total in euros: the sum of the middles of the amount "
        "bands (1,000 for 800 and more), rounded to two significant figures; null when the "
        "benefits with an amount behind it are below small_count, or the benefit has no "
        "amount (free complémentaire santé solidaire)",
    ),
]


class RightsBenefit(BaseModel):
    """One benefit found probably due and not received by rights checks."""

    code: str = Field(description="Benefit code (server/rights/benefits.py)")
    label: str
    unclaimed: Count = Field(description="Checks that found this benefit")
    share_of_checks_pct: Share
    estimated_monthly_eur: EstimatedEuros


class RightsDepartement(BaseModel):
    """The rights checks of one département (of the commune checked)."""

    code: str = Field(description='INSEE code, or "inconnu"')
    name: str
    population: int | None
    checks: Count
    unclaimed: Count = Field(description="Benefits found probably due and not received")
    unclaimed_per_100k: Rate
    share_with_rights_pct: Share = Field(
        description="Checks that found at least one benefit, in percent of the checks; null "
        "when suppressed"
    )
    estimated_monthly_eur: EstimatedEuros


class RightsReport(BaseModel):
    """Droits potentiels non réclamés: what the rights checks (OpenFisca-France) made during
    sessions found, as coded facts. The channel filter applies; the theme filter does not."""

    checks: Count
    checks_with_rights: Count = Field(description="Checks that found at least one benefit")
    share_with_rights_pct: Share
    unclaimed: Count = Field(description="Benefits found probably due and not received")
    estimated_monthly_eur: EstimatedEuros
    benefits: list[RightsBenefit] = Field(description="Every benefit of the catalogue, in order")
    departements: list[RightsDepartement] = Field(
        description='Every département in INSEE order, then "inconnu"'
    )


class StatisticsReport(BaseModel):
    """The coordinator's statistics."""

    period: Period
    filters: ReportFilters
    small_count: int
    totals: Totals
    volumes: list[Volume]
    themes: list[ThemeRow]
    organisations: list[FacetRow]
    outcomes: list[FacetRow]
    autonomy: list[FacetRow]
    durations: list[FacetRow]
    volunteers: list[VolunteerRow]
    departements: list[Departement]
    ranking: list[Departement] = Field(
        description="Where to open a permanence: highest unmet demand per 100k first"
    )
    languages: list[LanguageDemand] = Field(
        description="Every language of the beneficiary's pages in order, counted or not"
    )
    rights: RightsReport


def error_text(model: type[BaseModel], field: str, error_type: str) -> tuple[str, str] | None:
    """The code and French message for a refusal of `field` of an input model, if it names one."""
    texts: dict[str, ErrorText] = getattr(model, "input_errors", {})
    explain = texts.get(field)
    return explain(error_type) if explain is not None else None
