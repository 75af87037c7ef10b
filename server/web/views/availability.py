"""The volunteer's weekly permanences and coming absences, with the forms to change them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from server import availability
from server.availability import AvailabilityError
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.integers import parse_int
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Role
from server.timezones import ZONES, day_label, zone_label
from server.web.forms import FormError, form_text, parse_day, parse_hour
from server.web.middlewares import status_of
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()

STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
WEEKDAYS = (
    N_("Lundi"),
    N_("Mardi"),
    N_("Mercredi"),
    N_("Jeudi"),
    N_("Vendredi"),
    N_("Samedi"),
    N_("Dimanche"),
)


async def _availability_page(
    request: web.Request, status: int = 200, **extra: Any
) -> web.StreamResponse:
    user = required_user(request)
    settings = request.app[SETTINGS_KEY]
    now = datetime.now(UTC)
    async with request.app[SESSIONMAKER_KEY]() as db:
        permanences = await availability.list_availabilities(db, user.id)
        tz = await availability.volunteer_zone(db, user.id, settings.timezone)
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


@routes.get("/disponibilites", name="availability")
@login_required(*STAFF)
async def availability_page(request: web.Request) -> web.StreamResponse:
    """The volunteer's weekly permanences and coming absences, with the forms to change them."""
    return await _availability_page(request)


def _hours_changed(request: web.Request) -> web.HTTPSeeOther:
    """Back to the permanences page (the queue's opening hours follow through OpeningChanged)."""
    return see_other(request, "availability")


@routes.post("/disponibilites", name="availability-add")
@login_required(*STAFF)
async def availability_add(request: web.Request) -> web.StreamResponse:
    """Publish a weekly permanence."""
    form = await check_csrf(request)
    fields = {name: form_text(form, name, 80) for name in form if name != "csrf_token"}
    try:
        weekday = parse_int(form_text(form, "weekday", 2))
        if weekday is None:
            raise FormError("missing_weekday", _("Choisissez le jour de la semaine."), "weekday")
        start_time = parse_hour(form_text(form, "start", 10))
        end_time = parse_hour(form_text(form, "end", 10))
        valid_from = parse_day(form_text(form, "valid_from", 20))
        valid_until = parse_day(form_text(form, "valid_until", 20))
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await availability.add_availability(
                db,
                required_user(request),
                weekday=weekday,
                start_time=start_time,
                end_time=end_time,
                timezone=form_text(form, "timezone", 64),
                valid_from=valid_from,
                valid_until=valid_until,
            )
    except DomainError as exc:
        return await _availability_page(request, status_of(exc), form=fields, error=exc.message)
    raise _hours_changed(request)


@routes.post("/disponibilites/{availability_id:[0-9]{1,9}}/supprimer", name="availability-delete")
@login_required(*STAFF)
async def availability_delete(request: web.Request) -> web.StreamResponse:
    """Remove one of the volunteer's permanences (booked appointments stay booked)."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        deleted = await availability.delete_availability(
            db, required_user(request).id, int(request.match_info["availability_id"])
        )
    if not deleted:
        raise AvailabilityError(
            "not_found", _("Cette permanence n'existe pas."), kind=Kind.NOT_FOUND
        )
    raise _hours_changed(request)


@routes.post("/disponibilites/absences", name="absence-add")
@login_required(*STAFF)
async def absence_add(request: web.Request) -> web.StreamResponse:
    """Record an absence from one day to another, both included, in the volunteer's zone."""
    form = await check_csrf(request)
    user = required_user(request)
    fields = {name: form_text(form, name, 200) for name in form if name != "csrf_token"}
    try:
        first = parse_day(form_text(form, "first_day", 20))
        last = parse_day(form_text(form, "last_day", 20)) or first
        if first is None or last is None:
            raise FormError(
                "missing_first_day", _("Choisissez le premier jour de l'absence."), "first_day"
            )
        if last < first:
            raise FormError(
                "last_before_first",
                _("Le dernier jour doit être après le premier jour."),
                "last_day",
            )
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            tz = await availability.volunteer_zone(db, user.id, request.app[SETTINGS_KEY].timezone)
            starts_at, ends_at = availability.absence_range(first, last, tz)
            await availability.add_exception(
                db,
                user,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=form_text(form, "reason", 200),
            )
    except DomainError as exc:
        return await _availability_page(
            request, status_of(exc), absence_form=fields, absence_error=exc.message
        )
    raise _hours_changed(request)


@routes.post("/disponibilites/absences/{exception_id:[0-9]{1,9}}/supprimer", name="absence-delete")
@login_required(*STAFF)
async def absence_delete(request: web.Request) -> web.StreamResponse:
    """Remove one of the volunteer's absences."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        deleted = await availability.delete_exception(
            db, required_user(request).id, int(request.match_info["exception_id"])
        )
    if not deleted:
        raise AvailabilityError("not_found", _("Cette absence n'existe pas."), kind=Kind.NOT_FOUND)
    raise _hours_changed(request)
