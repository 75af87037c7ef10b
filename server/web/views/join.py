"""Beneficiary pages: join by link or code, then the one-page room. No account, no install."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist as domain
from server import booking, links, passes, ratelimit
from server.i18n import N_, _
from server.integers import typed_digits
from server.qr import qr_svg
from server.ratelimit import RATELIMIT_KEY
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Appointment, AppointmentStatus, AssistanceSession, utcnow
from server.timezones import When
from server.tokens import sha256_hex
from server.turn import session_ice_servers
from server.vault.context import vault_context_token
from server.vault.vaults import CATEGORIES as VAULT_CATEGORIES
from server.web.request import (
    beneficiary_session_id,
    check_csrf,
    client_key,
    render,
    set_cookie,
    url_for,
)
from server.web.views.handoff import note_contact_proof

INVALID_LINK = N_("Ce lien ne marche pas ou plus. Demandez un nouveau lien ou un code au bénévole.")
routes = web.RouteTableDef()
INVALID_CODE = N_("Ce code ne marche pas. Vérifiez les chiffres ou demandez un nouveau code.")
TOO_MANY_CODES = N_(
    "Trop d'essais. Attendez un peu, ou ouvrez le lien reçu par SMS. Le bénévole peut aussi "
    "vous l'envoyer."
)


def enter_session(request: web.Request, session: AssistanceSession) -> web.Response:
    """Give the browser a pass for this session and show the room at once. No redirect to
    /b: on a slow mobile link that is a round trip (150–400 ms) before anything shows; the
    page's script puts /b in the address bar (and takes the link's token out of it), so a
    reload opens /b with the pass."""
    response = _room_page(request, session)
    settings = request.app[SETTINGS_KEY]
    value = passes.beneficiary_pass(settings, session.id)
    seconds = min(
        passes.beneficiary_pass_seconds(settings), domain.pass_seconds_left(session, utcnow())
    )
    set_cookie(request, response, passes.BENEFICIARY_COOKIE, value, seconds)
    return response


def _not_yet(request: web.Request, appointment: Appointment, *, refresh: bool) -> web.Response:
    """The friendly "come back at …" page of an appointment not yet open (no pass cookie)."""
    tz = appointment.display_timezone
    context = {
        "cancelled": False,
        "when": When.of(appointment.starts_at, tz),
        "opens": When.of(booking.join_opens_at(appointment), tz),
        "refresh": refresh,
    }
    return render(request, "booking/waiting.html", context)


def _cancelled(request: web.Request, moved: bool = False) -> web.Response:
    context = {"cancelled": True, "moved": moved, "refresh": False}
    return render(request, "booking/waiting.html", context, 410)


async def _gate(
    request: web.Request, db: AsyncSession, session: AssistanceSession, *, refresh: bool
) -> web.Response | None:
    """None if the session may be entered now; else the page to show instead."""
    appointment = await booking.appointment_for_session(db, session.id)
    if appointment is None or booking.can_join(appointment, session, utcnow()):
        return None  # a plain assistance, or an appointment that is open
    if appointment.status == AppointmentStatus.CANCELLED:
        return _cancelled(request)
    if utcnow() < booking.join_opens_at(appointment):
        return _not_yet(request, appointment, refresh=refresh)
    return render(request, "beneficiary/invalid.html", {"message": _(INVALID_LINK)}, 404)


async def _cancelled_appointment_link(db: AsyncSession, token: str) -> str | None:
    """ "cancelled" or "moved" when a dead link belonged to such an appointment (to say so
    plainly), else None."""
    if not token or len(token) > 128:
        return None
    row = (
        await db.execute(
            select(Appointment.status, Appointment.moved_to_id)
            .join(AssistanceSession, AssistanceSession.id == Appointment.assistance_session_id)
            .where(AssistanceSession.join_token_hash == sha256_hex(token))
        )
    ).one_or_none()
    if row is None or row[0] != AppointmentStatus.CANCELLED:
        return None
    return "moved" if row[1] else "cancelled"


@routes.get(links.JOIN.path, name=links.JOIN.name)
async def join_link(request: web.Request) -> web.StreamResponse:
    """`/j/<token>`: a valid link enters the room (an appointment's only from 15 min before);
    anything else gets the same neutral page."""
    token = request.match_info["token"]
    async with request.app[SESSIONMAKER_KEY]() as db:
        session = await domain.find_by_token(db, token)
        if session is None:
            closed = await _cancelled_appointment_link(db, token)
            if closed is not None:
                return _cancelled(request, moved=closed == "moved")
            return render(request, "beneficiary/invalid.html", {"message": _(INVALID_LINK)}, 404)
        refused = await _gate(request, db, session, refresh=True)
    if refused is not None:
        return refused
    await note_contact_proof(request, session)
    return enter_session(request, session)


def _code_page(
    request: web.Request, code: str = "", error: str | None = None, status: int = 200
) -> web.Response:
    digits = request.app[SETTINGS_KEY].code_digits
    context = {"code": code, "error": error, "digits": digits}
    return render(request, "beneficiary/code.html", context, status)


@routes.get(links.CODE.path, name=links.CODE.name)
async def code_page(request: web.Request) -> web.StreamResponse:
    """The page where the beneficiary types the join code."""
    prefill = typed_digits(request.query.get("c", ""), 40)
    return _code_page(
        request, prefill if len(prefill) == request.app[SETTINGS_KEY].code_digits else ""
    )


@routes.post(links.CODE.path, name="code-submit")
async def submit_code(request: web.Request) -> web.StreamResponse:
    """Check a code, limited per client, per code and by the global wrong-code budget. A code
    nobody holds and a code not usable now (an appointment's before its window) get the same
    answer: one query, status 400, the same page."""
    form = await check_csrf(request)
    code = typed_digits(str(form.get("code", "")), 40)
    limiter = request.app[RATELIMIT_KEY]
    if not await ratelimit.code_try_allowed(limiter, client_key(request), code):
        response = _code_page(request, error=_(TOO_MANY_CODES), status=429)
        response.headers["Retry-After"] = "300"
        return response
    async with request.app[SESSIONMAKER_KEY]() as db:
        session = await domain.find_by_code(db, request.app[SETTINGS_KEY], code)
        if session is not None and await _gate(request, db, session, refresh=False) is not None:
            session = None
    if session is None:
        await ratelimit.wrong_code(limiter)
        return _code_page(request, error=_(INVALID_CODE), status=400)
    return enter_session(request, session)


async def _pass_session(request: web.Request) -> AssistanceSession | None:
    session_id = beneficiary_session_id(request)
    if session_id is None:
        return None
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await domain.get_live(db, session_id)


@routes.get("/b", name="beneficiary-room")
async def room(request: web.Request) -> web.StreamResponse:
    """The beneficiary's single page: consent, then share screen/camera/photo, talk, chat."""
    session = await _pass_session(request)
    if session is None:
        return render(request, "beneficiary/invalid.html", {"message": _(INVALID_LINK)}, 404)
    return _room_page(request, session)


def _room_page(request: web.Request, session: AssistanceSession) -> web.Response:
    """The room of `session`, with what its script needs before the first offer (the ICE
    servers: no request for them after "Commencer"), the link to the vault page and where its
    vault parts are (issue 15: fetched only when used)."""
    settings = request.app[SETTINGS_KEY]
    config = {
        "role": "beneficiary",
        "session_id": session.id,
        "room_url": url_for(request, "beneficiary-room"),
        "ice": session_ice_servers(settings, session.id),
        "vault": {
            "link": _vault_link(request, session),
            "parts_url": url_for(request, "beneficiary-vault"),
        },
    }
    context = {"config": config, "beneficiary_name": session.beneficiary_name}
    return render(request, "beneficiary/room.html", context)


def _vault_link(request: web.Request, session: AssistanceSession) -> str:
    """The vault page, signed with this session: a vault made from it is counted under the
    session's association (``server/vault/context.py``)."""
    token = vault_context_token(request.app[SETTINGS_KEY], session.id)
    return url_for(request, "vault", {"depuis": token})


@routes.get("/b/coffre-fort", name="beneficiary-vault")
async def room_vault(request: web.Request) -> web.StreamResponse:
    """The room's vault parts (issue 15), fetched by the room's script the first time the person
    shows a document or is offered to keep a photo: the picker, the suggestion, their French
    strings, the vault API's addresses and the categories' labels."""
    session = await _pass_session(request)
    if session is None:
        return render(request, "beneficiary/invalid.html", {"message": _(INVALID_LINK)}, 404)
    vault = {
        "link": _vault_link(request, session),
        "urls": {
            "vault": url_for(request, "vault-api"),
            "documents": url_for(request, "vault-documents"),
        },
        "categories": [
            {"code": code, "label": _(label)} for code, label in VAULT_CATEGORIES.items()
        ],
    }
    return render(request, "beneficiary/_vault.html", {"vault": vault})


@routes.post("/b/continue", name="beneficiary-handover")
async def continue_on_pc(request: web.Request) -> web.StreamResponse:
    """From a phone: a fresh code and the short URL to continue the same session on a PC."""
    await check_csrf(request)
    session = await _pass_session(request)
    if session is None:
        raise web.HTTPForbidden(text=_(INVALID_LINK), content_type="text/plain")
    if not await request.app[RATELIMIT_KEY].hit(ratelimit.CONTINUE_PER_SESSION, session.id):
        raise web.HTTPTooManyRequests(
            text=_("Trop d'essais. Attendez quelques minutes puis réessayez."),
            content_type="text/plain",
        )
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        session = await db.get_one(AssistanceSession, session.id, with_for_update=True)
        code = await domain.assign_new_code(db, settings, session)
    url = links.CODE.url(settings)
    return web.json_response(
        {
            "code": code,
            "url": url,
            "qr_svg": str(
                qr_svg(links.CODE.url(settings, {"c": code}), title=_("QR code pour continuer"))
            ),
            "expires_in_minutes": settings.code_ttl_minutes,
        }
    )
