"""Volunteer pages: dashboard, new assistance, the assistance room and its actions."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist as domain
from server import data_used, handoff, links
from server.accounts import AccountError
from server.i18n import _
from server.qr import qr_svg
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.settings import Settings
from server.store.models import AssistanceSession, Role, SessionStatus, User
from server.turn import session_ice_servers
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
ROOM = "/assistance/{session_id:[0-9a-f-]{36}}"


@routes.get("/tableau", name="dashboard")
@login_required(*STAFF)
async def dashboard(request: web.Request) -> web.StreamResponse:
    """The volunteer's live assistances and the "Nouvelle assistance" button."""
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        sessions = await domain.list_for_user(db, user)
        todos = await handoff.sheets_to_fill(db, user)
    rows = [
        {"url": url_for(request, todo.form[0], **todo.form[1]), "when": todo.when, "who": todo.who}
        for todo in todos
    ]
    return render(request, "assistance/dashboard.html", {"sessions": sessions, "todos": rows})


@routes.post("/assistance", name="assistance-create")
@login_required(*STAFF)
async def create(request: web.Request) -> web.StreamResponse:
    """Open a new assistance and go to its room."""
    await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        session = await domain.create_session(db, settings, required_user(request))
    raise see_other(request, "assistance-room", session_id=session.id)


async def _load(request: web.Request) -> tuple[AssistanceSession, domain.PeerRole]:
    """The session of the URL if this account belongs to it; 404 otherwise (no existence leak)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await domain.get_for_user(
            db, request.match_info["session_id"], required_user(request)
        )
    if found is None:
        raise web.HTTPNotFound(
            text=_("Cette assistance n'existe pas ou ne vous concerne pas."),
            content_type="text/plain",
        )
    return found


def room_context(
    settings: Settings, session: AssistanceSession, role: domain.PeerRole
) -> dict[str, Any]:
    """Template context of the volunteer room."""
    owner = role is domain.PeerRole.VOLUNTEER
    # Only the session's volunteer hands out the link and code: an observer holding them could
    # join as the beneficiary and push them out.
    link = domain.link_for(settings, session) if owner else ""
    code = domain.current_code(settings, session) if owner else None
    return {
        "assistance": session,
        "is_owner": role is domain.PeerRole.VOLUNTEER,
        "join_url": link,
        "code": code,
        "code_expires_at": session.code_expires_at if code else None,
        "code_url": links.CODE.url(settings),
        "qr_svg": qr_svg(link, title=_("QR code du lien pour rejoindre l'assistance"))
        if owner
        else "",
        "observer_name": None,
        "observer_error": None,
        "earlier_sheets": [],
        "config": {
            "role": role.value,
            "session_id": session.id,
            "ice": session_ice_servers(settings, session.id),
        },
    }


@routes.get(ROOM, name="assistance-room")
@login_required(*STAFF)
async def room(request: web.Request) -> web.StreamResponse:
    """The room where the volunteer sees the beneficiary's screen and guides them."""
    session, role = await _load(request)
    settings = request.app[SETTINGS_KEY]
    if session.status == SessionStatus.ENDED:
        context = {
            "assistance": session,
            "is_owner": role is domain.PeerRole.VOLUNTEER,
            "data_used": data_used.describe(session),
        }
        return render(request, "assistance/ended.html", context)
    context = room_context(settings, session, role)
    async with request.app[SESSIONMAKER_KEY]() as db:
        if session.observer_id is not None:
            observer = await db.get(User, session.observer_id)
            context["observer_name"] = observer.name if observer else None
        context["earlier_sheets"] = await _earlier_sheets(db, settings, session)
    return render(request, "assistance/room.html", context)


async def _earlier_sheets(
    db: AsyncSession, settings: Settings, session: AssistanceSession
) -> list[handoff.SheetView]:
    """The person's earlier sheets they agreed to share (appointments and call-backs only: a
    plain link or the drop-in queue does not say who the person is)."""
    if session.channel not in ("appointment", "callback"):
        return []
    subject = await handoff.subject_of_session(db, session)
    sheets = await handoff.earlier_sheets(db, settings, subject)
    return [handoff.view(sheet, settings.timezone) for sheet in sheets]


@routes.post(ROOM + "/code", name="assistance-code")
@login_required(*STAFF)
async def new_code(request: web.Request) -> web.StreamResponse:
    """Give the session a fresh join code (the previous one stops working)."""
    await check_csrf(request)
    session, role = await _load(request)
    if role is not domain.PeerRole.VOLUNTEER or not session.is_live:
        raise web.HTTPForbidden(
            text=_("Seul le bénévole de l'assistance peut faire cela."), content_type="text/plain"
        )
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        session = await db.get_one(AssistanceSession, session.id, with_for_update=True)
        await domain.assign_new_code(db, request.app[SETTINGS_KEY], session)
    raise see_other(request, "assistance-room", session_id=session.id)


@routes.post(ROOM + "/observer", name="assistance-observer")
@login_required(*STAFF)
async def invite_observer(request: web.Request) -> web.StreamResponse:
    """Invite another volunteer of the association to watch (trainee shadowing)."""
    form = await check_csrf(request)
    session, role = await _load(request)
    if role is not domain.PeerRole.VOLUNTEER or not session.is_live:
        raise web.HTTPForbidden(
            text=_("Seul le bénévole de l'assistance peut faire cela."), content_type="text/plain"
        )
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            session = await db.get_one(AssistanceSession, session.id, with_for_update=True)
            await domain.invite_observer(
                db, session, required_user(request), str(form.get("email", ""))
            )
    except AccountError as exc:
        session, role = await _load(request)  # the failed transaction expired the old object
        context = room_context(request.app[SETTINGS_KEY], session, role)
        context["observer_error"] = str(exc)
        return render(request, "assistance/room.html", context, status=400)
    raise see_other(request, "assistance-room", session_id=session.id)


@routes.get(ROOM + "/donnees", name="assistance-data-used")
@login_required(*STAFF)
async def data_used_figure(request: web.Request) -> web.StreamResponse:
    """The data the beneficiary's device used, as stored, for the room's ended panel."""
    session, _role = await _load(request)
    return web.json_response(
        {"bytes": session.data_bytes, "text": data_used.describe(session)},
        headers={"Cache-Control": "no-store"},
    )


@routes.post(ROOM + "/end", name="assistance-end")
@login_required(*STAFF)
async def end(request: web.Request) -> web.StreamResponse:
    """End the assistance for everyone (also reachable without JavaScript)."""
    await check_csrf(request)
    session, role = await _load(request)
    if role is not domain.PeerRole.VOLUNTEER:
        raise web.HTTPForbidden(
            text=_("Seul le bénévole de l'assistance peut la terminer."), content_type="text/plain"
        )
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        session = await db.get_one(AssistanceSession, session.id, with_for_update=True)
        await domain.end_session(db, session, "volunteer")
    # Straight to the handoff sheet while the session is fresh in mind ("Passer" stays there).
    raise see_other(request, "handoff-form", session_id=session.id)
