"""Call-back pages: the public form under /rappel (no account, works without JavaScript) with its
cancel link, and the volunteers' list under /rappels (take, call, log the outcome, send a visio
link). The rules live in server/callback_requests.py; these views read forms and pick pages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import phonenumbers
from aiohttp import web
from limits import parse
from multidict import MultiMapping
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import callback_requests, handoff
from server.callback_requests import CallbackError, CallbackForm, InvalidRequest
from server.i18n import N_, _
from server.motifs import list_motifs
from server.notify.appointments import When
from server.notify.worker import wake
from server.ratelimit import Rule
from server.runtime import RATELIMIT_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import (
    Association,
    CallbackRequest,
    CallbackStatus,
    Motif,
    Role,
    User,
    utcnow,
)
from server.tokens import sha256_hex
from server.web.request import check_csrf, client_ip, current_user, login_required, render

# Attempts per IP are generous (typos, a shared office connection); requests made per IP and
# per phone are the real limits: nobody can fill the volunteers' list or someone's SMS inbox.
ATTEMPTS_PER_IP = Rule("callback-attempts-ip", parse("30/hour"))
REQUESTS_PER_IP = Rule("callback-requests-ip", parse("10/hour"))
REQUESTS_PER_PHONE = Rule("callback-requests-phone", parse("3/day"))
HONEYPOT = "site_web"
STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
FIELDS = ("phone", "email", "first_name", "motif", "postal_code", "message")
TOO_MANY = N_("Trop de demandes depuis cette connexion. Attendez un peu puis réessayez.")
TOO_MANY_PHONE = N_(
    "Ce numéro a déjà fait plusieurs demandes aujourd'hui. Nous vous rappellerons : "
    "inutile de redemander."
)
NOTICES = {
    "relachee": N_("La demande est de retour dans la liste."),
    "essai": N_("Essai noté. La demande revient dans la liste pour un autre appel plus tard."),
    "injoignable": N_("Essai noté. Après plusieurs appels sans réponse, la demande est close."),
    "aucune": N_("Aucune demande en attente pour le moment."),
}
STATUS_LABELS = {
    CallbackStatus.OPEN: N_("En attente"),
    CallbackStatus.CLAIMED: N_("En cours"),
    CallbackStatus.RESOLVED: N_("Terminée"),
    CallbackStatus.CANCELLED: N_("Annulée"),
    CallbackStatus.EXPIRED: N_("Close sans appel abouti"),
}


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_get("/rappel", request_page, name="callback-form")
    router.add_post("/rappel", submit, name="callback-submit")
    router.add_get("/rappel/annuler/{token}", cancel_page, name="callback-cancel-page")
    router.add_post("/rappel/annuler/{token}", cancel, name="callback-cancel")
    router.add_get("/rappels", list_page, name="callbacks")
    router.add_post("/rappels/prendre", take_oldest, name="callbacks-take-oldest")
    router.add_get("/rappels/{callback_id}", detail, name="callbacks-detail")
    router.add_post("/rappels/{callback_id}/prendre", take, name="callbacks-take")
    router.add_post("/rappels/{callback_id}/essai", attempt, name="callbacks-attempt")
    router.add_post("/rappels/{callback_id}/visio", visio, name="callbacks-visio")
    router.add_post("/rappels/{callback_id}/relacher", release, name="callbacks-release")


# -- Helpers ----------------------------------------------------------------------------------


def _int(value: object) -> int | None:
    text = str(value or "")
    if not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if number < 2**31 else None


def _not_found(text: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=text, content_type="text/plain")


async def _association(db: AsyncSession, raw: object) -> Association:
    """The association asked for (`a=<id>`), or the first one."""
    wanted = _int(raw)
    association = None
    if wanted is not None:
        association = await db.get(Association, wanted)
    elif raw in (None, ""):
        association = await db.scalar(select(Association).order_by(Association.id).limit(1))
    if association is None:
        raise _not_found(_("Cette association est introuvable. Vérifiez le lien."))
    return association


def masked_phone(e164: str) -> str:
    """A phone as shown in the list: "06 •• •• •• 78" (the full number is for the claimer)."""
    try:
        national = phonenumbers.format_number(
            phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        national = e164
    digits = sum(char.isdigit() for char in national)
    seen, out = 0, []
    for char in national:
        if char.isdigit():
            seen += 1
            out.append(char if seen <= 2 or seen > digits - 2 else "•")
        else:
            out.append(char)
    return "".join(out)


def age_label(created_at: datetime, now: datetime) -> str:
    """How long ago, in French: "il y a 12 min", "il y a 3 h", "il y a 2 j"."""
    minutes = max(0, int((now - created_at).total_seconds()) // 60)
    if minutes < 1:
        return _("à l'instant")
    if minutes < 60:
        return _("il y a %(n)d min") % {"n": minutes}
    if minutes < 48 * 60:
        return _("il y a %(n)d h") % {"n": minutes // 60}
    return _("il y a %(n)d j") % {"n": minutes // (24 * 60)}


def _user(request: web.Request) -> User:
    user = current_user(request)
    assert user is not None  # guaranteed by login_required
    return user


# -- Public: the form -------------------------------------------------------------------------


def _form(
    request: web.Request,
    association: Association,
    motifs: list[Motif],
    values: Mapping[str, str],
    windows: list[str],
    errors: Mapping[str, str],
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    context = {
        "association": association,
        "motifs": motifs,
        "windows": [(code, _(label)) for code, label in callback_requests.WINDOWS],
        "chosen": set(windows),
        "form": {key: values.get(key, "") for key in FIELDS},
        "errors": errors,
        "error": error,
        "honeypot": HONEYPOT,
        "message_max": callback_requests.MESSAGE_MAX,
    }
    return render(request, "callbacks/form.html", context, status)


async def request_page(request: web.Request) -> web.StreamResponse:
    """The call-back form, open at any hour (`?motif=` preselects a motif)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await _association(db, request.query.get("a"))
        motifs = await list_motifs(db, association.id, active_only=True)
    motif = _int(request.query.get("motif"))
    values = {"motif": str(motif) if motif in {m.id for m in motifs} else ""}
    return _form(request, association, motifs, values, [], {})


def _read(form: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The typed values (cut to a sane length) and the ticked windows."""
    values = {key: str(form.get(key, ""))[:1000] for key in FIELDS}
    raw = form.getall("windows", []) if isinstance(form, MultiMapping) else []
    return values, [str(value)[:20] for value in raw][:10]


async def submit(request: web.Request) -> web.StreamResponse:
    """Record the request and its acknowledgement in one transaction, then show the
    confirmation (a second submission for the same phone shows the pending one)."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    values, windows = _read(form)
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await _association(db, form.get("a"))
        motifs = await list_motifs(db, association.id, active_only=True)

    def page(errors: Mapping[str, str], error: str | None, status: int) -> web.Response:
        return _form(request, association, motifs, values, windows, errors, error, status)

    if form.get(HONEYPOT):
        return page({}, _("Votre demande n'a pas pu être enregistrée. Appelez l'association."), 400)
    limiter = request.app[RATELIMIT_KEY]
    ip = client_ip(request)
    if not await limiter.hit(ATTEMPTS_PER_IP, ip) or not await limiter.allowed(REQUESTS_PER_IP, ip):
        response = page({}, _(TOO_MANY), 429)
        response.headers["Retry-After"] = "600"
        return response
    motif_id = _int(values["motif"]) if values["motif"] else None
    typed = CallbackForm(
        phone=values["phone"],
        email=values["email"],
        first_name=values["first_name"],
        # Garbage in the select is no motif of this association: refused with its message.
        motif_id=-1 if values["motif"] and motif_id is None else motif_id,
        postal_code=values["postal_code"],
        windows=tuple(windows),
        message=values["message"],
    )
    try:
        clean = typed.validated(settings.timezone, {m.id for m in motifs})
    except InvalidRequest as exc:
        return page(exc.errors, _("Corrigez les champs indiqués en rouge."), 400)
    if not await limiter.hit(REQUESTS_PER_PHONE, sha256_hex(clean.phone)):
        response = page({}, _(TOO_MANY_PHONE), 429)
        response.headers["Retry-After"] = "3600"
        return response
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        association = await db.get_one(Association, association.id)
        done = await callback_requests.submit(db, settings, association, clean, utcnow())
    if done.cancel_token is None:
        context = {"association": association, "callback": done.request}
        return render(request, "callbacks/already.html", context)
    await limiter.hit(REQUESTS_PER_IP, ip)
    wake(request.app)
    raise web.HTTPSeeOther(location=f"/rappel/annuler/{done.cancel_token}?confirme=1")


# -- Public: the cancel link ------------------------------------------------------------------


async def _manage(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    token = request.match_info["token"]
    async with request.app[SESSIONMAKER_KEY]() as db:
        callback = await callback_requests.find_by_token(db, token)
        if callback is None:
            raise _not_found(_("Ce lien ne marche pas. Vérifiez le lien reçu."))
        association = await db.get_one(Association, callback.association_id)
        motif = await db.get(Motif, callback.motif_id) if callback.motif_id else None
    settings = request.app[SETTINGS_KEY]
    context = {
        "token": token,
        "callback": callback,
        "association": association,
        "motif": motif,
        "when": When.of(callback.created_at, callback.display_timezone),
        "windows": callback_requests.window_labels(callback.windows),
        "pending": callback.status in callback_requests.PENDING,
        "cancelled": callback.status == CallbackStatus.CANCELLED,
        "confirmed": request.query.get("confirme") == "1",
        "just_cancelled": request.query.get("annule") == "1",
        "cancel_url": callback_requests.cancel_url(settings, token),
        "base": f"/rappel/annuler/{token}",
        "error": error,
    }
    return render(request, "callbacks/manage.html", context, status)


async def cancel_page(request: web.Request) -> web.StreamResponse:
    """The person's request, with a button to cancel it (also the confirmation page)."""
    return await _manage(request)


async def cancel(request: web.Request) -> web.StreamResponse:
    """Cancel the request: it leaves the volunteers' list at once."""
    await check_csrf(request)
    token = request.match_info["token"]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.cancel(db, token, utcnow())
    except CallbackError as exc:
        if exc.code == "not_found":
            raise _not_found(exc.message) from None
        return await _manage(request, exc.message, 409)
    raise web.HTTPSeeOther(location=f"/rappel/annuler/{token}?annule=1")


# -- Volunteers -------------------------------------------------------------------------------


def _row(
    callback: CallbackRequest,
    now: datetime,
    flag_hours: int,
    motifs: Mapping[int, str],
    names: Mapping[int, str],
) -> dict[str, Any]:
    return {
        "id": callback.id,
        "age": age_label(callback.created_at, now),
        "late": (now - callback.created_at).total_seconds() > flag_hours * 3600,
        "motif": motifs.get(callback.motif_id or 0, _("Autre demande")),
        "windows": callback_requests.window_labels(callback.windows),
        "first_name": callback.first_name or _("(sans prénom)"),
        "phone": masked_phone(callback.phone),
        "open": callback.status == CallbackStatus.OPEN,
        "claimed_by": names.get(callback.claimed_by_id or 0),
        "attempts": callback.attempt_count,
    }


async def _names(db: AsyncSession, association_id: int) -> dict[int, str]:
    rows = await db.execute(select(User.id, User.name).where(User.association_id == association_id))
    return {user_id: name for user_id, name in rows.all()}


async def _list(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    user = _user(request)
    settings = request.app[SETTINGS_KEY]
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = await callback_requests.pending(db, user.association_id)
        motifs = await callback_requests.motif_names(db, user.association_id)
        names = await _names(db, user.association_id)
    notice = NOTICES.get(request.query.get("info", ""))
    context = {
        "rows": [_row(c, now, settings.callback_flag_hours, motifs, names) for c in rows],
        "flag_hours": settings.callback_flag_hours,
        "any_open": any(c.status == CallbackStatus.OPEN for c in rows),
        "me": user.id,
        "notice": _(notice) if notice else None,
        "error": error,
    }
    return render(request, "callbacks/list.html", context, status)


@login_required(*STAFF)
async def list_page(request: web.Request) -> web.StreamResponse:
    """Open and in-progress call-backs of the association, oldest first, late ones flagged."""
    return await _list(request)


@login_required(*STAFF)
async def take_oldest(request: web.Request) -> web.StreamResponse:
    """ "Prendre le plus ancien": claim the oldest open request and open it."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        callback = await callback_requests.claim_oldest(db, _user(request), utcnow())
    if callback is None:
        raise web.HTTPSeeOther(location="/rappels?info=aucune")
    raise web.HTTPSeeOther(location=f"/rappels/{callback.id}")


@login_required(*STAFF)
async def take(request: web.Request) -> web.StreamResponse:
    """ "Prendre": claim this request, unless another volunteer just did."""
    await check_csrf(request)
    callback_id = request.match_info["callback_id"]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.claim(db, _user(request), callback_id, utcnow())
    except CallbackError as exc:
        if exc.code == "not_found":
            raise _not_found(exc.message) from None
        return await _list(request, exc.message, 409)
    raise web.HTTPSeeOther(location=f"/rappels/{callback_id}")


async def _detail(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    user = _user(request)
    settings = request.app[SETTINGS_KEY]
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db:
        callback = await callback_requests.get(
            db, user.association_id, request.match_info["callback_id"]
        )
        if callback is None:
            raise _not_found(_("Demande introuvable."))
        motifs = await callback_requests.motif_names(db, user.association_id)
        names = await _names(db, user.association_id)
        tries = await callback_requests.attempts(db, callback.id)
        sheet = await handoff.sheet_for_callback(db, callback.id)
    mine = callback.claimed_by_id == user.id
    holding = mine and callback.status == CallbackStatus.CLAIMED
    row = _row(callback, now, settings.callback_flag_hours, motifs, names)
    phone = callback.phone
    try:
        national = phonenumbers.format_number(
            phonenumbers.parse(phone, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        national = phone
    booking_url = f"/rendez-vous?a={callback.association_id}"
    if callback.motif_id is not None:
        booking_url = f"/rendez-vous/motif/{callback.motif_id}?a={callback.association_id}"
    context = {
        "callback": callback,
        "row": row,
        "mine": mine,
        "holding": holding,
        "status_label": _(STATUS_LABELS[callback.status]),
        "outcome_label": _(callback_requests.OUTCOME_LABELS.get(callback.outcome or "", ""))
        if callback.outcome
        else None,
        "full_phone": national if mine else None,
        "tel": phone if mine else None,
        "outcomes": [(code, _(label)) for code, label in callback_requests.ATTEMPT_OUTCOMES],
        "attempts": [
            {
                "who": name,
                "when": When.of(attempt.created_at, settings.timezone),
                "outcome": _(
                    callback_requests.OUTCOME_LABELS.get(attempt.outcome, attempt.outcome)
                ),
            }
            for attempt, name in tries
        ],
        "created": When.of(callback.created_at, settings.timezone),
        "booking_url": booking_url,
        "max_no_answer": settings.callback_max_no_answer,
        "flag_hours": settings.callback_flag_hours,
        "error": error,
        # Helped on the phone (or to book for): the claimer files the handoff sheet.
        "sheet_url": f"/rappels/{callback.id}/fiche"
        if mine
        and callback.status == CallbackStatus.RESOLVED
        and callback.outcome in handoff.CALLBACK_SHEET_OUTCOMES
        and callback.assistance_session_id is None
        else None,
        "sheet_filed": sheet is not None,
    }
    return render(request, "callbacks/detail.html", context, status)


@login_required(*STAFF)
async def detail(request: web.Request) -> web.StreamResponse:
    """One request: full contact for its claimer, read-only (with "Prendre") for the others."""
    return await _detail(request)


async def _act_error(request: web.Request, exc: CallbackError) -> web.Response:
    if exc.code == "not_found":
        raise _not_found(exc.message)
    return await _detail(request, exc.message, 400 if exc.code == "invalid_outcome" else 409)


@login_required(*STAFF)
async def attempt(request: web.Request) -> web.StreamResponse:
    """Log a call and its outcome; no answer puts the request back in the list."""
    form = await check_csrf(request)
    callback_id = request.match_info["callback_id"]
    settings = request.app[SETTINGS_KEY]
    outcome = str(form.get("outcome", ""))[:20]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            callback = await callback_requests.log_attempt(
                db, settings, _user(request), callback_id, outcome, utcnow()
            )
    except CallbackError as exc:
        return await _act_error(request, exc)
    if callback.status == CallbackStatus.OPEN:
        raise web.HTTPSeeOther(location="/rappels?info=essai")
    if callback.status == CallbackStatus.EXPIRED:
        raise web.HTTPSeeOther(location="/rappels?info=injoignable")
    raise web.HTTPSeeOther(location=f"/rappels/{callback_id}")


@login_required(*STAFF)
async def visio(request: web.Request) -> web.StreamResponse:
    """Send the person a visio link and code, then open the assistance room."""
    await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            session = await callback_requests.send_visio_link(
                db, settings, _user(request), request.match_info["callback_id"], utcnow()
            )
    except CallbackError as exc:
        return await _act_error(request, exc)
    wake(request.app)
    raise web.HTTPSeeOther(location=f"/assistance/{session.id}")


@login_required(*STAFF)
async def release(request: web.Request) -> web.StreamResponse:
    """ "Relâcher": give the request back to the list for someone else."""
    await check_csrf(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.release(db, _user(request), request.match_info["callback_id"])
    except CallbackError as exc:
        return await _act_error(request, exc)
    raise web.HTTPSeeOther(location="/rappels?info=relachee")
