"""The drop-in queue pages: `/aide` (join, wait, your turn) for the public, `/file` for volunteers.

The waiting page works without JavaScript (it refreshes itself); with it, the position arrives
over the `/queue` socket and the turn rings. Volunteers' buttons are forms (they work without
JavaScript too); the page's script sends them over the socket instead and shows the live list.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from limits import parse
from multidict import MultiMapping
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import accounts, fair_use, links, passes
from server.contact import ContactError, clean_first_name
from server.dropin import places as dropin
from server.dropin.places import QueueError
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.integers import parse_int
from server.matching import FRENCH, LanguageChoice
from server.metrics import QUEUE_REMOVED_IN_BULK
from server.motifs import get_motif, list_motifs
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
from server.timezones import When
from server.web import pressure
from server.web.forms import read_form
from server.web.language import request_language
from server.web.middlewares import status_of
from server.web.request import (
    check_csrf,
    client_key,
    delete_cookie,
    login_required,
    render,
    required_user,
    see_other,
    set_cookie,
)
from server.web.views.booking import public_association
from server.web.views.join import enter_session

# A family or a France Services office shares one address: generous, but no flood.
JOINS_PER_IP = Rule("queue-join-ip", parse("30/hour"))
QUEUE_COOKIE_SECONDS = 12 * 3600
VOLUNTEER_ROLES = (Role.VOLUNTEER, Role.COORDINATOR)
TOO_MANY = N_("Trop de demandes depuis cette connexion. Attendez un peu puis réessayez.")
_POSTAL = re.compile(r"^[0-9]{5}$")


routes = web.RouteTableDef()
ENTRY = "/file/{entry_id:[0-9a-f-]{36}}"


# -- Public side ---------------------------------------------------------------------------------


async def _my_entry(request: web.Request, db: AsyncSession) -> QueueEntry | None:
    """The place whose token this browser holds, if any."""
    return await dropin.find_by_token(
        db, passes.cookie(request.app[SETTINGS_KEY], request.cookies, QUEUE_COOKIE)
    )


async def _help_context(
    request: web.Request, db: AsyncSession, association: Association
) -> dict[str, Any]:
    settings = request.app[SETTINGS_KEY]
    challenge = await pressure.challenge_for(request, "queue_joins")
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
        "form": {"motif": "", "first_name": "", "postal_code": "", "language_wanted": ""},
        "error": None,
        "pow": challenge,
        # The box "a volunteer who speaks my language", on pages in another language only.
        "ask_language": request_language(request).code != FRENCH,
    }


@routes.get(links.DROP_IN.path, name=links.DROP_IN.name)
async def help_page(request: web.Request) -> web.StreamResponse:
    """`/aide`: join the queue when open (motif, optional first name), else a call-back."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        entry = await _my_entry(request, db)
        if entry is not None and entry.status in (QueueStatus.WAITING, QueueStatus.TAKEN):
            raise see_other(request, "dropin-waiting")  # one place per browser
        association = await public_association(request, db, request.query.get("a"))
        context = await _help_context(request, db, association)
    return render(request, "dropin/help.html", context)


def _clean_postal_code(raw: str) -> str | None:
    value = "".join(raw.split())
    if not value:
        return None
    if not _POSTAL.match(value):
        raise QueueError(
            "postal_code",
            _("Le code postal a 5 chiffres, par exemple 75011."),
            "postal_code",
            kind=Kind.INVALID,
        )
    return value


def _clean_first_name(raw: str) -> str | None:
    if not raw.strip():
        return None
    try:
        return clean_first_name(raw)
    except ContactError as exc:
        raise QueueError("first_name", exc.message, "first_name", kind=Kind.INVALID) from exc


@routes.post(links.DROP_IN.path, name="dropin-join")
async def join(request: web.Request) -> web.StreamResponse:
    """Take a place at the end of the queue; joining twice leads to the same place."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    typed = {
        "first_name": str(form.get("first_name", ""))[:100],
        "postal_code": str(form.get("postal_code", ""))[:20],
        "motif": str(form.get("motif", ""))[:10],
        "language_wanted": "1" if form.get("language_wanted") else "",
    }
    language = LanguageChoice.of(request_language(request).code, typed["language_wanted"])
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        entry = await _my_entry(request, db)
        if entry is not None and entry.status == QueueStatus.WAITING:
            raise see_other(request, "dropin-waiting")
        association = await public_association(request, db, form.get("a"))
        try:
            client = client_key(request)
            if not await request.app[RATELIMIT_KEY].hit(JOINS_PER_IP, client):
                raise QueueError("rate_limited", _(TOO_MANY), kind=Kind.RATE_LIMITED)
            await pressure.check_form(request, db, "queue_joins", form)
            motif_id = None
            if typed["motif"]:
                wanted = parse_int(typed["motif"])
                motif = None if wanted is None else await get_motif(db, association.id, wanted)
                if motif is None or not motif.is_active:
                    raise QueueError(
                        "motif",
                        _("Choisissez une démarche dans la liste."),
                        "motif",
                        kind=Kind.INVALID,
                    )
                motif_id = motif.id
            joined = await dropin.join(
                db,
                settings,
                association.id,
                motif_id,
                _clean_first_name(typed["first_name"]),
                _clean_postal_code(typed["postal_code"]),
                utcnow(),
                client=fair_use.client_hash(settings.secret_key.get_secret_value(), client),
                language=language,
            )
        except DomainError as exc:  # the queue's refusals, and a missing proof of work
            pressure.count_refusal(exc)
            context = await _help_context(request, db, association)
            context.update(form=typed, error=exc)
            response = render(request, "dropin/help.html", context, status_of(exc))
            if exc.kind is Kind.RATE_LIMITED:
                response.headers["Retry-After"] = "600"
            return response
    await pressure.spend(request, "queue_joins")
    response = see_other(request, "dropin-waiting")
    set_cookie(request, response, QUEUE_COOKIE, joined.token, QUEUE_COOKIE_SECONDS)
    raise response


def _no_place(request: web.Request, reason: str | None) -> web.Response:
    """The place is gone (left, taken long ago, lost, or a forged token): say so and offer more."""
    response = render(request, "dropin/gone.html", {"reason": reason}, 410 if reason else 404)
    delete_cookie(request, response, QUEUE_COOKIE)
    return response


@routes.get("/aide/attente", name="dropin-waiting")
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
                raise see_other(request, "dropin-enter")
            return _no_place(request, "ended")
        if entry.status != QueueStatus.WAITING:
            return _no_place(request, entry.end_reason or entry.status.value)
        await dropin.seen(db, entry.id, now)
        association_id = entry.association_id
        motif = await get_motif(db, association_id, entry.motif_id) if entry.motif_id else None
        first_name = entry.first_name
        language_wanted = entry.language_wanted
    position = await request.app[BOARD_KEY].position_for(association_id, entry.id)
    context = {
        "position": position,
        "motif": motif,
        "first_name": first_name,
        "grace_seconds": settings.queue_grace_seconds,
        "association_id": association_id,
        "language_wanted": language_wanted,
    }
    return render(request, "dropin/waiting.html", context)


@routes.get("/aide/entrer", name="dropin-enter")
async def enter(request: web.Request) -> web.StreamResponse:
    """Their turn: the queue token becomes a pass for the assistance room (no token in URLs)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        entry = await _my_entry(request, db)
        session = None
        if entry is not None and entry.status == QueueStatus.TAKEN and entry.assistance_session_id:
            session = await db.get(AssistanceSession, entry.assistance_session_id)
    if session is None or not session.is_live:
        raise see_other(request, "dropin-waiting")
    return enter_session(request, session)


@routes.post("/aide/quitter", name="dropin-leave")
async def leave(request: web.Request) -> web.StreamResponse:
    """Give up one's place (a second click does nothing more)."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        entry = await _my_entry(request, db)
        if entry is not None:
            await dropin.leave(db, entry.id, utcnow())
    response = render(request, "dropin/gone.html", {"reason": "left"})
    delete_cookie(request, response, QUEUE_COOKIE)
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


async def _queue_page(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    user = required_user(request)
    queue = await request.app[BOARD_KEY].volunteer_payload(user.association_id)
    async with request.app[SESSIONMAKER_KEY]() as db:
        volunteers = await _volunteers(db, user.association_id)
        mine = await _mine(db, user)
        spoken = await accounts.languages_of(db, user.id)
    context = {
        "queue": queue,
        "volunteers": [v for v in volunteers if v.id != user.id],
        "names": {v.id: v.name for v in volunteers},
        "mine": mine,
        "error": error,
        "spoken": spoken,
        # The page marks the people who asked for a language this volunteer speaks.
        "config": {"user_id": user.id, "languages": spoken},
    }
    return render(request, "dropin/queue.html", context, status)


@routes.get(links.QUEUE.path, name=links.QUEUE.name)
@login_required(*VOLUNTEER_ROLES)
async def queue_page(request: web.Request) -> web.StreamResponse:
    """`/file`: the live queue (pushed over the `/queue` socket) and the people one is helping."""
    return await _queue_page(request)


Action = Callable[[AsyncSession, User, str], Awaitable[QueueEntry | None]]


async def _act(request: web.Request, action: Action) -> web.StreamResponse:
    """One volunteer action on the queue, as a form (the page's script uses the socket): done,
    to the room of a person taken or back to the queue; refused, the queue with the reason."""
    await check_csrf(request)
    user = required_user(request)
    entry_id = request.match_info.get("entry_id", "")
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            taken = await action(db, user, entry_id)
    except QueueError as exc:
        return await _queue_page(request, exc.message, status_of(exc))
    if taken is not None:
        raise see_other(request, "assistance-room", session_id=taken.assistance_session_id)
    raise see_other(request, "queue")


@routes.post("/file/suivant", name="queue-take-next")
@login_required(*VOLUNTEER_ROLES)
async def take_next(request: web.Request) -> web.StreamResponse:
    """ "Prendre le suivant" without JavaScript."""
    settings = request.app[SETTINGS_KEY]

    async def next_one(db: AsyncSession, user: User, _entry_id: str) -> QueueEntry:
        entry = await dropin.take_next(db, settings, user, utcnow())
        if entry is None:
            raise QueueError("empty", _("Personne n'attend pour le moment."))
        return entry

    return await _act(request, next_one)


@routes.post(ENTRY + "/prendre", name="queue-take")
@login_required(*VOLUNTEER_ROLES)
async def take(request: web.Request) -> web.StreamResponse:
    """Take one given person."""
    settings = request.app[SETTINGS_KEY]

    async def this_one(db: AsyncSession, user: User, entry_id: str) -> QueueEntry:
        return await dropin.take(db, settings, user, entry_id, utcnow())

    return await _act(request, this_one)


@routes.post(ENTRY + "/remettre", name="queue-requeue")
@login_required(*VOLUNTEER_ROLES)
async def requeue(request: web.Request) -> web.StreamResponse:
    """Put a person one took back at their place in the queue."""

    async def put_back(db: AsyncSession, user: User, entry_id: str) -> None:
        await dropin.requeue(db, user, entry_id, utcnow())

    return await _act(request, put_back)


@routes.post(ENTRY + "/transferer", name="queue-transfer")
@login_required(*VOLUNTEER_ROLES)
async def transfer(request: web.Request) -> web.StreamResponse:
    """Hand a person to another volunteer."""
    volunteer_id = parse_int((await read_form(request)).get("volunteer_id"), 1)

    async def hand_over(db: AsyncSession, user: User, entry_id: str) -> None:
        if volunteer_id is None:
            raise QueueError("no_target", _("Choisissez un bénévole."), "volunteer_id")
        await dropin.transfer(db, user, entry_id, volunteer_id, utcnow())

    return await _act(request, hand_over)


@routes.post(ENTRY + "/absent", name="queue-gone")
@login_required(*VOLUNTEER_ROLES)
async def gone(request: web.Request) -> web.StreamResponse:
    """The person was not there when called."""

    async def not_there(db: AsyncSession, user: User, entry_id: str) -> None:
        await dropin.mark_gone(db, user, entry_id, utcnow())

    return await _act(request, not_there)


@routes.post("/file/retirer", name="queue-remove")
@login_required(*VOLUNTEER_ROLES)
async def remove(request: web.Request) -> web.StreamResponse:
    """Remove several waiting people at once (the ticked ones, or everyone who joined in the
    last N minutes), as "retiré(e)s" or "absent(e)s": the answer to a flood of fake places."""
    form = await check_csrf(request)
    user = required_user(request)
    ticked = form.getall("entry_id", []) if isinstance(form, MultiMapping) else []
    entry_ids = [str(value)[:36] for value in ticked][: dropin.MAX_REMOVED_AT_ONCE]
    reason = dropin.LeftReason.GONE if form.get("reason") == "gone" else dropin.LeftReason.REMOVED
    now = utcnow()
    since = None
    if form.get("scope") == "recent":
        raw = str(form.get("since_minutes", ""))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= 24 * 60):
            return await _queue_page(
                request, _("Indiquez un nombre de minutes entre 1 et 1440."), 400
            )
        since = now - timedelta(minutes=int(raw))
        entry_ids = []
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            removed = await dropin.remove(
                db, user, now, entry_ids=entry_ids, since=since, reason=reason
            )
    except QueueError as exc:
        return await _queue_page(request, exc.message, status_of(exc))
    QUEUE_REMOVED_IN_BULK.labels(reason.value).inc(removed)
    raise see_other(request, "queue")
