"""The volunteer's agenda: their appointments for a day or a week, in their own time zone,
with "Démarrer" (open the appointment's room) and "Absent(e)" (the person did not come).
Coordinators can look at a colleague's agenda."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from server import accounts, availability, booking, motifs
from server.booking import KIND_LABELS, STATUS_LABELS, BookingError
from server.contact import Needs
from server.errors import DomainError, Kind
from server.i18n import _
from server.integers import parse_int
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
from server.timezones import day_label, hour_label, zone_label
from server.web.forms import FormError, form_text, parse_day
from server.web.middlewares import status_of
from server.web.request import (
    check_csrf,
    login_required,
    render,
    required_user,
    see_other,
    url_for,
)

routes = web.RouteTableDef()

STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
# "Démarrer" opens the room (and so the beneficiary's link) up to this long before the start.
START_OPENS_BEFORE = timedelta(hours=1)
VIEWS = ("jour", "semaine")


def _now() -> datetime:
    return datetime.now(UTC)


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
            day = parse_day(form_text(values, "jour", 20))
        except FormError:
            day = None
        view = form_text(values, "vue", 20)
        raw_id = form_text(values, "benevole", 12)
        return cls(
            day=day,
            view=view if view in VIEWS else "jour",
            volunteer_id=parse_int(raw_id, 1),
        )

    def url(self, request: web.Request, day: date | None = None, view: str | None = None) -> str:
        """The agenda URL of this query, moved to another day or view."""
        params = {"jour": (day or self.day or date.today()).isoformat(), "vue": view or self.view}
        if self.volunteer_id is not None:
            params["benevole"] = str(self.volunteer_id)
        return url_for(request, "agenda", params)


def _needs(appointment: Appointment) -> list[str]:
    needs = Needs.from_json(appointment.needs)
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
    viewer = required_user(request)
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
                raise DomainError(
                    "not_found",
                    _("Ce bénévole n'existe pas dans votre association."),
                    kind=Kind.NOT_FOUND,
                )
            volunteer = other
        tz = await availability.volunteer_zone(db, volunteer.id, settings.timezone)
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
        "previous_url": query.url(request, day - step),
        "next_url": query.url(request, day + step),
        "today_url": query.url(request, today),
        "day_url": query.url(request, view="jour"),
        "week_url": query.url(request, view="semaine"),
        "error": None,
    }


@routes.get("/agenda", name="agenda")
@login_required(*STAFF)
async def agenda(request: web.Request) -> web.StreamResponse:
    """The volunteer's appointments for one day or one week, in their own time zone."""
    context = await _agenda_context(request, AgendaQuery.read(request.query), _now())
    return render(request, "agenda/agenda.html", context)


def _appointment_not_found() -> BookingError:
    return BookingError("not_found", _("Rendez-vous introuvable."), kind=Kind.NOT_FOUND)


async def _own_appointment(db: AsyncSession, user: User, appointment_id: str) -> Appointment:
    appointment = await db.get(Appointment, appointment_id)
    if appointment is None or appointment.association_id != user.association_id:
        raise _appointment_not_found()
    return appointment


async def _agenda_error(
    request: web.Request, form: Mapping[str, Any], message: str, status: int = 400
) -> web.StreamResponse:
    context = await _agenda_context(request, AgendaQuery.read(form), _now())
    context["error"] = message
    return render(request, "agenda/agenda.html", context, status=status)


@routes.post("/agenda/{appointment_id:[0-9a-f-]{36}}/demarrer", name="agenda-start")
@login_required(*STAFF)
async def start(request: web.Request) -> web.StreamResponse:
    """ "Démarrer": open the appointment's assistance room (the beneficiary's link goes live)."""
    form = await check_csrf(request)
    user = required_user(request)
    now = _now()
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _own_appointment(db, user, request.match_info["appointment_id"])
        session = (
            await db.get(AssistanceSession, appointment.assistance_session_id)
            if appointment.assistance_session_id is not None
            else None
        )
    if appointment.volunteer_id != user.id:
        raise _appointment_not_found()
    if appointment.status != AppointmentStatus.BOOKED:
        return await _agenda_error(request, form, _("Ce rendez-vous n'est plus prévu."))
    if session is None or session.status == SessionStatus.ENDED or now >= session.expires_at:
        return await _agenda_error(request, form, _("L'assistance de ce rendez-vous est terminée."))
    opens_at = appointment.starts_at - START_OPENS_BEFORE
    if now < opens_at:
        async with request.app[SESSIONMAKER_KEY]() as db:
            tz = await availability.volunteer_zone(db, user.id, request.app[SETTINGS_KEY].timezone)
        return await _agenda_error(
            request,
            form,
            _("Trop tôt : vous pourrez démarrer ce rendez-vous le %(day)s à partir de %(hour)s.")
            % {"day": day_label(opens_at.astimezone(tz).date()), "hour": hour_label(opens_at, tz)},
        )
    raise see_other(request, "assistance-room", session_id=session.id)


@routes.post("/agenda/{appointment_id:[0-9a-f-]{36}}/absent", name="agenda-no-show")
@login_required(*STAFF)
async def no_show(request: web.Request) -> web.StreamResponse:
    """ "Absent(e)": the beneficiary did not come (only once the appointment has started)."""
    form = await check_csrf(request)
    user = required_user(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await booking.mark_no_show(db, request.match_info["appointment_id"], user, _now())
    except BookingError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise  # the error page: there is no agenda row to show the message beside
        return await _agenda_error(request, form, exc.message, status_of(exc))
    raise web.HTTPSeeOther(location=AgendaQuery.read(form).url(request))
