"""Handoff sheets (fiches navette): what was done in one session, what is left, where the person
was sent. One sheet per assistance session (or per call-back resolved on the phone); the
beneficiary reads it through their own link, whose token is stored only as a SHA-256.

Who reaches a sheet: the session's volunteer (edits), coordinators of the association (read),
the referrer who booked the appointment (read), the beneficiary (their link, their room pass,
their queue place or their appointment's manage link), and later volunteers of the same
association only for sheets the person agreed to share (``shared_with_volunteers``).

Earlier sheets are linked by a keyed hash of the person's contact (``person_key``), but only a
contact the person proved they read: anyone can book with someone else's number. A session's
contact is proven when the beneficiary comes through the join link marked for it (the one in the
SMS to that phone, or in the e-mail to that address: ``contact.proven_link``;
``verify_contact`` records it as ``AssistanceSession.verified_person_key``); a call-back
resolved on the phone proves its number (the volunteer reached it). The plain link and the code
prove nothing: the booking's confirmation page shows them to whoever booked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server import booking, callback_requests, links, text
from server.contact import ContactKind, proven_contact
from server.dropin import places as dropin
from server.errors import DomainError, Kind
from server.geo import normalize_postal_code
from server.i18n import _, babel_locale, use_language
from server.notify.deliver import SmsBudget, SmsGate, deliver
from server.rights import checks as rights_checks
from server.settings import Settings
from server.stats.events import EventKind, record
from server.store.engine import begin_write
from server.store.models import (
    Appointment,
    AssistanceSession,
    Association,
    CallbackRequest,
    CallbackStatus,
    HandoffSheet,
    QueueEntry,
    Role,
    SessionStatus,
    User,
    utcnow,
)
from server.taxonomy import AUTONOMY, ORGANISATIONS, OUTCOMES, THEMES, clean_codes, label
from server.tokens import sha256_hex

TEXT_MAX = 1000  # what was done, next steps: short on purpose (filled in under a minute)
PARTNER_MAX = 200
CONTACT_MAX = 300
FOLLOW_UP_MAX_DAYS = 366
EARLIER_LIMIT = 10
TOKEN_MAX = 128
ID_MAX = 36
TODO_DAYS = 30  # "Fiches à remplir" looks this far back
TODO_LIMIT = 20
# Call-backs closed on the phone get a sheet of their own; a visio link gets its session's.
CALLBACK_SHEET_OUTCOMES = frozenset({"helped", "appointment"})
STAFF = (Role.VOLUNTEER, Role.COORDINATOR)


class SheetInvalid(DomainError):
    """The form has mistakes: French messages by field name (``errors``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(
            "invalid", _("Corrigez les champs indiqués en rouge."), kind=Kind.INVALID, errors=errors
        )


def _text(raw: str, limit: int) -> str | None:
    """Trimmed text with normalised line ends; None when empty. Raises nothing: callers check
    the length first so that the person gets a message rather than a cut text."""
    value = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    value = text.without_harmful(value)
    return value[:limit] or None


@dataclass(frozen=True)
class SheetForm:
    """What the volunteer typed or ticked, as strings; ``validated()`` checks it."""

    themes: tuple[str, ...] = ()
    organisations: tuple[str, ...] = ()
    autonomy: str = ""
    outcome: str = ""
    actions_done: str = ""
    next_steps: str = ""
    orientation_partner: str = ""
    orientation_contact: str = ""
    follow_up_on: str = ""
    postal_code: str = ""
    shared_with_volunteers: bool = False

    @classmethod
    def of(cls, sheet: HandoffSheet) -> SheetForm:
        """The form as a stored sheet fills it (to edit it)."""
        return cls(
            themes=tuple(sheet.themes),
            organisations=tuple(sheet.organisations),
            autonomy=sheet.autonomy,
            outcome=sheet.outcome,
            actions_done=sheet.actions_done or "",
            next_steps=sheet.next_steps or "",
            orientation_partner=sheet.orientation_partner or "",
            orientation_contact=sheet.orientation_contact or "",
            follow_up_on=sheet.follow_up_on.isoformat() if sheet.follow_up_on else "",
            postal_code=sheet.postal_code or "",
            shared_with_volunteers=sheet.shared_with_volunteers,
        )

    def validated(self, today: date) -> CleanSheet:
        """A clean copy, or SheetInvalid with a French message per wrong field."""
        errors: dict[str, str] = {}
        themes = clean_codes(THEMES, list(self.themes))
        if not themes:
            errors["themes"] = _("Cochez au moins un thème.")
        organisations = clean_codes(ORGANISATIONS, list(self.organisations))
        if self.autonomy not in AUTONOMY:
            errors["autonomy"] = _("Dites comment la personne a fait.")
        if self.outcome not in OUTCOMES:
            errors["outcome"] = _("Choisissez où en est la démarche.")
        for name, limit in (("actions_done", TEXT_MAX), ("next_steps", TEXT_MAX)):
            if len(getattr(self, name).strip()) > limit:
                errors[name] = _("Ce texte est trop long : %(n)d caractères au plus.") % {
                    "n": limit
                }
        if len(self.orientation_partner.strip()) > PARTNER_MAX:
            errors["orientation_partner"] = _("Nom trop long : %(n)d caractères au plus.") % {
                "n": PARTNER_MAX
            }
        if len(self.orientation_contact.strip()) > CONTACT_MAX:
            errors["orientation_contact"] = _("Contact trop long : %(n)d caractères au plus.") % {
                "n": CONTACT_MAX
            }
        follow_up = None
        raw_day = self.follow_up_on.strip()
        if raw_day:
            try:
                follow_up = date.fromisoformat(raw_day)
            except ValueError:
                errors["follow_up_on"] = _("Date de suivi incomprise : choisissez un jour.")
            else:
                if follow_up < today:
                    errors["follow_up_on"] = _("La date de suivi est passée.")
                elif follow_up > today + timedelta(days=FOLLOW_UP_MAX_DAYS):
                    errors["follow_up_on"] = _("La date de suivi est à plus d'un an.")
        postal_code = None
        raw_postal = self.postal_code.strip()
        if raw_postal:
            postal_code = normalize_postal_code(raw_postal[:20])
            if postal_code is None:
                errors["postal_code"] = _("Le code postal a 5 chiffres, par exemple 13008.")
        if errors:
            raise SheetInvalid(errors)
        return CleanSheet(
            themes=themes,
            organisations=organisations,
            autonomy=self.autonomy,
            outcome=self.outcome,
            actions_done=_text(self.actions_done, TEXT_MAX),
            next_steps=_text(self.next_steps, TEXT_MAX),
            orientation_partner=_text(self.orientation_partner, PARTNER_MAX),
            orientation_contact=_text(self.orientation_contact, CONTACT_MAX),
            follow_up_on=follow_up,
            postal_code=postal_code,
            shared_with_volunteers=self.shared_with_volunteers,
        )


@dataclass(frozen=True)
class CleanSheet:
    """A validated sheet, ready to store."""

    themes: list[str]
    organisations: list[str]
    autonomy: str
    outcome: str
    actions_done: str | None
    next_steps: str | None
    orientation_partner: str | None
    orientation_contact: str | None
    follow_up_on: date | None
    postal_code: str | None
    shared_with_volunteers: bool


def person_key(secret_key: str, phone: str | None = None, email: str | None = None) -> str | None:
    """Keyed hash of a person's E.164 phone (preferred) or e-mail: finds their earlier sheets
    without storing the contact again; None when neither is known."""
    if phone:
        message = "phone:" + phone.strip()
    elif email:
        message = "email:" + email.strip().lower()
    else:
        return None
    return hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass
class Subject:
    """What a sheet is about: one assistance session, or a call-back resolved on the phone,
    with what we know of the person from the appointment, queue place or call-back."""

    association_id: int
    volunteer_id: int
    channel: str
    session: AssistanceSession | None = None
    callback: CallbackRequest | None = None
    appointment: Appointment | None = None
    queue_entry: QueueEntry | None = None

    @property
    def phone(self) -> str | None:
        """The person's E.164 phone, if the appointment or call-back gave one."""
        if self.appointment is not None and self.appointment.phone:
            return self.appointment.phone
        return self.callback.phone if self.callback is not None else None

    @property
    def email(self) -> str | None:
        """The person's e-mail, if the appointment or call-back gave one."""
        if self.appointment is not None and self.appointment.email:
            return self.appointment.email
        return self.callback.email if self.callback is not None else None

    @property
    def postal_code(self) -> str | None:
        """The postal code the person gave when booking, queueing or asking to be called."""
        for source in (self.appointment, self.queue_entry, self.callback):
            if source is not None and source.postal_code:
                return source.postal_code
        return None

    @property
    def language(self) -> str | None:
        """The language the person's page was in during the session, else the one they booked,
        queued or asked to be called in: their sheet's link is written in it."""
        if self.session is not None and self.session.language:
            return self.session.language
        for source in (self.appointment, self.queue_entry, self.callback):
            if source is not None:
                return source.language
        return None

    @property
    def first_name(self) -> str | None:
        """The person's first name, if known (shown to the volunteer only)."""
        if self.appointment is not None:
            return self.appointment.first_name
        for source in (self.queue_entry, self.callback):
            if source is not None and source.first_name:
                return source.first_name
        return self.session.beneficiary_name if self.session is not None else None

    def verified_key(self, secret_key: str) -> str | None:
        """The person_key of a contact the person proved they read, None if none was: the
        session's (set by ``verify_contact``), or a call-back's number reached on the phone."""
        if self.session is not None:
            return self.session.verified_person_key
        if self.callback is not None and self.callback.phone:
            return person_key(secret_key, phone=self.callback.phone)
        return None

    def duration_seconds(self) -> int | None:
        """How long the session lasted, counted as the end event counts it; None if unknown."""
        session = self.session
        if session is None or session.ended_at is None:
            return None
        started = session.first_media_at or session.beneficiary_joined_at
        return int((session.ended_at - started).total_seconds()) if started else None

    def where(self) -> ColumnElement[bool]:
        """The clause finding this subject's sheet."""
        if self.session is not None:
            return HandoffSheet.assistance_session_id == self.session.id
        assert self.callback is not None
        return HandoffSheet.callback_id == self.callback.id

    @property
    def form(self) -> tuple[str, dict[str, str]]:
        """The route (name, parts) where the volunteer fills this subject's sheet."""
        if self.session is not None:
            return "handoff-form", {"session_id": self.session.id}
        assert self.callback is not None
        return "handoff-callback-form", {"callback_id": self.callback.id}


async def subject_of_session(db: AsyncSession, session: AssistanceSession) -> Subject:
    """A session as a sheet subject, with its appointment, call-back or queue place."""
    callback = await db.scalar(
        select(CallbackRequest).where(CallbackRequest.assistance_session_id == session.id)
    )
    return Subject(
        association_id=session.association_id,
        volunteer_id=session.volunteer_id,
        channel=session.channel,
        session=session,
        callback=callback,
        appointment=await booking.appointment_for_session(db, session.id),
        queue_entry=await dropin.entry_for_session(db, session.id),
    )


async def subject_for_session(db: AsyncSession, session_id: str, user: User) -> Subject | None:
    """The session as a sheet subject if this account may fill its sheet: the session's
    volunteer (also after a transfer), or whoever filed its sheet; None otherwise."""
    if user.role not in STAFF or not session_id or len(session_id) > ID_MAX:
        return None
    session = await db.get(AssistanceSession, session_id)
    if session is None or session.association_id != user.association_id:
        return None
    if session.volunteer_id != user.id:
        filer = await db.scalar(
            select(HandoffSheet.volunteer_id).where(
                HandoffSheet.assistance_session_id == session.id
            )
        )
        if filer != user.id:
            return None
    return await subject_of_session(db, session)


async def subject_for_callback(db: AsyncSession, callback_id: str, user: User) -> Subject | None:
    """A call-back resolved on the phone by this account, as a sheet subject; a call-back that
    became a visio has its session's sheet instead (``subject.session`` is then set)."""
    if user.role not in STAFF or not callback_id or len(callback_id) > ID_MAX:
        return None
    request = await callback_requests.get(db, user.association_id, callback_id)
    if request is None or request.status != CallbackStatus.RESOLVED:
        return None
    if request.claimed_by_id != user.id:
        return None
    if request.assistance_session_id is not None:
        return await subject_for_session(db, request.assistance_session_id, user)
    if request.outcome not in CALLBACK_SHEET_OUTCOMES:
        return None
    return Subject(
        association_id=request.association_id,
        volunteer_id=user.id,
        channel=callback_requests.CHANNEL,
        callback=request,
    )


async def sheet_for(db: AsyncSession, subject: Subject) -> HandoffSheet | None:
    """The subject's sheet, if filed (purged ones included: the caller decides)."""
    return await db.scalar(select(HandoffSheet).where(subject.where()))


async def sheet_for_session(db: AsyncSession, session_id: str) -> HandoffSheet | None:
    """The readable sheet of an assistance session (not purged), if filed."""
    if not session_id or len(session_id) > ID_MAX:
        return None
    return await db.scalar(
        select(HandoffSheet).where(
            HandoffSheet.assistance_session_id == session_id, HandoffSheet.purged_at.is_(None)
        )
    )


async def sheet_for_callback(db: AsyncSession, callback_id: str) -> HandoffSheet | None:
    """The readable sheet of a call-back resolved on the phone, if filed."""
    return await db.scalar(
        select(HandoffSheet).where(
            HandoffSheet.callback_id == callback_id, HandoffSheet.purged_at.is_(None)
        )
    )


@dataclass(frozen=True)
class Saved:
    """The stored sheet; ``token`` is the beneficiary's raw reading token, only on first filing."""

    sheet: HandoffSheet
    token: str | None
    sent: bool = False  # its link is on its way to the person (by e-mail or SMS)

    @property
    def created(self) -> bool:
        """True when this save filed the sheet (rather than edited it)."""
        return self.token is not None


def _apply(sheet: HandoffSheet, clean: CleanSheet) -> None:
    sheet.themes = list(clean.themes)
    sheet.organisations = list(clean.organisations)
    sheet.autonomy = clean.autonomy
    sheet.outcome = clean.outcome
    sheet.actions_done = clean.actions_done
    sheet.next_steps = clean.next_steps
    sheet.orientation_partner = clean.orientation_partner
    sheet.orientation_contact = clean.orientation_contact
    sheet.follow_up_on = clean.follow_up_on
    sheet.postal_code = clean.postal_code
    sheet.shared_with_volunteers = clean.shared_with_volunteers


class SheetGone(DomainError):
    """The sheet was purged (retention): it cannot be edited any more."""

    def __init__(self, sheet_id: str) -> None:
        super().__init__(
            "purged", _("Cette fiche n'existe pas ou ne vous concerne pas."), kind=Kind.NOT_FOUND
        )
        self.sheet_id = sheet_id


async def save(
    db: AsyncSession,
    settings: Settings,
    subject: Subject,
    clean: CleanSheet,
    volunteer: User,
    now: datetime | None = None,
    *,
    sms_budget: SmsBudget | None,
) -> Saved:
    """File the subject's sheet, or edit it if it exists, in the caller's transaction.

    The first filing stores only the reading token's hash, records one ``sheet_filed`` event
    (coded facts, no free text) and enqueues the person's link (``sheet:<id>:sms|email``),
    sent as soon as the transaction commits. Edits do neither. The sheet is linked to the
    person (``person_key``) only by a contact they proved they read."""
    now = now or utcnow()
    await begin_write(db)
    existing = await db.scalar(
        select(HandoffSheet)
        .where(subject.where())
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if existing is None:
        token = secrets.token_urlsafe(24)
        sheet = HandoffSheet(
            association_id=subject.association_id,
            volunteer_id=volunteer.id,
            assistance_session_id=subject.session.id if subject.session is not None else None,
            callback_id=subject.callback.id if subject.callback is not None else None,
            channel=subject.channel,
            person_key=subject.verified_key(settings.secret_key.get_secret_value()),
            read_token_hash=sha256_hex(token),
            created_at=now,
            updated_at=now,
        )
        _apply(sheet, clean)
        try:
            async with db.begin_nested():
                db.add(sheet)
                await db.flush()
        except IntegrityError:
            # Filed at the same instant from another tab: this save becomes an edit of it.
            existing = await db.scalar(
                select(HandoffSheet)
                .where(subject.where())
                .execution_options(populate_existing=True)
            )
            if existing is None:
                raise
        else:
            await _record_filed(db, subject, sheet, clean, volunteer)
            await rights_checks.sheet_filed(db, sheet)
            gate = SmsGate.of(settings, sms_budget)
            sent = await _send_link(db, gate, settings, subject, sheet, token, now)
            return Saved(sheet, token, sent)
    if existing.purged_at is not None:
        raise SheetGone(existing.id)
    _apply(existing, clean)
    existing.updated_at = now
    await db.flush()
    return Saved(existing, None)


async def _record_filed(
    db: AsyncSession, subject: Subject, sheet: HandoffSheet, clean: CleanSheet, volunteer: User
) -> None:
    """The statistics event: codes, département and duration only, never the free text."""
    await record(
        db,
        EventKind.SHEET_FILED,
        subject.session,
        association_id=subject.association_id,
        channel=subject.channel,
        postal_code=clean.postal_code,
        themes=list(clean.themes),
        theme=clean.themes[0] if clean.themes else None,
        organisations=list(clean.organisations),
        outcome=clean.outcome,
        autonomy=clean.autonomy,
        volunteer_id=volunteer.id,
        duration_seconds=subject.duration_seconds(),
    )


def read_url(settings: Settings, token: str) -> str:
    """The absolute link through which the beneficiary reads their sheet."""
    return links.SHEET.url(settings, token=token)


async def _send_link(
    db: AsyncSession,
    gate: SmsGate,
    settings: Settings,
    subject: Subject,
    sheet: HandoffSheet,
    token: str,
    now: datetime,
) -> bool:
    """Send the person their sheet's link by SMS and/or e-mail, when we know how to reach them
    (the link only: what was done stays behind it), in their language; whether it is on its
    way."""
    phone, email = subject.phone, subject.email
    if not phone and not email:
        return False
    with use_language(subject.language):
        association = await db.get_one(Association, subject.association_id)
        link = read_url(settings, token)
        first_name = subject.first_name
        hello = _("Bonjour %(name)s,") % {"name": first_name} if first_name else _("Bonjour,")
        delivery = await deliver(
            db,
            gate=gate,
            phone=phone,
            email=email,
            key=lambda channel: f"sheet:{sheet.id}:{channel.value}",
            subject=_("Votre fiche : ce qui a été fait et la suite"),
            body=f"{hello}\n\n"
            + _(
                "Merci d'être venu(e). Votre fiche dit ce qui a été fait avec le bénévole et ce "
                "qu'il reste à faire. Vous pouvez la lire et l'imprimer ici :\n%(link)s\n\n"
                "%(association)s"
            )
            % {"association": association.name, "link": link}
            + "\n",
            sms=_("%(association)s : ce qui a été fait et la suite, sur votre fiche : %(link)s")
            % {"association": association.name, "link": link},
            send_after=now,
        )
        return delivery.reaches


# -- Reading ------------------------------------------------------------------------------------


async def find_by_token(db: AsyncSession, token: str) -> HandoffSheet | None:
    """The readable sheet behind a beneficiary's link, or None (unknown and purged alike)."""
    if not token or len(token) > TOKEN_MAX:
        return None
    return await db.scalar(
        select(HandoffSheet).where(
            HandoffSheet.read_token_hash == sha256_hex(token), HandoffSheet.purged_at.is_(None)
        )
    )


async def find_for_queue_token(db: AsyncSession, token: str | None) -> HandoffSheet | None:
    """The sheet of the session a drop-in place (its browser token) led to, if filed."""
    entry = await dropin.find_by_token(db, token)
    if entry is None or entry.assistance_session_id is None:
        return None
    return await sheet_for_session(db, entry.assistance_session_id)


async def find_for_appointment(db: AsyncSession, appointment: Appointment) -> HandoffSheet | None:
    """The sheet of an appointment's session, if filed."""
    if appointment.assistance_session_id is None:
        return None
    return await sheet_for_session(db, appointment.assistance_session_id)


async def find_for_referrer(
    db: AsyncSession, referrer: User, appointment_id: str
) -> HandoffSheet | None:
    """The sheet of an appointment this account booked for someone; None for anyone else's."""
    if not appointment_id or len(appointment_id) > ID_MAX:
        return None
    appointment = await db.get(Appointment, appointment_id)
    if appointment is None or appointment.referrer_id != referrer.id:
        return None
    if appointment.association_id != referrer.association_id:
        return None
    return await find_for_appointment(db, appointment)


async def session_ids_with_sheets(db: AsyncSession, session_ids: list[str]) -> set[str]:
    """Which of these sessions have a readable sheet (for lists)."""
    if not session_ids:
        return set()
    rows = await db.scalars(
        select(HandoffSheet.assistance_session_id).where(
            HandoffSheet.assistance_session_id.in_(session_ids), HandoffSheet.purged_at.is_(None)
        )
    )
    return {row for row in rows if row is not None}


async def get_for_staff(db: AsyncSession, sheet_id: str, user: User) -> HandoffSheet | None:
    """A sheet for staff reading: a coordinator reads every sheet of their association, a
    volunteer only the ones they filed; None otherwise (no existence leak)."""
    if user.role not in STAFF or not sheet_id or len(sheet_id) > ID_MAX:
        return None
    sheet = await db.get(HandoffSheet, sheet_id)
    if sheet is None or sheet.purged_at is not None:
        return None
    if sheet.association_id != user.association_id:
        return None
    if user.role is Role.COORDINATOR or sheet.volunteer_id == user.id:
        return sheet
    return None


async def editable_sheet(db: AsyncSession, sheet_id: str, user: User) -> HandoffSheet | None:
    """A sheet this account may edit (the rule of its form: the session's volunteer or the
    sheet's filer, the call-back's volunteer), not purged; None otherwise (no existence leak)."""
    if user.role not in STAFF or not sheet_id or len(sheet_id) > ID_MAX:
        return None
    sheet = await db.get(HandoffSheet, sheet_id)
    if sheet is None or sheet.purged_at is not None:
        return None
    if sheet.association_id != user.association_id:
        return None
    if sheet.assistance_session_id is not None:
        subject = await subject_for_session(db, sheet.assistance_session_id, user)
    elif sheet.callback_id is not None:
        subject = await subject_for_callback(db, sheet.callback_id, user)
    else:
        subject = None
    return sheet if subject is not None else None


async def set_sharing(db: AsyncSession, sheet_id: str, shared: bool, now: datetime) -> None:
    """The beneficiary gives or withdraws their agreement that later volunteers read it."""
    await begin_write(db)
    sheet = await db.get(HandoffSheet, sheet_id, with_for_update=True, populate_existing=True)
    if sheet is None or sheet.purged_at is not None:
        return
    if sheet.shared_with_volunteers != shared:
        sheet.shared_with_volunteers = shared
        sheet.updated_at = now
    await db.flush()


async def earlier_sheets(
    db: AsyncSession, settings: Settings, subject: Subject, limit: int = EARLIER_LIMIT
) -> list[HandoffSheet]:
    """The person's earlier sheets a volunteer may read: same person (by a contact they proved
    they read, never one merely typed), shared by them, same association, not purged, newest
    first; never this subject's own sheet."""
    key = subject.verified_key(settings.secret_key.get_secret_value())
    if key is None:
        return []
    query = select(HandoffSheet).where(
        HandoffSheet.person_key == key,
        HandoffSheet.shared_with_volunteers.is_(True),
        HandoffSheet.association_id == subject.association_id,
        HandoffSheet.purged_at.is_(None),
    )
    if subject.session is not None:
        query = query.where(
            or_(
                HandoffSheet.assistance_session_id.is_(None),
                HandoffSheet.assistance_session_id != subject.session.id,
            )
        )
    if subject.callback is not None:
        query = query.where(
            or_(HandoffSheet.callback_id.is_(None), HandoffSheet.callback_id != subject.callback.id)
        )
    rows = await db.scalars(query.order_by(HandoffSheet.created_at.desc()).limit(limit))
    return list(rows)


async def verify_contact(db: AsyncSession, settings: Settings, session_id: str, proof: str) -> bool:
    """The beneficiary entered the session through a join link marked ``proof``: if the mark is
    the one sent to the session's phone (SMS) or address (e-mail), record that contact as
    proven (``verified_person_key``), in the caller's transaction. False if it proves nothing."""
    if not proof or not session_id or len(session_id) > ID_MAX:
        return False
    session = await db.get(AssistanceSession, session_id)
    if session is None:
        return False
    subject = await subject_of_session(db, session)
    contacts: list[tuple[ContactKind, str | None]] = []
    for source in (subject.appointment, subject.callback):
        if source is not None:
            contacts += [("phone", source.phone), ("email", source.email)]
    secret = settings.secret_key.get_secret_value()
    proven = proven_contact(secret, session.id, proof, contacts)
    if proven is None:
        return False
    kind, value = proven
    key = person_key(secret, phone=value) if kind == "phone" else person_key(secret, email=value)
    if session.verified_person_key != key:
        session.verified_person_key = key
        await db.flush()
    return True


@dataclass(frozen=True)
class Todo:
    """A session or call-back still waiting for its sheet (dashboard "Fiches à remplir")."""

    when: datetime
    who: str | None
    kind: str  # the channel
    session_id: str | None = None
    callback_id: str | None = None

    @property
    def form(self) -> tuple[str, dict[str, str]]:
        """The route (name, parts) of the sheet's form."""
        if self.session_id is not None:
            return "handoff-form", {"session_id": self.session_id}
        assert self.callback_id is not None
        return "handoff-callback-form", {"callback_id": self.callback_id}


async def sheets_to_fill(db: AsyncSession, user: User, now: datetime | None = None) -> list[Todo]:
    """This volunteer's recent sessions where someone came, and call-backs they resolved on the
    phone, that have no sheet yet; newest first."""
    now = now or utcnow()
    since = now - timedelta(days=TODO_DAYS)
    sessions = await db.scalars(
        select(AssistanceSession)
        .outerjoin(HandoffSheet, HandoffSheet.assistance_session_id == AssistanceSession.id)
        .where(
            AssistanceSession.volunteer_id == user.id,
            AssistanceSession.beneficiary_joined_at.is_not(None),
            AssistanceSession.created_at >= since,
            or_(
                AssistanceSession.status == SessionStatus.ENDED,
                AssistanceSession.expires_at <= now,
            ),
            HandoffSheet.id.is_(None),
        )
        .order_by(AssistanceSession.created_at.desc())
        .limit(TODO_LIMIT)
    )
    todos = [
        Todo(s.ended_at or s.expires_at, s.beneficiary_name, s.channel, session_id=s.id)
        for s in sessions
    ]
    requests = await db.scalars(
        select(CallbackRequest)
        .outerjoin(HandoffSheet, HandoffSheet.callback_id == CallbackRequest.id)
        .where(
            CallbackRequest.claimed_by_id == user.id,
            CallbackRequest.association_id == user.association_id,
            CallbackRequest.status == CallbackStatus.RESOLVED,
            CallbackRequest.outcome.in_(CALLBACK_SHEET_OUTCOMES),
            CallbackRequest.assistance_session_id.is_(None),
            CallbackRequest.closed_at >= since,
            HandoffSheet.id.is_(None),
        )
        .order_by(CallbackRequest.closed_at.desc())
        .limit(TODO_LIMIT)
    )
    todos += [
        Todo(r.closed_at or r.created_at, r.first_name, callback_requests.CHANNEL, callback_id=r.id)
        for r in requests
    ]
    todos.sort(key=lambda todo: todo.when, reverse=True)
    return todos[:TODO_LIMIT]


# -- Display ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetView:
    """A sheet as people read it: French labels and dates, the free text as typed."""

    id: str
    day: str
    themes: list[str]
    organisations: list[str]
    autonomy: str
    outcome: str
    outcome_code: str
    actions_done: str | None
    next_steps: str | None
    orientation_partner: str | None
    orientation_contact: str | None
    follow_up_on: str | None
    shared: bool
    association: str = ""


def _day(value: date) -> str:
    return format_date(value, "EEEE d MMMM y", locale=babel_locale())


def view(sheet: HandoffSheet, timezone: str, association: str = "") -> SheetView:
    """The labels and dates of a sheet, in French, in this time zone."""
    filed = sheet.created_at.astimezone(ZoneInfo(timezone)).date()
    return SheetView(
        id=sheet.id,
        day=_day(filed),
        themes=[label(THEMES, code) for code in sheet.themes],
        organisations=[label(ORGANISATIONS, code) for code in sheet.organisations],
        autonomy=label(AUTONOMY, sheet.autonomy),
        outcome=label(OUTCOMES, sheet.outcome),
        outcome_code=sheet.outcome,
        actions_done=sheet.actions_done,
        next_steps=sheet.next_steps,
        orientation_partner=sheet.orientation_partner,
        orientation_contact=sheet.orientation_contact,
        follow_up_on=_day(sheet.follow_up_on) if sheet.follow_up_on else None,
        shared=sheet.shared_with_volunteers,
        association=association,
    )


async def association_name(db: AsyncSession, association_id: int) -> str:
    """The association's name, shown on the sheet."""
    association = await db.get(Association, association_id)
    return association.name if association is not None else ""
