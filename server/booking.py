"""Appointments: booking without account, manage link, cancel, reschedule, agenda, waitlist.

No double booking: an appointment holds one AppointmentUnit row per UNIT_MINUTES of its visit
plus buffer, and the (volunteer_id, unit_start) primary key refuses a second holder on every
database. `book()` tries the free volunteers one after the other, each in a SAVEPOINT, and moves
on when the insert of the units hits that key.

A person who asked for a volunteer speaking their language (``LanguageChoice``,
server/matching.py) is offered the slots of the volunteers who declared it
(``availability.find_slots(language=…)``), and `book()` tries those volunteers first: the
appointment goes to one of them whenever one is free at that time, else to anyone free then
(the pages offer every slot, and say so, when no speaker has one).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist
from server.availability import (
    UNIT,
    booking_window,
    local_midnight,
    occupied_span,
    search,
)
from server.availability import UNIT_MINUTES as UNIT_MINUTES
from server.contact import ContactError, ContactInfo, normalize_phone
from server.errors import DomainError, Kind
from server.events import RoomEnded, publish
from server.i18n import N_, _
from server.matching import FRENCH_ONLY, LanguageChoice
from server.motifs import duration_for, get_motif
from server.settings import Settings
from server.stats.events import EventKind, record
from server.store.engine import begin_write
from server.store.models import (
    Appointment,
    AppointmentStatus,
    AppointmentUnit,
    AssistanceSession,
    Association,
    Motif,
    Role,
    SessionStatus,
    User,
    UserLanguage,
    VisitKind,
    WaitlistEntry,
)
from server.tokens import sha256_hex

VIA = ("public", "referrer", "api")
JOIN_OPENS_BEFORE = assist.JOIN_OPENS_BEFORE
SESSION_GRACE_AFTER_END = timedelta(minutes=30)
MANAGE_TOKEN_MAX = 128
WAITLIST_BATCH = 5
STATUS_LABELS = {
    AppointmentStatus.BOOKED: N_("Prévu"),
    AppointmentStatus.CANCELLED: N_("Annulé"),
    AppointmentStatus.DONE: N_("Terminé"),
    AppointmentStatus.NO_SHOW: N_("Absent(e)"),
}
KIND_LABELS = {VisitKind.FIRST: N_("Première fois"), VisitKind.FOLLOW_UP: N_("Suivi")}


class BookingError(DomainError):
    """A refused booking, cancellation, move or no-show."""


def _validated(contact: ContactInfo, settings: Settings) -> ContactInfo:
    """The contact details checked; a refusal is the booking's (callers catch BookingError)."""
    try:
        return contact.validated(settings.timezone, settings.phone_regions)
    except ContactError as exc:
        raise BookingError(exc.code, exc.message, exc.field, kind=exc.kind) from exc


def _slot_taken() -> BookingError:
    return BookingError(
        "slot_taken",
        _("Ce créneau vient d'être pris. Choisissez un autre horaire."),
        kind=Kind.CONFLICT,
    )


def _already_cancelled() -> BookingError:
    return BookingError(
        "already_cancelled", _("Ce rendez-vous est déjà annulé."), kind=Kind.CONFLICT
    )


def _too_late() -> BookingError:
    return BookingError(
        "too_late",
        _("Ce rendez-vous est passé : il ne peut plus être changé."),
        kind=Kind.CONFLICT,
    )


# -- Units and the join window ----------------------------------------------------------------


def units_for(start: datetime, end: datetime, buffer: timedelta) -> list[datetime]:
    """The unit starts an appointment holds: its visit plus buffer, on the UNIT_MINUTES grid."""
    first, last = occupied_span(start, end, buffer)
    count = (last - first) // UNIT
    return [first + index * UNIT for index in range(count)]


def join_opens_at(appointment: Appointment) -> datetime:
    """From when the join link and code let the beneficiary in."""
    return appointment.starts_at - JOIN_OPENS_BEFORE


def can_join(appointment: Appointment, session: AssistanceSession, now: datetime) -> bool:
    """The beneficiary may enter: 15 min before the start, or earlier once the volunteer is in."""
    if appointment.status != AppointmentStatus.BOOKED or session.status == SessionStatus.ENDED:
        return False
    if now >= session.expires_at:
        return False
    return now >= join_opens_at(appointment) or session.volunteer_sid is not None


async def appointment_for_session(db: AsyncSession, session_id: str) -> Appointment | None:
    """The appointment an assistance session was created for, if any (join pages check times)."""
    return await db.scalar(
        select(Appointment).where(Appointment.assistance_session_id == session_id)
    )


def _fit_session_to_appointment(
    settings: Settings, session: AssistanceSession, appointment: Appointment
) -> None:
    """Move the session's lifetime and code validity from "now" to the appointment's time."""
    # create_session() sizes a session for an assistance starting now (SESSION_TTL_HOURS, code
    # CODE_TTL_MINUTES): both would be dead by the appointment. The session lives
    # SESSION_TTL_HOURS from the start (at least until 30 min after the end) and the code until
    # the planned end, so the code printed on the confirmation stays reserved for it.
    session.expires_at = max(
        appointment.starts_at + timedelta(hours=settings.session_ttl_hours),
        appointment.ends_at + SESSION_GRACE_AFTER_END,
    )
    session.code_expires_at = appointment.ends_at


# -- Booking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Booked:
    """A confirmed appointment and what the confirmation shows (the raw manage token once)."""

    appointment: Appointment
    session: AssistanceSession
    manage_token: str
    join_url: str
    code: str
    motif_name: str  # the confirmation names both, read before the write lock
    association_name: str


async def _least_loaded_first(
    db: AsyncSession, settings: Settings, volunteer_ids: Iterable[int], starts_at: datetime
) -> list[int]:
    """Volunteers by number of appointments that local day, ties in random order."""
    ids = list(volunteer_ids)
    tz = ZoneInfo(settings.timezone)
    day = starts_at.astimezone(tz).date()
    rows = await db.execute(
        select(Appointment.volunteer_id, func.count())
        .where(
            Appointment.volunteer_id.in_(ids),
            Appointment.status == AppointmentStatus.BOOKED,
            Appointment.starts_at >= local_midnight(day, tz),
            Appointment.starts_at < local_midnight(day + timedelta(days=1), tz),
        )
        .group_by(Appointment.volunteer_id)
    )
    counts = {volunteer_id: number for volunteer_id, number in rows}
    random.shuffle(ids)  # spreads equal loads, and concurrent bookings start on different people
    return sorted(ids, key=lambda volunteer_id: counts.get(volunteer_id, 0))


async def _speakers_first(db: AsyncSession, volunteer_ids: list[int], language: str) -> list[int]:
    """The same volunteers, those who speak ``language`` first (each group keeps its order)."""
    speakers = set(
        await db.scalars(
            select(UserLanguage.user_id).where(
                UserLanguage.user_id.in_(volunteer_ids), UserLanguage.language == language
            )
        )
    )
    return [v for v in volunteer_ids if v in speakers] + [
        v for v in volunteer_ids if v not in speakers
    ]


async def _holding_units(
    db: AsyncSession, volunteer_ids: Iterable[int], units: list[datetime]
) -> set[int]:
    """Who among these volunteers holds any of these units (is booked then, buffer included)."""
    rows = await db.scalars(
        select(AppointmentUnit.volunteer_id)
        .where(
            AppointmentUnit.volunteer_id.in_(list(volunteer_ids)),
            AppointmentUnit.unit_start >= units[0],
            AppointmentUnit.unit_start <= units[-1],
        )
        .distinct()
    )
    return set(rows)


class _UnitsTaken(Exception):
    """The chosen volunteer's units were taken in the meantime."""


async def book(
    db: AsyncSession,
    settings: Settings,
    *,
    association_id: int,
    motif_id: int,
    kind: VisitKind | str,
    starts_at: datetime,
    contact: ContactInfo,
    via: str,
    referrer: User | None = None,
    now: datetime,
    motif: Motif | None = None,
    language: LanguageChoice = FRENCH_ONLY,
) -> Booked:
    """Book a visit at `starts_at` with a free volunteer, in the caller's transaction.

    ``motif``: the motif ``motif_id`` when the caller already read it in this transaction
    (it is not read again). ``language``: the language the booking is made in (its messages
    use it) and whether the person asked for a volunteer speaking it (tried first)."""
    if motif is not None and (motif.id != motif_id or motif.association_id != association_id):
        raise ValueError("motif must be the association's motif motif_id")
    if referrer is not None and (
        referrer.role not in (Role.REFERRER, Role.COORDINATOR)
        or referrer.association_id != association_id
        or not referrer.is_active
    ):
        raise ValueError("referrer must be an active referrer or coordinator of the association")
    if via == "referrer" and referrer is None:
        raise ValueError('via="referrer" needs the referrer account')
    return await _book(
        db,
        settings,
        association_id=association_id,
        motif_id=motif_id,
        kind=kind,
        starts_at=starts_at,
        contact=contact,
        via=via,
        referrer_id=referrer.id if referrer is not None else None,
        now=now,
        manage_token=secrets.token_urlsafe(32),
        event=EventKind.APPOINTMENT_BOOKED,
        motif=motif,
        language=language,
    )


async def _book(
    db: AsyncSession,
    settings: Settings,
    *,
    association_id: int,
    motif_id: int,
    kind: VisitKind | str,
    starts_at: datetime,
    contact: ContactInfo,
    via: str,
    referrer_id: int | None,
    now: datetime,
    manage_token: str,
    event: EventKind,
    motif: Motif | None = None,
    language: LanguageChoice = FRENCH_ONLY,
) -> Booked:
    if starts_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("starts_at and now must be timezone-aware")
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}, got {via!r}")
    try:
        kind = VisitKind(kind)
    except ValueError as exc:
        raise BookingError("invalid_kind", _("Type de rendez-vous inconnu."), "kind") from exc
    contact = _validated(contact, settings)
    earliest, latest = booking_window(settings, now)
    if starts_at <= now:
        raise BookingError(
            "past", _("Ce créneau est déjà passé. Choisissez un autre horaire."), "starts_at"
        )
    if starts_at < earliest:
        raise BookingError(
            "too_soon",
            _("Ce créneau commence trop tôt. Choisissez un horaire plus tard."),
            "starts_at",
        )
    if starts_at > latest:
        raise BookingError(
            "too_far",
            _("Ce créneau est trop loin. On peut réserver jusqu'à %(n)d jours à l'avance.")
            % {"n": settings.booking_horizon_days},
            "starts_at",
        )
    if motif is None:
        motif = await get_motif(db, association_id, motif_id)
    if motif is None or not motif.is_active:
        raise BookingError(
            "motif_unavailable",
            _("Ce motif n'est plus proposé. Choisissez un autre motif."),
            kind=Kind.CONFLICT,
        )
    duration = duration_for(motif, kind)
    ends_at = starts_at + duration
    buffer = timedelta(minutes=settings.booking_buffer_minutes)

    # Reads that need no lock come first: who offers this start (permanences, absences), their
    # load that day, their accounts and the association (the confirmation names it). On SQLite
    # every other writer waits while this one holds the write lock, and each statement under it
    # costs a trip to SQLite's thread and back through a busy event loop.
    offers = await search(
        db, settings, association_id, duration, starts_at, starts_at + UNIT, with_booked=False
    )
    offered = offers.offered_at(starts_at)
    if not offered:
        raise BookingError(
            "outside_availability",
            _("Personne n'est disponible à cet horaire. Choisissez un créneau de la liste."),
            "starts_at",
        )
    candidates = await _least_loaded_first(db, settings, offered, starts_at)
    if language.wanted:
        candidates = await _speakers_first(db, candidates, language.language)
    accounts = {
        user.id: user for user in await db.scalars(select(User).where(User.id.in_(candidates)))
    }
    association = await db.get_one(Association, association_id)
    units = units_for(starts_at, ends_at, buffer)

    await begin_write(db)
    # Everything below is undone together if anything fails, even if the caller catches the
    # error and commits: a refused booking leaves nothing behind.
    async with db.begin_nested():
        busy = await _holding_units(db, candidates, units)
        free = [volunteer_id for volunteer_id in candidates if volunteer_id not in busy]
        if not free:
            raise _slot_taken()
        for volunteer_id in free:
            appointment = Appointment(
                association_id=association_id,
                volunteer_id=volunteer_id,
                motif_id=motif.id,
                kind=kind,
                starts_at=starts_at,
                ends_at=ends_at,
                status=AppointmentStatus.BOOKED,
                first_name=contact.first_name,
                phone=contact.phone,
                email=contact.email,
                postal_code=contact.postal_code,
                description=contact.description,
                needs=contact.needs.as_json(),
                display_timezone=contact.timezone,
                language=language.language,
                language_wanted=language.wanted,
                booked_via=via,
                referrer_id=referrer_id,
                manage_token_hash=sha256_hex(manage_token),
                created_at=now,
            )
            try:
                async with db.begin_nested():
                    db.add(appointment)
                    await db.flush()
                    try:
                        await db.execute(
                            insert(AppointmentUnit),
                            [
                                {
                                    "volunteer_id": volunteer_id,
                                    "unit_start": unit,
                                    "appointment_id": appointment.id,
                                }
                                for unit in units
                            ],
                        )
                    except IntegrityError as exc:
                        raise _UnitsTaken from exc
            except _UnitsTaken:
                continue
            break
        else:
            raise _slot_taken()

        volunteer = accounts[volunteer_id]
        session = await assist.create_session(
            db, settings, volunteer, channel="appointment", record_created=False
        )
        _fit_session_to_appointment(settings, session, appointment)
        appointment.assistance_session_id = session.id
        await db.flush()
        stat = await record(
            db,
            event,
            session,
            postal_code=appointment.postal_code,
            language=appointment.language,
            language_wanted=appointment.language_wanted,
        )
        if event is EventKind.APPOINTMENT_BOOKED:
            stat.channel = via
    assert session.code_salt is not None  # create_session always assigns a code
    return Booked(
        appointment=appointment,
        session=session,
        manage_token=manage_token,
        join_url=assist.link_for(settings, session),
        code=assist.current_code(settings, session) or "",
        motif_name=motif.name,
        association_name=association.name,
    )


async def find_by_manage_token(db: AsyncSession, manage_token: str) -> Appointment | None:
    """The appointment behind a manage link, whatever its status, or None."""
    if not manage_token or len(manage_token) > MANAGE_TOKEN_MAX:
        return None
    return await db.scalar(
        select(Appointment).where(Appointment.manage_token_hash == sha256_hex(manage_token))
    )


def _check_changeable(appointment: Appointment, now: datetime) -> None:
    """Only a booked appointment that has not started can be cancelled or moved."""
    if appointment.status == AppointmentStatus.CANCELLED:
        raise _already_cancelled()
    if appointment.status != AppointmentStatus.BOOKED or appointment.starts_at <= now:
        raise _too_late()


async def _managed(db: AsyncSession, manage_token: str, now: datetime) -> Appointment:
    """The booked, future appointment behind a manage link, or the reason it cannot be changed."""
    appointment = await find_by_manage_token(db, manage_token)
    if appointment is None:
        raise BookingError(
            "not_found",
            _("Ce lien ne marche pas. Vérifiez le lien reçu ou appelez l'association."),
            kind=Kind.NOT_FOUND,
        )
    _check_changeable(appointment, now)
    return appointment


async def _close(db: AsyncSession, appointment: Appointment, now: datetime) -> None:
    """Mark a booked appointment cancelled, free its units and close its assistance session."""
    cancelled = await db.execute(
        update(Appointment)
        .where(Appointment.id == appointment.id, Appointment.status == AppointmentStatus.BOOKED)
        .values(status=AppointmentStatus.CANCELLED, cancelled_at=now)
        .returning(Appointment.id)
        .execution_options(synchronize_session="fetch")
    )
    if cancelled.scalar_one_or_none() is None:  # a concurrent cancel got there first
        raise _already_cancelled()
    await db.execute(
        delete(AppointmentUnit).where(AppointmentUnit.appointment_id == appointment.id)
    )
    if appointment.assistance_session_id is not None:
        session = await db.get(AssistanceSession, appointment.assistance_session_id)
        if session is not None and session.status != SessionStatus.ENDED:
            # Not assist.end_session(): that would count an abandoned assist.
            session.status = SessionStatus.ENDED
            session.ended_at = now
            session.end_reason = "cancelled"
            session.code_hash = None  # frees the code for others
            publish(db, RoomEnded(session.id, "cancelled"))  # a volunteer already in the room


async def cancel(db: AsyncSession, manage_token: str, now: datetime) -> Appointment:
    """Cancel through the manage link; the slot is bookable again as soon as this commits."""
    appointment = await _managed(db, manage_token, now)
    await _cancel_booked(db, appointment, now)
    return appointment


async def _cancel_booked(db: AsyncSession, appointment: Appointment, now: datetime) -> None:
    """Cancel a checked appointment and count it, all or nothing."""
    await begin_write(db)
    async with db.begin_nested():
        await _close(db, appointment, now)
        stat = await record(
            db,
            EventKind.APPOINTMENT_CANCELLED,
            language=appointment.language,
            language_wanted=appointment.language_wanted,
        )
        stat.association_id = appointment.association_id
        stat.session_id = appointment.assistance_session_id


async def reschedule(
    db: AsyncSession, settings: Settings, manage_token: str, new_start: datetime, now: datetime
) -> Booked:
    """Move an appointment: book the new time, then cancel the old one, all or nothing."""
    # The manage link keeps working: its hash moves to the new appointment. The join link and
    # code change (the new time may be with another volunteer); the new confirmation gives them.
    old = await _managed(db, manage_token, now)
    if new_start == old.starts_at:
        raise BookingError("same_slot", _("Votre rendez-vous est déjà à cet horaire."))
    await begin_write(db)
    async with db.begin_nested():
        # Free the old units first so that a move within the volunteer's own time can succeed;
        # if the new booking fails, the savepoint puts them back.
        await db.execute(delete(AppointmentUnit).where(AppointmentUnit.appointment_id == old.id))
        booked = await _book(
            db,
            settings,
            association_id=old.association_id,
            motif_id=old.motif_id,
            kind=old.kind,
            starts_at=new_start,
            contact=ContactInfo.of(old),
            via=old.booked_via,
            referrer_id=old.referrer_id,
            now=now,
            manage_token=secrets.token_urlsafe(32),
            event=EventKind.APPOINTMENT_RESCHEDULED,
            language=LanguageChoice.of(old.language, old.language_wanted),
        )
        await _close(db, old, now)
        old.moved_to_id = booked.appointment.id
        # A wish for an earlier slot follows the booking to its new time.
        await db.execute(
            update(WaitlistEntry)
            .where(WaitlistEntry.appointment_id == old.id, WaitlistEntry.notified_at.is_(None))
            .values(appointment_id=booked.appointment.id, earlier_than=booked.appointment.starts_at)
        )
        # Hand the manage link over: the old row gets an unguessable, unused hash.
        old.manage_token_hash = sha256_hex(f"moved:{old.id}:{secrets.token_hex(16)}")
        await db.flush()
        booked.appointment.manage_token_hash = sha256_hex(manage_token)
        await db.flush()
    return replace(booked, manage_token=manage_token)


# -- Agenda, referrers, no-shows --------------------------------------------------------------


async def appointments_for_volunteer(
    db: AsyncSession,
    volunteer_id: int,
    start: datetime,
    end: datetime,
    *,
    include_cancelled: bool = False,
) -> list[Appointment]:
    """A volunteer's appointments starting in [start, end), for the day and week agenda."""
    query = select(Appointment).where(
        Appointment.volunteer_id == volunteer_id,
        Appointment.starts_at >= start,
        Appointment.starts_at < end,
    )
    if not include_cancelled:
        query = query.where(Appointment.status != AppointmentStatus.CANCELLED)
    rows = await db.scalars(query.order_by(Appointment.starts_at))
    return list(rows)


async def appointments_for_referrer(db: AsyncSession, referrer_id: int) -> list[Appointment]:
    """The appointments this referrer booked (only theirs), newest first, every status; a moved
    appointment appears once, at its new time."""
    rows = await db.scalars(
        select(Appointment)
        .where(Appointment.referrer_id == referrer_id, Appointment.moved_to_id.is_(None))
        .order_by(Appointment.starts_at.desc())
    )
    return list(rows)


async def mark_no_show(
    db: AsyncSession, appointment_id: str, by: User, now: datetime
) -> Appointment:
    """The beneficiary did not come: their volunteer (or a coordinator) says so after the start."""
    appointment = await db.get(Appointment, appointment_id)
    if appointment is None or appointment.association_id != by.association_id:
        raise BookingError("not_found", _("Rendez-vous introuvable."), kind=Kind.NOT_FOUND)
    if appointment.volunteer_id != by.id and by.role != Role.COORDINATOR:
        # Not found rather than forbidden, as for a stranger: a volunteer's agenda never shows
        # a colleague's appointments.
        raise BookingError(
            "forbidden",
            _("Ce rendez-vous est celui d'un autre bénévole."),
            kind=Kind.NOT_FOUND,
        )
    if appointment.status != AppointmentStatus.BOOKED:
        raise BookingError("not_booked", _("Ce rendez-vous n'est plus prévu."))
    if now < appointment.starts_at:
        raise BookingError("too_early", _("Le rendez-vous n'a pas encore commencé."))
    # Conditional update: a double click counts one no-show, not two.
    changed = await db.execute(
        update(Appointment)
        .where(Appointment.id == appointment.id, Appointment.status == AppointmentStatus.BOOKED)
        .values(status=AppointmentStatus.NO_SHOW)
        .returning(Appointment.id)
        .execution_options(synchronize_session="fetch")
    )
    if changed.scalar_one_or_none() is None:
        raise BookingError("not_booked", _("Ce rendez-vous n'est plus prévu."))
    stat = await record(
        db,
        EventKind.NO_SHOW,
        language=appointment.language,
        language_wanted=appointment.language_wanted,
    )
    stat.association_id = appointment.association_id
    stat.session_id = appointment.assistance_session_id
    return appointment


# -- Waitlist ---------------------------------------------------------------------------------


async def join_waitlist(
    db: AsyncSession,
    settings: Settings,
    *,
    association_id: int,
    motif_id: int,
    contact: ContactInfo,
    earlier_than: datetime | None = None,
    manage_token: str | None = None,
    now: datetime,
    language: LanguageChoice = FRENCH_ONLY,
) -> WaitlistEntry:
    """Ask to be told when a slot frees up (before `earlier_than`, or before one's booking).
    ``language``: the language of the page (the message is written in it); through a manage
    link, the booking's."""
    motif = await get_motif(db, association_id, motif_id)
    if motif is None or not motif.is_active:
        raise BookingError(
            "motif_unavailable",
            _("Ce motif n'est plus proposé. Choisissez un autre motif."),
            kind=Kind.CONFLICT,
        )
    appointment_id = None
    if manage_token is not None:
        appointment = await _managed(db, manage_token, now)
        if appointment.association_id != association_id or appointment.motif_id != motif_id:
            raise ValueError("the manage token belongs to another association or motif")
        appointment_id = appointment.id
        earlier_than = appointment.starts_at
        existing = await db.scalar(
            select(WaitlistEntry).where(
                WaitlistEntry.appointment_id == appointment_id, WaitlistEntry.notified_at.is_(None)
            )
        )
        if existing is not None:
            return existing
        contact = ContactInfo.of(appointment)
        language = LanguageChoice.of(appointment.language, appointment.language_wanted)
    contact = _validated(contact, settings)
    entry = WaitlistEntry(
        association_id=association_id,
        motif_id=motif_id,
        appointment_id=appointment_id,
        first_name=contact.first_name,
        phone=contact.phone,
        email=contact.email,
        earlier_than=earlier_than,
        timezone=contact.timezone or settings.timezone,
        language=language.language,
        created_at=now,
    )
    db.add(entry)
    await db.flush()
    stat = await record(
        db,
        EventKind.WAITLIST_JOINED,
        language=language.language,
        language_wanted=language.wanted,
    )
    stat.association_id = association_id
    return entry


async def waitlist_candidates_for_freed_slot(
    db: AsyncSession,
    appointment: Appointment,
    *,
    now: datetime | None = None,
    limit: int = WAITLIST_BATCH,
) -> list[WaitlistEntry]:
    """Who to tell that this appointment's slot is free: first come, first told, same motif."""
    if now is not None and appointment.starts_at <= now:
        return []
    own = Appointment.__table__.alias("own")
    rows = await db.scalars(
        select(WaitlistEntry)
        .outerjoin(own, own.c.id == WaitlistEntry.appointment_id)
        .where(
            WaitlistEntry.association_id == appointment.association_id,
            WaitlistEntry.motif_id == appointment.motif_id,
            WaitlistEntry.notified_at.is_(None),
            or_(
                WaitlistEntry.earlier_than.is_(None),
                WaitlistEntry.earlier_than > appointment.starts_at,
            ),
            or_(
                WaitlistEntry.appointment_id.is_(None),
                and_(
                    own.c.status == AppointmentStatus.BOOKED,
                    own.c.id != appointment.id,
                ),
            ),
        )
        .order_by(WaitlistEntry.created_at, WaitlistEntry.id)
        .limit(limit)
    )
    return list(rows)


async def mark_waitlist_notified(
    db: AsyncSession, entry_ids: Iterable[int], now: datetime
) -> list[int]:
    """Mark entries as told; returns those this call marked (a concurrent call gets the rest)."""
    ids = list(entry_ids)
    if not ids:
        return []
    result = await db.execute(
        update(WaitlistEntry)
        .where(WaitlistEntry.id.in_(ids), WaitlistEntry.notified_at.is_(None))
        .values(notified_at=now)
        .returning(WaitlistEntry.id)
        .execution_options(synchronize_session="fetch")
    )
    return sorted(result.scalars().all())


async def cancel_for_referrer(
    db: AsyncSession, appointment_id: str, referrer: User, now: datetime
) -> Appointment:
    """Cancel an appointment the referrer booked (the partner API has no manage link)."""
    appointment = await db.scalar(
        select(Appointment).where(
            Appointment.id == appointment_id, Appointment.referrer_id == referrer.id
        )
    )
    if appointment is None:
        raise BookingError(
            "not_found",
            _("Ce rendez-vous n'existe pas ou ne vous concerne pas."),
            kind=Kind.NOT_FOUND,
        )
    _check_changeable(appointment, now)
    await _cancel_booked(db, appointment, now)
    return appointment


async def recover_manage_link(
    db: AsyncSession, settings: Settings, code: str, phone: str, now: datetime
) -> tuple[Appointment, str] | None:
    """For someone who lost the manage link: the appointment's join code plus the phone it
    was booked with give a NEW manage token (the old link stops working). None if no match."""
    from server import assist

    try:
        wanted_phone = normalize_phone(phone)
    except ContactError:
        return None
    session = await assist.find_by_booked_code(db, settings, code)
    if session is None:
        return None
    appointment = await appointment_for_session(db, session.id)
    if (
        appointment is None
        or appointment.status != AppointmentStatus.BOOKED
        or appointment.ends_at <= now
        or appointment.phone is None
        or not secrets.compare_digest(appointment.phone, wanted_phone)
    ):
        return None
    token = secrets.token_urlsafe(32)
    appointment.manage_token_hash = sha256_hex(token)
    await db.flush()
    return appointment, token


async def beneficiary_may_enter(
    db: AsyncSession, session: AssistanceSession, now: datetime
) -> bool:
    """Whether a beneficiary may enter this session now: always for a plain assistance, from
    15 minutes before (or once the volunteer is in) for an appointment's session."""
    appointment = await appointment_for_session(db, session.id)
    return appointment is None or can_join(appointment, session, now)
