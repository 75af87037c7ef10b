"""Referrers (social workers of partner structures): the coordinator invites, deactivates and
reactivates their accounts; a referrer sees the appointments they booked for people."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select

from server import accounts, booking, handoff, links, motifs
from server.accounts import AccountError
from server.booking import KIND_LABELS, STATUS_LABELS
from server.errors import Kind
from server.i18n import _
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Role, User
from server.timezones import day_label, hour_label, zone_label
from server.web.forms import form_text
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


async def _referrers_page(
    request: web.Request, status: int = 200, **extra: Any
) -> web.StreamResponse:
    association_id = required_user(request).association_id
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


@routes.get("/referents", name="referrers")
@login_required(Role.COORDINATOR)
async def referrers_page(request: web.Request) -> web.StreamResponse:
    """The association's referrers (social workers of partner structures)."""
    return await _referrers_page(request)


@routes.post("/referents", name="referrers-invite")
@login_required(Role.COORDINATOR)
async def referrer_invite(request: web.Request) -> web.StreamResponse:
    """Create a referrer account and show the one-time invitation link to send them."""
    form = await check_csrf(request)
    fields = {name: form_text(form, name, 300) for name in form if name != "csrf_token"}
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            invitation = await accounts.invite_referrer(
                db,
                required_user(request),
                email=form_text(form, "email"),
                name=form_text(form, "name", 200),
                partner_name=form_text(form, "partner", 300),
            )
    except AccountError as exc:
        return await _referrers_page(request, status_of(exc), error=exc.message, form=fields)
    link = links.INVITATION.url(request.app[SETTINGS_KEY], token=invitation.token)
    return await _referrers_page(request, invitation_link=link, invited=invitation.user)


async def _set_referrer_active(request: web.Request, active: bool) -> web.StreamResponse:
    await check_csrf(request)
    coordinator = required_user(request)
    user_id = int(request.match_info["user_id"])
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        referrer = await db.scalar(
            select(User).where(
                User.id == user_id,
                User.association_id == coordinator.association_id,
                User.role == Role.REFERRER,
            )
        )
        if referrer is None:
            raise AccountError(
                "not_found",
                _("Ce référent n'existe pas dans votre association."),
                kind=Kind.NOT_FOUND,
            )
        if active:
            await accounts.reactivate(db, coordinator, user_id)
        else:
            await accounts.deactivate(db, coordinator, user_id)
    raise see_other(request, "referrers")


@routes.post("/referents/{user_id:[0-9]{1,9}}/desactiver", name="referrers-deactivate")
@login_required(Role.COORDINATOR)
async def referrer_deactivate(request: web.Request) -> web.StreamResponse:
    """Deactivate a referrer: they can no longer log in or book; their bookings stay."""
    return await _set_referrer_active(request, False)


@routes.post("/referents/{user_id:[0-9]{1,9}}/reactiver", name="referrers-reactivate")
@login_required(Role.COORDINATOR)
async def referrer_reactivate(request: web.Request) -> web.StreamResponse:
    """Give a deactivated referrer their access back."""
    return await _set_referrer_active(request, True)


@routes.get("/mes-reservations", name="my-bookings")
@login_required(Role.REFERRER, Role.COORDINATOR)
async def my_bookings(request: web.Request) -> web.StreamResponse:
    """The appointments this referrer booked for the people they follow, and their status."""
    user = required_user(request)
    settings = request.app[SETTINGS_KEY]
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
                "zone": zone_label(tz.key) if tz.key != settings.timezone else None,
                "first_name": appointment.first_name,
                "motif": names.get(appointment.motif_id, "?"),
                "kind": _(KIND_LABELS[appointment.kind]),
                "status": appointment.status.value,
                "status_label": _(STATUS_LABELS[appointment.status]),
                "sheet_url": url_for(request, "handoff-referrer", appointment_id=appointment.id)
                if appointment.assistance_session_id in with_sheet
                else None,
            }
        )
    return render(request, "referrers/my_bookings.html", {"rows": rows})
