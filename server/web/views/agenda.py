"""Staff pages around appointments: the volunteer's agenda, permanences and absences, motifs,
referrers (invited by the coordinator) and the referrer's own bookings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_date, format_datetime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import accounts, availability, booking, handoff, motifs
from server.i18n import DEFAULT_LOCALE, N_, _
from server.notify.appointments import ZONES, zone_label
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import (
    Appointment,
    AppointmentStatus,
    AssistanceSession,
    Role,
    SessionStatus,
    User,
    VisitKind,
)
from server.web.request import check_csrf, current_user, login_required, render

STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
# "Démarrer" opens the room (and so the beneficiary's link) up to this long before the start.
START_OPENS_BEFORE = timedelta(hours=1)
VIEWS = ("jour", "semaine")
WEEKDAYS = (
    N_("Lundi"),
    N_("Mardi"),
    N_("Mercredi"),
    N_("Jeudi"),
    N_("Vendredi"),
    N_("Samedi"),
    N_("Dimanche"),
)
STATUS_LABELS = {
    AppointmentStatus.BOOKED: N_("Prévu"),
    AppointmentStatus.CANCELLED: N_("Annulé"),
    AppointmentStatus.DONE: N_("Terminé"),
    AppointmentStatus.NO_SHOW: N_("Absent(e)"),
}
KIND_LABELS = {VisitKind.FIRST: N_("Première fois"), VisitKind.FOLLOW_UP: N_("Suivi")}
_HOUR = re.compile(r"\d{1,2}:\d{2}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class FormError(ValueError):
    """A form field that cannot be read (already translated French text)."""


def _user(request: web.Request) -> User:
    user = current_user(request)
    assert user is not None  # guaranteed by login_required
    return user


def _not_found(text: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=text, content_type="text/plain")


def _int_path(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise _not_found(_("Page introuvable.")) from None
    if not 0 < value < 2**31:
        raise _not_found(_("Page introuvable."))
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def day_label(day: date) -> str:
    """A local day in French, e.g. "Mardi 2 mars 2027"."""
    return _capitalized(format_date(day, "EEEE d MMMM y", locale=DEFAULT_LOCALE))


def hour_label(moment: datetime, tz: ZoneInfo) -> str:
    """An instant as local hours and minutes, e.g. "14:30"."""
    return format_datetime(moment, "HH:mm", tzinfo=tz, locale=DEFAULT_LOCALE)


MAX_DAYS_AWAY = 5 * 366


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
        raise FormError(_("Date invalide : choisissez-la dans le calendrier.")) from None
    if abs((day - date.today()).days) > MAX_DAYS_AWAY:
        # Far dates overflow time-zone arithmetic and mean nothing for a permanence.
        raise FormError(_("Choisissez une date dans les cinq ans qui viennent."))
    return day


def parse_hour(raw: str | None) -> time:
    """An HH:MM form value, or FormError."""
    value = (raw or "").strip()
    try:
        if not _HOUR.fullmatch(value):
            raise ValueError(value)
        return time.fromisoformat(value.zfill(5))
    except ValueError:
        raise FormError(_("Heure invalide : écrivez-la comme 14:00.")) from None


def _field(form: Mapping[str, Any], name: str, limit: int = 300) -> str:
    return str(form.get(name, ""))[:limit]


async def volunteer_zone(db: AsyncSession, default: str, volunteer_id: int) -> ZoneInfo:
    """The zone a volunteer's agenda is shown in: their first permanence's, else TIMEZONE."""
    permanences = await availability.list_availabilities(db, volunteer_id)
    return ZoneInfo(permanences[0].timezone if permanences else default)


# -- Agenda -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgendaQuery:
    """What the agenda shows: whose, which day, day or week."""

    day: date | None
    view: str
    volunteer_id: int | None

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> AgendaQuery:
        """From the query string (or the hidden fields of an agenda form)."""
        try:
            day = parse_day(_field(values, "jour", 20))
        except FormError:
            day = None
        view = _field(values, "vue", 20)
        raw_id = _field(values, "benevole", 12)
        return cls(
            day=day,
            view=view if view in VIEWS else "jour",
            volunteer_id=int(raw_id) if raw_id.isdigit() and 0 < int(raw_id) < 2**31 else None,
        )

    def url(self, day: date | None = None, view: str | None = None) -> str:
        """The agenda URL of this query, moved to another day or view."""
        params = {"jour": (day or self.day or date.today()).isoformat(), "vue": view or self.view}
        if self.volunteer_id is not None:
            params["benevole"] = str(self.volunteer_id)
        return "/agenda?" + urlencode(params)


def _needs(appointment: Appointment) -> list[str]:
    needs = booking.Needs.from_json(appointment.needs)
    shown = []
    if needs.interpreter_language:
        shown.append(_("Interprète : %(language)s") % {"language": needs.interpreter_language})
    if needs.hearing:
        shown.append(_("Malentendant(e)"))
    if needs.first_time_computer:
        shown.append(_("Première fois sur un ordinateur"))
    return shown


def _row(
    appointment: Appointment,
    motif_names: Mapping[int, str],
    tz: ZoneInfo,
    viewer: User,
    now: datetime,
) -> dict[str, Any]:
    booked = appointment.status == AppointmentStatus.BOOKED
    return {
        "id": appointment.id,
        "hours": f"{hour_label(appointment.starts_at, tz)}–{hour_label(appointment.ends_at, tz)}",
        "motif": motif_names.get(appointment.motif_id, "?"),
        "first_name": appointment.first_name,
        "kind": _(KIND_LABELS[appointment.kind]),
        "first_visit": appointment.kind is VisitKind.FIRST,
        "needs": _needs(appointment),
        "description": appointment.description,
        "status": appointment.status.value,
        "status_label": _(STATUS_LABELS[appointment.status]),
        "referred": appointment.booked_via == "referrer",
        "can_start": booked
        and appointment.volunteer_id == viewer.id
        and now < appointment.ends_at + booking.SESSION_GRACE_AFTER_END,
        "can_no_show": booked and now >= appointment.starts_at,
    }


async def _agenda_context(
    request: web.Request, query: AgendaQuery, now: datetime
) -> dict[str, Any]:
    viewer = _user(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY]() as db:
        volunteer = viewer
        if query.volunteer_id is not None and query.volunteer_id != viewer.id:
            other = await db.get(User, query.volunteer_id)
            if (
                viewer.role != Role.COORDINATOR
                or other is None
                or other.association_id != viewer.association_id
                or other.role not in STAFF
            ):
                raise _not_found(_("Ce bénévole n'existe pas dans votre association."))
            volunteer = other
        tz = await volunteer_zone(db, settings.timezone, volunteer.id)
        day = query.day or now.astimezone(tz).date()
        first = day - timedelta(days=day.weekday()) if query.view == "semaine" else day
        length = 7 if query.view == "semaine" else 1
        appointments = await booking.appointments_for_volunteer(
            db,
            volunteer.id,
            availability.local_midnight(first, tz),
            availability.local_midnight(first + timedelta(days=length), tz),
            include_cancelled=True,
        )
        motif_names = {m.id: m.name for m in await motifs.list_motifs(db, viewer.association_id)}
        team: list[User] = []
        if viewer.role == Role.COORDINATOR:
            team = [
                member
                for member in await accounts.list_members(db, viewer.association_id)
                if member.role in STAFF and member.is_active
            ]
    today = now.astimezone(tz).date()
    days: list[dict[str, Any]] = []
    count = 0
    for offset in range(length):
        current = first + timedelta(days=offset)
        rows = [
            _row(appointment, motif_names, tz, viewer, now)
            for appointment in appointments
            if appointment.starts_at.astimezone(tz).date() == current
        ]
        count += len(rows)
        days.append({"label": day_label(current), "today": current == today, "rows": rows})
    step = timedelta(days=length)
    query = AgendaQuery(day, query.view, query.volunteer_id)
    return {
        "query": query,
        "volunteer": volunteer,
        "own": volunteer.id == viewer.id,
        "team": team,
        "days": days,
        "count": count,
        "zone": zone_label(tz.key),
        "title": day_label(day)
        if query.view == "jour"
        else _("Semaine du %(day)s") % {"day": day_label(first)},
        "previous_url": query.url(day - step),
        "next_url": query.url(day + step),
        "today_url": query.url(today),
        "day_url": query.url(view="jour"),
        "week_url": query.url(view="semaine"),
        "error": None,
    }


@login_required(*STAFF)
async def agenda(request: web.Request) -> web.StreamResponse:
    """The volunteer's appointments for one day or one week, in their own time zone."""
    context = await _agenda_context(request, AgendaQuery.read(request.query), _now())
    return render(request, "agenda/agenda.html", context)


async def _own_appointment(db: AsyncSession, user: User, appointment_id: str) -> Appointment:
    appointment = await db.get(Appointment, appointment_id) if len(appointment_id) <= 36 else None
    if appointment is None or appointment.association_id != user.association_id:
        raise _not_found(_("Rendez-vous introuvable."))
    return appointment


async def _agenda_error(
    request: web.Request, form: Mapping[str, Any], message: str
) -> web.StreamResponse:
    context = await _agenda_context(request, AgendaQuery.read(form), _now())
    context["error"] = message
    return render(request, "agenda/agenda.html", context, status=400)


@login_required(*STAFF)
async def start(request: web.Request) -> web.StreamResponse:
    """ "Démarrer": open the appointment's assistance room (the beneficiary's link goes live)."""
    form = await check_csrf(request)
    user = _user(request)
    now = _now()
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _own_appointment(db, user, request.match_info["appointment_id"])
        session = (
            await db.get(AssistanceSession, appointment.assistance_session_id)
            if appointment.assistance_session_id is not None
            else None
        )
    if appointment.volunteer_id != user.id:
        raise _not_found(_("Rendez-vous introuvable."))
    if appointment.status != AppointmentStatus.BOOKED:
        return await _agenda_error(request, form, _("Ce rendez-vous n'est plus prévu."))
    if session is None or session.status == SessionStatus.ENDED or now >= session.expires_at:
        return await _agenda_error(request, form, _("L'assistance de ce rendez-vous est terminée."))
    opens_at = appointment.starts_at - START_OPENS_BEFORE
    if now < opens_at:
        async with request.app[SESSIONMAKER_KEY]() as db:
            tz = await volunteer_zone(db, request.app[SETTINGS_KEY].timezone, user.id)
        return await _agenda_error(
            request,
            form,
            _("Trop tôt : vous pourrez démarrer ce rendez-vous le %(day)s à partir de %(hour)s.")
            % {"day": day_label(opens_at.astimezone(tz).date()), "hour": hour_label(opens_at, tz)},
        )
    raise web.HTTPSeeOther(location=f"/assistance/{session.id}")


@login_required(*STAFF)
async def no_show(request: web.Request) -> web.StreamResponse:
    """ "Absent(e)": the beneficiary did not come (only once the appointment has started)."""
    form = await check_csrf(request)
    user = _user(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await booking.mark_no_show(db, request.match_info["appointment_id"], user, _now())
    except booking.BookingError as exc:
        if exc.code in ("not_found", "forbidden"):
            raise _not_found(exc.message) from None
        return await _agenda_error(request, form, exc.message)
    raise web.HTTPSeeOther(location=AgendaQuery.read(form).url())


# -- Permanences and absences -----------------------------------------------------------------


async def _availability_page(
    request: web.Request, status: int = 200, **extra: Any
) -> web.StreamResponse:
    user = _user(request)
    settings = request.app[SETTINGS_KEY]
    now = _now()
    async with request.app[SESSIONMAKER_KEY]() as db:
        permanences = await availability.list_availabilities(db, user.id)
        tz = await volunteer_zone(db, settings.timezone, user.id)
        absences = await availability.list_exceptions(db, user.id, after=now)
    context: dict[str, Any] = {
        "permanences": [
            {
                "id": p.id,
                "weekday": _(WEEKDAYS[p.weekday]),
                "hours": f"{p.start_time:%H:%M}–{p.end_time:%H:%M}",
                "zone": zone_label(p.timezone),
                "valid_from": day_label(p.valid_from) if p.valid_from else None,
                "valid_until": day_label(p.valid_until) if p.valid_until else None,
            }
            for p in permanences
        ],
        "absences": [
            {
                "id": a.id,
                "first": day_label(a.starts_at.astimezone(tz).date()),
                # The stored end is the midnight after the last day.
                "last": day_label((a.ends_at - timedelta(microseconds=1)).astimezone(tz).date()),
                "reason": a.reason,
            }
            for a in absences
        ],
        "weekdays": [(index, _(name)) for index, name in enumerate(WEEKDAYS)],
        "zones": [(name, _(label)) for name, label in ZONES],
        "zone": zone_label(tz.key),
        "default_zone": tz.key,
        "form": {},
        "error": None,
        "absence_form": {},
        "absence_error": None,
    }
    context.update(extra)
    return render(request, "availability/availability.html", context, status)


@login_required(*STAFF)
async def availability_page(request: web.Request) -> web.StreamResponse:
    """The volunteer's weekly permanences and coming absences, with the forms to change them."""
    return await _availability_page(request)


def _hours_changed(request: web.Request) -> web.HTTPSeeOther:
    """Back to the permanences page (the queue's opening hours follow through OpeningChanged)."""
    return web.HTTPSeeOther(location=str(request.app.router["availability"].url_for()))


@login_required(*STAFF)
async def availability_add(request: web.Request) -> web.StreamResponse:
    """Publish a weekly permanence."""
    form = await check_csrf(request)
    fields = {name: _field(form, name, 80) for name in form if name != "csrf_token"}
    try:
        raw_weekday = _field(form, "weekday", 2)
        if not raw_weekday.isdigit():
            raise FormError(_("Choisissez le jour de la semaine."))
        start_time = parse_hour(_field(form, "start", 10))
        end_time = parse_hour(_field(form, "end", 10))
        valid_from = parse_day(_field(form, "valid_from", 20))
        valid_until = parse_day(_field(form, "valid_until", 20))
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await availability.add_availability(
                db,
                _user(request),
                weekday=int(raw_weekday),
                start_time=start_time,
                end_time=end_time,
                timezone=_field(form, "timezone", 64),
                valid_from=valid_from,
                valid_until=valid_until,
            )
    except (FormError, availability.AvailabilityError) as exc:
        return await _availability_page(request, 400, form=fields, error=str(exc))
    raise _hours_changed(request)


@login_required(*STAFF)
async def availability_delete(request: web.Request) -> web.StreamResponse:
    """Remove one of the volunteer's permanences (booked appointments stay booked)."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        deleted = await availability.delete_availability(
            db, _user(request).id, _int_path(request, "availability_id")
        )
    if not deleted:
        raise _not_found(_("Cette permanence n'existe pas."))
    raise _hours_changed(request)


@login_required(*STAFF)
async def absence_add(request: web.Request) -> web.StreamResponse:
    """Record an absence from one day to another, both included, in the volunteer's zone."""
    form = await check_csrf(request)
    user = _user(request)
    fields = {name: _field(form, name, 200) for name in form if name != "csrf_token"}
    try:
        first = parse_day(_field(form, "first_day", 20))
        last = parse_day(_field(form, "last_day", 20)) or first
        if first is None or last is None:
            raise FormError(_("Choisissez le premier jour de l'absence."))
        if last < first:
            raise FormError(_("Le dernier jour doit être après le premier jour."))
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            tz = await volunteer_zone(db, request.app[SETTINGS_KEY].timezone, user.id)
            starts_at, ends_at = availability.absence_range(first, last, tz)
            await availability.add_exception(
                db,
                user,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=_field(form, "reason", 200),
            )
    except (FormError, availability.AvailabilityError) as exc:
        return await _availability_page(request, 400, absence_form=fields, absence_error=str(exc))
    raise _hours_changed(request)


@login_required(*STAFF)
async def absence_delete(request: web.Request) -> web.StreamResponse:
    """Remove one of the volunteer's absences."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        deleted = await availability.delete_exception(
            db, _user(request).id, _int_path(request, "exception_id")
        )
    if not deleted:
        raise _not_found(_("Cette absence n'existe pas."))
    raise _hours_changed(request)


# -- Motifs (coordinator) ---------------------------------------------------------------------


async def _motifs_page(request: web.Request, status: int = 200, **extra: Any) -> web.StreamResponse:
    association_id = _user(request).association_id
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        # A new association starts from the default list rather than from an empty page.
        rows = await motifs.ensure_default_motifs(db, association_id)
    context: dict[str, Any] = {
        "motifs": rows,
        "min_minutes": motifs.MIN_MINUTES,
        "max_minutes": motifs.MAX_MINUTES,
        "step_minutes": motifs.STEP_MINUTES,
        "form": {},
        "error": None,
        "edit_error": None,
        "edited_id": None,
    }
    context.update(extra)
    return render(request, "motifs/motifs.html", context, status)


def _minutes(form: Mapping[str, Any], name: str) -> int:
    raw = _field(form, name, 6).strip()
    # Anything that is not a whole number gets validate_minutes' sentence (range and step).
    return int(raw) if raw.isdigit() else -1


@login_required(Role.COORDINATOR)
async def motifs_page(request: web.Request) -> web.StreamResponse:
    """The association's motifs with their visit lengths, and the forms to change them."""
    return await _motifs_page(request)


@login_required(Role.COORDINATOR)
async def motif_create(request: web.Request) -> web.StreamResponse:
    """Add a motif at the end of the list."""
    form = await check_csrf(request)
    fields = {name: _field(form, name, 400) for name in form if name != "csrf_token"}
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await motifs.create_motif(
                db,
                _user(request).association_id,
                name=_field(form, "name", 200),
                description=_field(form, "description", 400),
                first_visit_minutes=_minutes(form, "first_visit_minutes"),
                follow_up_minutes=_minutes(form, "follow_up_minutes"),
            )
    except motifs.MotifError as exc:
        return await _motifs_page(request, 400, form=fields, error=str(exc))
    raise web.HTTPSeeOther(location="/motifs")


@login_required(Role.COORDINATOR)
async def motif_update(request: web.Request) -> web.StreamResponse:
    """Change a motif's name, description and visit lengths."""
    form = await check_csrf(request)
    motif_id = _int_path(request, "motif_id")
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            motif = await motifs.update_motif(
                db,
                _user(request).association_id,
                motif_id,
                name=_field(form, "name", 200),
                description=_field(form, "description", 400),
                first_visit_minutes=_minutes(form, "first_visit_minutes"),
                follow_up_minutes=_minutes(form, "follow_up_minutes"),
            )
    except motifs.MotifError as exc:
        return await _motifs_page(request, 400, edit_error=str(exc), edited_id=motif_id)
    if motif is None:
        raise _not_found(_("Ce motif n'existe pas."))
    raise web.HTTPSeeOther(location="/motifs")


async def _set_motif_active(request: web.Request, active: bool) -> web.StreamResponse:
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        changed = await motifs.set_motif_active(
            db, _user(request).association_id, _int_path(request, "motif_id"), active
        )
    if not changed:
        raise _not_found(_("Ce motif n'existe pas."))
    raise web.HTTPSeeOther(location="/motifs")


@login_required(Role.COORDINATOR)
async def motif_deactivate(request: web.Request) -> web.StreamResponse:
    """Stop offering a motif for booking; its appointments stay."""
    return await _set_motif_active(request, False)


@login_required(Role.COORDINATOR)
async def motif_reactivate(request: web.Request) -> web.StreamResponse:
    """Offer a motif for booking again."""
    return await _set_motif_active(request, True)


# -- Referrers --------------------------------------------------------------------------------


async def _referrers_page(
    request: web.Request, status: int = 200, **extra: Any
) -> web.StreamResponse:
    association_id = _user(request).association_id
    async with request.app[SESSIONMAKER_KEY]() as db:
        referrers = await accounts.list_referrers(db, association_id)
    context: dict[str, Any] = {
        "referrers": referrers,
        "form": {},
        "error": None,
        "invitation_link": None,
        "invited": None,
    }
    context.update(extra)
    return render(request, "referrers/referrers.html", context, status)


@login_required(Role.COORDINATOR)
async def referrers_page(request: web.Request) -> web.StreamResponse:
    """The association's referrers (social workers of partner structures)."""
    return await _referrers_page(request)


@login_required(Role.COORDINATOR)
async def referrer_invite(request: web.Request) -> web.StreamResponse:
    """Create a referrer account and show the one-time invitation link to send them."""
    form = await check_csrf(request)
    fields = {name: _field(form, name, 300) for name in form if name != "csrf_token"}
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            invitation = await accounts.invite_referrer(
                db,
                _user(request),
                email=_field(form, "email"),
                name=_field(form, "name", 200),
                partner_name=_field(form, "partner", 300),
            )
    except accounts.AccountError as exc:
        return await _referrers_page(request, 400, error=str(exc), form=fields)
    link = request.app[SETTINGS_KEY].url(f"/invitation/{invitation.token}")
    return await _referrers_page(request, invitation_link=link, invited=invitation.user)


async def _set_referrer_active(request: web.Request, active: bool) -> web.StreamResponse:
    await check_csrf(request)
    coordinator = _user(request)
    user_id = _int_path(request, "user_id")
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        referrer = await db.scalar(
            select(User).where(
                User.id == user_id,
                User.association_id == coordinator.association_id,
                User.role == Role.REFERRER,
            )
        )
        if referrer is None:
            raise _not_found(_("Ce référent n'existe pas dans votre association."))
        if active:
            await accounts.reactivate(db, coordinator, user_id)
        else:
            await accounts.deactivate(db, coordinator, user_id)
    raise web.HTTPSeeOther(location="/referents")


@login_required(Role.COORDINATOR)
async def referrer_deactivate(request: web.Request) -> web.StreamResponse:
    """Deactivate a referrer: they can no longer log in or book; their bookings stay."""
    return await _set_referrer_active(request, False)


@login_required(Role.COORDINATOR)
async def referrer_reactivate(request: web.Request) -> web.StreamResponse:
    """Give a deactivated referrer their access back."""
    return await _set_referrer_active(request, True)


@login_required(Role.REFERRER, Role.COORDINATOR)
async def my_bookings(request: web.Request) -> web.StreamResponse:
    """The appointments this referrer booked for the people they follow, and their status."""
    user = _user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointments = await booking.appointments_for_referrer(db, user.id)
        names: dict[int, str] = {
            m.id: m.name for m in await motifs.list_motifs(db, user.association_id)
        }
        with_sheet = await handoff.session_ids_with_sheets(
            db, [a.assistance_session_id for a in appointments if a.assistance_session_id]
        )
    rows = []
    for appointment in appointments:
        tz = ZoneInfo(appointment.display_timezone)
        rows.append(
            {
                "day": day_label(appointment.starts_at.astimezone(tz).date()),
                "hour": hour_label(appointment.starts_at, tz),
                "zone": zone_label(tz.key) if tz.key != "Europe/Paris" else None,
                "first_name": appointment.first_name,
                "motif": names.get(appointment.motif_id, "?"),
                "kind": _(KIND_LABELS[appointment.kind]),
                "status": appointment.status.value,
                "status_label": _(STATUS_LABELS[appointment.status]),
                "sheet_url": f"/mes-reservations/{appointment.id}/fiche"
                if appointment.assistance_session_id in with_sheet
                else None,
            }
        )
    return render(request, "referrers/my_bookings.html", {"rows": rows})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_get("/agenda", agenda, name="agenda")
    router.add_post("/agenda/{appointment_id}/demarrer", start, name="agenda-start")
    router.add_post("/agenda/{appointment_id}/absent", no_show, name="agenda-no-show")
    router.add_get("/disponibilites", availability_page, name="availability")
    router.add_post("/disponibilites", availability_add, name="availability-add")
    router.add_post(
        "/disponibilites/{availability_id}/supprimer",
        availability_delete,
        name="availability-delete",
    )
    router.add_post("/disponibilites/absences", absence_add, name="absence-add")
    router.add_post(
        "/disponibilites/absences/{exception_id}/supprimer", absence_delete, name="absence-delete"
    )
    router.add_get("/motifs", motifs_page, name="motifs")
    router.add_post("/motifs", motif_create, name="motifs-create")
    router.add_post("/motifs/{motif_id}", motif_update, name="motifs-update")
    router.add_post("/motifs/{motif_id}/desactiver", motif_deactivate, name="motifs-deactivate")
    router.add_post("/motifs/{motif_id}/reactiver", motif_reactivate, name="motifs-reactivate")
    router.add_get("/referents", referrers_page, name="referrers")
    router.add_post("/referents", referrer_invite, name="referrers-invite")
    router.add_post(
        "/referents/{user_id}/desactiver", referrer_deactivate, name="referrers-deactivate"
    )
    router.add_post(
        "/referents/{user_id}/reactiver", referrer_reactivate, name="referrers-reactivate"
    )
    router.add_get("/mes-reservations", my_bookings, name="my-bookings")
