"""The drop-in queue pages: `/aide` (join, wait, your turn) for the public, `/file` for volunteers.

The waiting page works without JavaScript (it refreshes itself); with it, the position arrives
over the `/queue` socket and the turn rings. Volunteers' buttons are forms (they work without
JavaScript too); the page's script sends them over the socket instead and shows the live list.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from limits import parse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.booking import BookingError, clean_first_name
from server.dropin import places as dropin
from server.dropin.places import QueueError
from server.i18n import N_, _
from server.motifs import get_motif, list_motifs
from server.notify.appointments import When
from server.passes import QUEUE_COOKIE
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import BOARD_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import (
    AssistanceSession,
    Association,
    QueueEntry,
    QueueStatus,
    Role,
    User,
    utcnow,
)
from server.web.request import (
    check_csrf,
    client_ip,
    current_user,
    login_required,
    render,
    set_cookie,
)
from server.web.views.booking import public_association
from server.web.views.join import enter_session

# A family or a France Services office shares one address: generous, but no flood.
JOINS_PER_IP = Rule("queue-join-ip", parse("30/hour"))
QUEUE_COOKIE_SECONDS = 12 * 3600
VOLUNTEER_ROLES = (Role.VOLUNTEER, Role.COORDINATOR)
TOO_MANY = N_("Trop de demandes depuis cette connexion. Attendez un peu puis réessayez.")
_POSTAL = re.compile(r"^\d{5}$")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_get("/aide", help_page, name="dropin")
    router.add_post("/aide", join, name="dropin-join")
    router.add_get("/aide/attente", waiting_page, name="dropin-waiting")
    router.add_get("/aide/entrer", enter, name="dropin-enter")
    router.add_post("/aide/quitter", leave, name="dropin-leave")
    router.add_get("/file", queue_page, name="queue")
    router.add_post("/file/suivant", take_next, name="queue-take-next")
    router.add_post("/file/{entry_id}/prendre", take, name="queue-take")
    router.add_post("/file/{entry_id}/remettre", requeue, name="queue-requeue")
    router.add_post("/file/{entry_id}/transferer", transfer, name="queue-transfer")
    router.add_post("/file/{entry_id}/absent", gone, name="queue-gone")


# -- Public side ---------------------------------------------------------------------------------


async def _my_entry(request: web.Request, db: AsyncSession) -> QueueEntry | None:
    """The place whose token this browser holds, if any."""
    return await dropin.find_by_token(db, request.cookies.get(QUEUE_COOKIE))


async def _help_context(
    request: web.Request, db: AsyncSession, association: Association
) -> dict[str, Any]:
    settings = request.app[SETTINGS_KEY]
    now = utcnow()
    state = await dropin.state_of(db, association.id, now)
    estimate = await request.app[BOARD_KEY].estimate_for_newcomer(db, association.id)
    waiting = await dropin.count_waiting(db, association.id)
    full = waiting >= settings.queue_max_waiting
    return {
        "association": association,
        "motifs": await list_motifs(db, association.id, active_only=True),
        "open": state.is_open and not full,
        "full": full,
        "next_change": When.of(state.next_change, settings.timezone) if state.next_change else None,
        "waiting": waiting,
        "estimate": estimate,
        "offer_callback": dropin.offers_callback(settings, estimate),
        "form": {"motif": "", "first_name": "", "postal_code": ""},
        "error": None,
    }


async def help_page(request: web.Request) -> web.StreamResponse:
    """`/aide`: join the queue when open (motif, optional first name), else a call-back."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        entry = await _my_entry(request, db)
        if entry is not None and entry.status in (QueueStatus.WAITING, QueueStatus.TAKEN):
            raise web.HTTPSeeOther(location="/aide/attente")  # one place per browser
        association = await public_association(request, db, request.query.get("a"))
        context = await _help_context(request, db, association)
    return render(request, "dropin/help.html", context)


def _clean_postal_code(raw: str) -> str | None:
    value = "".join(raw.split())
    if not value:
        return None
    if not _POSTAL.match(value):
        raise QueueError("postal_code", _("Le code postal a 5 chiffres, par exemple 75011."))
    return value


def _clean_first_name(raw: str) -> str | None:
    if not raw.strip():
        return None
    try:
        return clean_first_name(raw)
    except BookingError as exc:
        raise QueueError("first_name", exc.message) from exc


async def join(request: web.Request) -> web.StreamResponse:
    """Take a place at the end of the queue; joining twice leads to the same place."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    typed = {
        "first_name": str(form.get("first_name", ""))[:100],
        "postal_code": str(form.get("postal_code", ""))[:20],
        "motif": str(form.get("motif", ""))[:10],
    }
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        entry = await _my_entry(request, db)
        if entry is not None and entry.status == QueueStatus.WAITING:
            raise web.HTTPSeeOther(location="/aide/attente")
        association = await public_association(request, db, form.get("a"))
        try:
            if not await request.app[RATELIMIT_KEY].hit(JOINS_PER_IP, client_ip(request)):
                raise QueueError("rate_limited", _(TOO_MANY))
            motif_id = None
            if typed["motif"]:
                motif = (
                    await get_motif(db, association.id, int(typed["motif"]))
                    if typed["motif"].isdigit()
                    else None
                )
                if motif is None or not motif.is_active:
                    raise QueueError("motif", _("Choisissez une démarche dans la liste."))
                motif_id = motif.id
            joined = await dropin.join(
                db,
                settings,
                association.id,
                motif_id,
                _clean_first_name(typed["first_name"]),
                _clean_postal_code(typed["postal_code"]),
                utcnow(),
            )
        except QueueError as exc:
            context = await _help_context(request, db, association)
            context.update(form=typed, error=exc)
            status = {"rate_limited": 429, "closed": 409, "full": 503}.get(exc.code, 400)
            response = render(request, "dropin/help.html", context, status)
            if status == 429:
                response.headers["Retry-After"] = "600"
            return response
    response = web.HTTPSeeOther(location="/aide/attente")
    set_cookie(request, response, QUEUE_COOKIE, joined.token, QUEUE_COOKIE_SECONDS)
    raise response


def _no_place(request: web.Request, reason: str | None) -> web.Response:
    """The place is gone (left, taken long ago, lost, or a forged token): say so and offer more."""
    response = render(request, "dropin/gone.html", {"reason": reason}, 410 if reason else 404)
    response.del_cookie(QUEUE_COOKIE, path="/")
    return response


async def waiting_page(request: web.Request) -> web.StreamResponse:
    """The waiting room: position, estimate, reassurance; the page keeps the place alive."""
    now = utcnow()
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        entry = await _my_entry(request, db)
        if entry is None:
            return _no_place(request, None)
        if entry.status == QueueStatus.TAKEN:
            session = (
                await db.get(AssistanceSession, entry.assistance_session_id)
                if entry.assistance_session_id
                else None
            )
            if session is not None and session.is_live:
                raise web.HTTPSeeOther(location="/aide/entrer")
            return _no_place(request, "ended")
        if entry.status != QueueStatus.WAITING:
            return _no_place(request, entry.end_reason or entry.status.value)
        await dropin.seen(db, entry.id, now)
        association_id = entry.association_id
        motif = await get_motif(db, association_id, entry.motif_id) if entry.motif_id else None
        first_name = entry.first_name
    position = await request.app[BOARD_KEY].position_for(association_id, entry.id)
    context = {
        "position": position,
        "motif": motif,
        "first_name": first_name,
        "grace_seconds": settings.queue_grace_seconds,
        "association_id": association_id,
    }
    return render(request, "dropin/waiting.html", context)


async def enter(request: web.Request) -> web.StreamResponse:
    """Their turn: the queue token becomes a pass for the assistance room (no token in URLs)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        entry = await _my_entry(request, db)
        session = None
        if entry is not None and entry.status == QueueStatus.TAKEN and entry.assistance_session_id:
            session = await db.get(AssistanceSession, entry.assistance_session_id)
    if session is None or not session.is_live:
        raise web.HTTPSeeOther(location="/aide/attente")
    raise enter_session(request, session)


async def leave(request: web.Request) -> web.StreamResponse:
    """Give up one's place (a second click does nothing more)."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        entry = await _my_entry(request, db)
        if entry is not None:
            await dropin.leave(db, entry.id, utcnow())
    response = render(request, "dropin/gone.html", {"reason": "left"})
    response.del_cookie(QUEUE_COOKIE, path="/")
    return response


# -- Volunteer side ------------------------------------------------------------------------------


async def _volunteers(db: AsyncSession, association_id: int) -> list[User]:
    return list(
        await db.scalars(
            select(User)
            .where(
                User.association_id == association_id,
                User.is_active.is_(True),
                User.role.in_(VOLUNTEER_ROLES),
            )
            .order_by(User.name)
        )
    )


async def _mine(db: AsyncSession, user: User) -> list[tuple[QueueEntry, AssistanceSession]]:
    """The people this volunteer took whose assistance is still live."""
    rows = await db.execute(
        select(QueueEntry, AssistanceSession)
        .join(AssistanceSession, AssistanceSession.id == QueueEntry.assistance_session_id)
        .where(QueueEntry.taken_by_id == user.id, QueueEntry.status == QueueStatus.TAKEN)
        .order_by(QueueEntry.taken_at.desc())
    )
    return [(entry, session) for entry, session in rows if session.is_live]


def _user(request: web.Request) -> User:
    user = current_user(request)
    assert user is not None  # login_required
    return user


async def _queue_page(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    user = _user(request)
    queue = await request.app[BOARD_KEY].volunteer_payload(user.association_id)
    async with request.app[SESSIONMAKER_KEY]() as db:
        volunteers = await _volunteers(db, user.association_id)
        mine = await _mine(db, user)
    context = {
        "queue": queue,
        "volunteers": [v for v in volunteers if v.id != user.id],
        "names": {v.id: v.name for v in volunteers},
        "mine": mine,
        "error": error,
        "config": {"user_id": user.id},
    }
    return render(request, "dropin/queue.html", context, status)


@login_required(*VOLUNTEER_ROLES)
async def queue_page(request: web.Request) -> web.StreamResponse:
    """`/file`: the live queue (pushed over the `/queue` socket) and the people one is helping."""
    return await _queue_page(request)


def _after_take(request: web.Request, entry: QueueEntry) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location=f"/assistance/{entry.assistance_session_id}")


def _entry_id(request: web.Request) -> str:
    return request.match_info["entry_id"][:40]


@login_required(*VOLUNTEER_ROLES)
async def take_next(request: web.Request) -> web.StreamResponse:
    """ "Prendre le suivant" without JavaScript."""
    await check_csrf(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            entry = await dropin.take_next(db, request.app[SETTINGS_KEY], _user(request), utcnow())
    except QueueError as exc:
        return await _queue_page(request, exc.message, 409)
    if entry is None:
        return await _queue_page(request, _("Personne n'attend pour le moment."), 409)
    raise _after_take(request, entry)


@login_required(*VOLUNTEER_ROLES)
async def take(request: web.Request) -> web.StreamResponse:
    """Take one given person."""
    await check_csrf(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            entry = await dropin.take(
                db, request.app[SETTINGS_KEY], _user(request), _entry_id(request), utcnow()
            )
    except QueueError as exc:
        return await _queue_page(request, exc.message, 409)
    raise _after_take(request, entry)


@login_required(*VOLUNTEER_ROLES)
async def requeue(request: web.Request) -> web.StreamResponse:
    """Put a person one took back at their place in the queue."""
    await check_csrf(request)
    user = _user(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await dropin.requeue(db, user, _entry_id(request), utcnow())
    except QueueError as exc:
        return await _queue_page(request, exc.message, 409)
    raise web.HTTPSeeOther(location="/file")


@login_required(*VOLUNTEER_ROLES)
async def transfer(request: web.Request) -> web.StreamResponse:
    """Hand a person to another volunteer."""
    form = await check_csrf(request)
    user = _user(request)
    raw = str(form.get("volunteer_id", ""))
    try:
        if not raw.isdigit() or len(raw) > 9:
            raise QueueError("no_target", _("Choisissez un bénévole."))
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await dropin.transfer(db, user, _entry_id(request), int(raw), utcnow())
    except QueueError as exc:
        return await _queue_page(request, exc.message, 409)
    raise web.HTTPSeeOther(location="/file")


@login_required(*VOLUNTEER_ROLES)
async def gone(request: web.Request) -> web.StreamResponse:
    """The person was not there when called."""
    await check_csrf(request)
    user = _user(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await dropin.mark_gone(db, user, _entry_id(request), utcnow())
    except QueueError as exc:
        return await _queue_page(request, exc.message, 409)
    raise web.HTTPSeeOther(location="/file")
