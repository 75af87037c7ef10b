"""Contact details people type: phone, e-mail, first name, free text and needs.

Used by booking, call-back requests, handoff sheets and the drop-in queue. Phones come out in
E.164, guessing the overseas region from a national form, and must belong to one of the allowed
regions (PHONE_REGIONS: metropolitan France and the overseas départements and collectivités by
default), since we call them and pay for the SMS we send them; an e-mail address is checked
strictly (it is where we send messages) and keeps the case of its local part. Refusals are
``ContactError`` naming the form field, with a French message.

``contact_proof`` marks the join link we send to one contact (the SMS to a phone, the e-mail to
an address): coming through the marked link proves the person reads that contact
(server/handoff.py links earlier sheets only then).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlencode, urlsplit

import phonenumbers

from server import text
from server.availability import AvailabilityError, zone
from server.errors import DomainError
from server.i18n import _
from server.settings import DEFAULT_PHONE_REGIONS, DEFAULT_TIMEZONE
from server.store.models import Appointment
from server.tokens import constant_time_equal

FIRST_NAME_MAX = 40
DESCRIPTION_MAX = 1000
LANGUAGE_MAX = 40


class ContactError(DomainError):
    """A contact detail that cannot be used (bad phone, e-mail, first name…)."""


# Phones are written with digits, spaces, dots, dashes, slashes, brackets and one leading +.
# Letters are refused before phonenumbers sees them: it would read "06 12 AB CD" as a keypad.
_PHONE_CHARS = re.compile(r"[0-9 .()/+-]{6,30}")
_SMS_OR_VOICE = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.VOIP,
}
# Where a national number (0690…, 0262…, 75 12 34) may come from, tried in this order.
OVERSEAS_REGIONS = ("GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "NC", "PF", "WF")
ZONE_REGIONS = {
    "Europe/Paris": "FR",
    "America/Guadeloupe": "GP",
    "America/Martinique": "MQ",
    "America/Cayenne": "GF",
    "Indian/Reunion": "RE",
    "Indian/Mayotte": "YT",
    "America/Miquelon": "PM",
    "America/St_Barthelemy": "BL",
    "America/Marigot": "MF",
    "Pacific/Noumea": "NC",
    "Pacific/Tahiti": "PF",
    "Pacific/Marquesas": "PF",
    "Pacific/Gambier": "PF",
    "Pacific/Wallis": "WF",
}
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAME_PUNCTUATION = frozenset(" '’.-")


def _invalid_phone() -> ContactError:
    return ContactError(
        "invalid_phone",
        _("Ce numéro de téléphone n'est pas valide. Exemple : 06 12 34 56 78."),
        "phone",
    )


def _valid(number: phonenumbers.PhoneNumber) -> bool:
    return (
        phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in _SMS_OR_VOICE
    )


def _parse(digits: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    return number if _valid(number) else None


def normalize_phone(raw: str, zone_name: str | None = None) -> str:
    """A phone number in E.164 (+33612345678), guessing overseas regions from national forms."""
    value = " ".join(raw.split())  # also turns the no-break spaces of copied numbers into spaces
    if not _PHONE_CHARS.fullmatch(value):
        raise _invalid_phone()
    digits = re.sub(r"[^0-9+]", "", value)
    if "+" in digits[1:]:
        raise _invalid_phone()
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+33"):
        # Read +33 numbers in the national plan, where 0690…, 0262… or 0639… are overseas
        # numbers (+590, +262…) even though phonenumbers accepts some of them under +33.
        # "+33 (0)6…" keeps its stray 0 once the brackets are gone: drop it.
        rest = digits[3:]
        digits = "0" + (rest[1:] if rest.startswith("0") else rest)
    if digits.startswith("+"):
        number = _parse(digits, None)
    else:
        # Overseas regions before the mainland: their national prefixes are theirs alone.
        hint = ZONE_REGIONS.get(zone_name or "")
        regions = dict.fromkeys([r for r in (hint, *OVERSEAS_REGIONS, "FR") if r is not None])
        number = next((n for r in regions if (n := _parse(digits, r)) is not None), None)
    if number is None:
        raise _invalid_phone()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_region(e164: str) -> str | None:
    """The numbering-plan region of an E.164 number (``FR``, ``RE``, ``YT``…), None if unknown."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(number)


def in_regions(e164: str, regions: tuple[str, ...]) -> bool:
    """Whether an E.164 number belongs to one of these regions (PHONE_REGIONS)."""
    return phone_region(e164) in regions


def check_phone_region(e164: str, regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str:
    """The number, or ContactError if it is outside the allowed regions (PHONE_REGIONS): we
    call these numbers and pay for their SMS, and a national service has no use for others."""
    if not in_regions(e164, regions):
        raise ContactError(
            "phone_outside_france",
            _(
                "Ce numéro n'est pas un numéro de France (métropole ou outre-mer) : nous ne "
                "pouvons ni l'appeler ni lui envoyer de SMS. Donnez un numéro français."
            ),
            "phone",
        )
    return e164


def can_receive_sms(e164: str) -> bool:
    """True if an E.164 number is a mobile (landlines take no SMS)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }


def normalize_email(raw: str) -> str:
    """An e-mail address with a plain local part and a real-looking domain (lower-cased)."""
    invalid = ContactError(
        "invalid_email",
        _("Cette adresse e-mail n'est pas valide. Exemple : prenom@exemple.fr."),
        "email",
    )
    value = raw.strip()
    if len(value) > 254 or value.count("@") != 1:
        raise invalid
    local, domain = value.split("@")
    if len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        raise invalid
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise invalid from exc
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit() or len(labels[-1]) < 2:
        raise invalid
    if not all(_EMAIL_LABEL.fullmatch(label) for label in labels):
        raise invalid
    return f"{local}@{domain}"


def clean_first_name(raw: str) -> str:
    """A first name in letters and name punctuation, spaces tidied."""
    value = " ".join(raw.split())
    # Letters and name punctuation only: the name is repeated in the messages we send to
    # whatever address was typed, so it must not carry a link or a phone number.
    if (
        not value
        or len(value) > FIRST_NAME_MAX
        or not any(char.isalpha() for char in value)
        or not all(char.isalpha() or char in _NAME_PUNCTUATION for char in value)
    ):
        raise ContactError(
            "invalid_first_name",
            _("Écrivez votre prénom en lettres (%(n)d caractères au plus).")
            % {"n": FIRST_NAME_MAX},
            "first_name",
        )
    return value


def clean_description(
    raw: str | None, limit: int = DESCRIPTION_MAX, field: str = "description"
) -> str | None:
    """Free text the person wrote (line ends normalised, trimmed), None when empty."""
    value = (raw or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(value) > limit:
        raise ContactError(
            "description_too_long",
            _("Votre message est trop long (%(n)d caractères au plus).") % {"n": limit},
            field,
        )
    if not text.is_lines(value):
        raise ContactError(
            "invalid_description",
            _("Votre message contient des caractères non autorisés."),
            field,
        )
    return value or None


def clean_postal_code(raw: str | None) -> str | None:
    """A French postal code (5 digits), None when empty."""
    value = (raw or "").strip()
    if value and (len(value) != 5 or not value.isascii() or not value.isdigit()):
        raise ContactError(
            "invalid_postal_code",
            _("Le code postal a 5 chiffres, par exemple 75011."),
            "postal_code",
        )
    return value or None


@dataclass(frozen=True)
class Needs:
    """What helps the beneficiary: an interpreter, hearing support, a first time on a computer."""

    interpreter_language: str | None = None
    hearing: bool = False
    first_time_computer: bool = False

    def validated(self) -> Needs:
        """A clean copy, or ContactError."""
        language = " ".join((self.interpreter_language or "").split())
        if len(language) > LANGUAGE_MAX or not text.is_line(language):
            raise ContactError(
                "invalid_needs",
                _("La langue est trop longue (%(n)d caractères au plus).") % {"n": LANGUAGE_MAX},
                "interpreter_language",
            )
        if not isinstance(self.hearing, bool) or not isinstance(self.first_time_computer, bool):
            raise ContactError("invalid_needs", _("Réponse invalide."), "needs")
        return replace(self, interpreter_language=language or None)

    def as_json(self) -> dict[str, object]:
        """The form stored in Appointment.needs."""
        return {
            "interpreter_language": self.interpreter_language,
            "hearing": self.hearing,
            "first_time_computer": self.first_time_computer,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Needs:
        """Read back Appointment.needs."""
        language = data.get("interpreter_language")
        return cls(
            interpreter_language=language if isinstance(language, str) else None,
            hearing=data.get("hearing") is True,
            first_time_computer=data.get("first_time_computer") is True,
        )


@dataclass(frozen=True)
class ContactInfo:
    """What the beneficiary (or their referrer) types; `validated()` checks and normalises it."""

    first_name: str
    phone: str | None = None
    email: str | None = None
    postal_code: str | None = None
    description: str | None = None
    needs: Needs = field(default_factory=Needs)
    timezone: str | None = None  # the beneficiary's zone: display, and guessing the phone region

    def validated(
        self,
        default_timezone: str = DEFAULT_TIMEZONE,
        regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS,
    ) -> ContactInfo:
        """A normalised copy (E.164 phone of an allowed region, clean text), or ContactError
        naming the field."""
        first_name = clean_first_name(self.first_name)  # checked in the order of the form
        timezone = self.timezone or default_timezone
        try:
            zone(timezone)
        except AvailabilityError as exc:
            raise ContactError("invalid_timezone", str(exc), "timezone") from exc
        phone = (self.phone or "").strip()
        email = (self.email or "").strip()
        if not phone and not email:
            raise ContactError(
                "missing_contact",
                _("Donnez un numéro de téléphone ou une adresse e-mail pour recevoir le rappel."),
                "phone",
            )
        clean_phone = None
        if phone:
            clean_phone = check_phone_region(normalize_phone(phone, timezone), regions)
        clean_email = normalize_email(email) if email else None
        if clean_email is None and clean_phone is not None and not can_receive_sms(clean_phone):
            # A landline gets no SMS: without an e-mail the person would never be told.
            raise ContactError(
                "no_reachable_contact",
                _(
                    "Ce numéro est un fixe : il ne reçoit pas de SMS. "
                    "Donnez un portable ou un e-mail."
                ),
                "phone",
            )
        postal_code = clean_postal_code(self.postal_code)
        return ContactInfo(
            first_name=first_name,
            phone=clean_phone,
            email=clean_email,
            postal_code=postal_code,
            description=clean_description(self.description),
            needs=self.needs.validated(),
            timezone=timezone,
        )

    @classmethod
    def of(cls, appointment: Appointment) -> ContactInfo:
        """The contact details stored on an appointment."""
        return cls(
            first_name=appointment.first_name,
            phone=appointment.phone,
            email=appointment.email,
            postal_code=appointment.postal_code,
            description=appointment.description,
            needs=Needs.from_json(appointment.needs),
            timezone=appointment.display_timezone,
        )


ContactKind = Literal["phone", "email"]
PROOF_PARAMETER = "v"
_PROOF_BYTES = 12  # 96 bits: guessing it online is hopeless


def contact_proof(secret_key: str, session_id: str, kind: ContactKind, value: str) -> str:
    """The mark of the join link sent to one contact of a session (``kind`` ``phone`` for the
    SMS, ``email`` for the e-mail); derived, so nothing is stored until someone uses it."""
    message = "\x1f".join(("contact-proof", session_id, kind, value)).encode()
    digest = hmac.new(secret_key.encode(), message, hashlib.sha256).digest()[:_PROOF_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def proven_link(
    join_url: str, secret_key: str, session_id: str, kind: ContactKind, value: str | None
) -> str:
    """The join link as sent to this contact: marked with its proof (unmarked without one)."""
    if not value:
        return join_url
    proof = contact_proof(secret_key, session_id, kind, value)
    separator = "&" if urlsplit(join_url).query else "?"
    return f"{join_url}{separator}{urlencode({PROOF_PARAMETER: proof})}"


def proven_contact(
    secret_key: str,
    session_id: str,
    proof: str,
    contacts: list[tuple[ContactKind, str | None]],
) -> tuple[ContactKind, str] | None:
    """Which of the session's contacts this join link's mark proves, if any."""
    if not proof or len(proof) > 32:
        return None
    for kind, value in contacts:
        if value and constant_time_equal(proof, contact_proof(secret_key, session_id, kind, value)):
            return kind, value
    return None
