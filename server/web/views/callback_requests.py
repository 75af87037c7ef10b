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

from server import callback_requests, handoff, links, pow
from server.callback_requests import CallbackError, CallbackForm, InvalidRequest
from server.errors import Kind
from server.i18n import N_, _
from server.integers import parse_int
from server.motifs import list_motifs
from server.notify import outbox
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import (
    Association,
    CallbackRequest,
    CallbackStatus,
    Motif,
    Role,
    User,
    utcnow,
)
from server.timezones import When
from server.tokens import sha256_hex
from server.web import pressure
from server.web.language import request_language
from server.web.middlewares import status_of
from server.web.request import (
    check_csrf,
    client_key,
    login_required,
    render,
    required_user,
    see_other,
    url_for,
)

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


routes = web.RouteTableDef()
CALLBACK = "/rappels/{callback_id:[0-9a-f-]{36}}"


# -- Helpers ----------------------------------------------------------------------------------


def _not_found(text: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=text, content_type="text/plain")


async def _association(db: AsyncSession, raw: object) -> Association:
    """The association asked for (`a=<id>`), or the first one."""
    wanted = parse_int(raw)
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
    challenge: dict[str, Any] | None = None,
) -> web.Response:
    context = {
        "pow": challenge,
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


@routes.get("/rappel", name="callback-form")
async def request_page(request: web.Request) -> web.StreamResponse:
    """The call-back form, open at any hour (`?motif=` preselects a motif)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await _association(db, request.query.get("a"))
        motifs = await list_motifs(db, association.id, active_only=True)
    motif = parse_int(request.query.get("motif"))
    values = {"motif": str(motif) if motif in {m.id for m in motifs} else ""}
    challenge = await pressure.challenge_for(request, "callback_requests")
    return _form(request, association, motifs, values, [], {}, challenge=challenge)


def _read(form: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The typed values (cut to a sane length) and the ticked windows."""
    values = {key: str(form.get(key, ""))[:1000] for key in FIELDS}
    raw = form.getall("windows", []) if isinstance(form, MultiMapping) else []
    return values, [str(value)[:20] for value in raw][:10]


@routes.post("/rappel", name="callback-submit")
async def submit(request: web.Request) -> web.StreamResponse:
    """Record the request and its acknowledgement in one transaction, then show the
    confirmation (a second submission for the same phone shows the pending one)."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    values, windows = _read(form)
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await _association(db, form.get("a"))
        motifs = await list_motifs(db, association.id, active_only=True)

    async def page(errors: Mapping[str, str], error: str | None, status: int) -> web.Response:
        challenge = await pressure.challenge_for(request, "callback_requests")
        return _form(
            request, association, motifs, values, windows, errors, error, status, challenge
        )

    if form.get(HONEYPOT):
        return await page(
            {}, _("Votre demande n'a pas pu être enregistrée. Appelez l'association."), 400
        )
    limiter = request.app[RATELIMIT_KEY]
    ip = client_key(request)
    if not await limiter.hit(ATTEMPTS_PER_IP, ip) or not await limiter.allowed(REQUESTS_PER_IP, ip):
        response = await page({}, _(TOO_MANY), 429)
        response.headers["Retry-After"] = "600"
        return response
    motif_id = parse_int(values["motif"]) if values["motif"] else None
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
        clean = typed.validated(settings.timezone, {m.id for m in motifs}, settings.phone_regions)
    except InvalidRequest as exc:
        return await page(exc.errors, exc.message, status_of(exc))
    try:  # before the per-phone count: a missing proof of work costs the phone nothing
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await pressure.check_form(request, db, "callback_requests", form)
    except pow.ProofOfWorkError as exc:
        return await page({}, exc.message, status_of(exc))
    if not await limiter.hit(REQUESTS_PER_PHONE, sha256_hex(clean.phone)):
        response = await page({}, _(TOO_MANY_PHONE), 429)
        response.headers["Retry-After"] = "3600"
        return response
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        association = await db.get_one(Association, association.id)
        done = await callback_requests.submit(
            db,
            settings,
            association,
            clean,
            utcnow(),
            sms_budget=limiter,
            language=request_language(request).code,
        )
    await pressure.spend(request, "callback_requests")
    if done.cancel_token is None:
        context = {"association": association, "callback": done.request}
        return render(request, "callbacks/already.html", context)
    await limiter.hit(REQUESTS_PER_IP, ip)
    raise see_other(request, links.CALLBACK_MANAGE.name, {"confirme": 1}, token=done.cancel_token)


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
        sms_withheld = await outbox.withheld_sms(db, key_prefix=f"callback:{callback.id}:ack:")
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
        # Its acknowledgement SMS was held back (a cap): say so, and that e-mail is used.
        "sms_withheld": sms_withheld is not None,
        "cancel_url": callback_requests.cancel_url(settings, token),
        "base": url_for(request, links.CALLBACK_MANAGE.name, token=token),
        "error": error,
    }
    return render(request, "callbacks/manage.html", context, status)


@routes.get(links.CALLBACK_MANAGE.path, name=links.CALLBACK_MANAGE.name)
async def cancel_page(request: web.Request) -> web.StreamResponse:
    """The person's request, with a button to cancel it (also the confirmation page)."""
    return await _manage(request)


@routes.post(links.CALLBACK_MANAGE.path, name="callback-cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    """Cancel the request: it leaves the volunteers' list at once."""
    await check_csrf(request)
    token = request.match_info["token"]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.cancel(db, token, utcnow())
    except CallbackError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise
        return await _manage(request, exc.message, status_of(exc))
    raise see_other(request, links.CALLBACK_MANAGE.name, {"annule": 1}, token=token)


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
    user = required_user(request)
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


@routes.get(links.CALLBACKS.path, name=links.CALLBACKS.name)
@login_required(*STAFF)
async def list_page(request: web.Request) -> web.StreamResponse:
    """Open and in-progress call-backs of the association, oldest first, late ones flagged."""
    return await _list(request)


@routes.post("/rappels/prendre", name="callbacks-take-oldest")
@login_required(*STAFF)
async def take_oldest(request: web.Request) -> web.StreamResponse:
    """ "Prendre le plus ancien": claim the oldest open request and open it."""
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        callback = await callback_requests.claim_oldest(db, required_user(request), utcnow())
    if callback is None:
        raise see_other(request, "callbacks", {"info": "aucune"})
    raise see_other(request, "callbacks-detail", callback_id=callback.id)


@routes.post(CALLBACK + "/prendre", name="callbacks-take")
@login_required(*STAFF)
async def take(request: web.Request) -> web.StreamResponse:
    """ "Prendre": claim this request, unless another volunteer just did."""
    await check_csrf(request)
    callback_id = request.match_info["callback_id"]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.claim(db, required_user(request), callback_id, utcnow())
    except CallbackError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise
        return await _list(request, exc.message, status_of(exc))
    raise see_other(request, "callbacks-detail", callback_id=callback_id)


async def _detail(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    user = required_user(request)
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
    for_association = {"a": callback.association_id}
    booking_url = url_for(request, links.BOOKING.name, for_association)
    if callback.motif_id is not None:
        booking_url = url_for(
            request, links.BOOKING_SLOTS.name, for_association, motif_id=callback.motif_id
        )
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
        "sheet_url": url_for(request, "handoff-callback-form", callback_id=callback.id)
        if mine
        and callback.status == CallbackStatus.RESOLVED
        and callback.outcome in handoff.CALLBACK_SHEET_OUTCOMES
        and callback.assistance_session_id is None
        else None,
        "sheet_filed": sheet is not None,
    }
    return render(request, "callbacks/detail.html", context, status)


@routes.get(CALLBACK, name="callbacks-detail")
@login_required(*STAFF)
async def detail(request: web.Request) -> web.StreamResponse:
    """One request: full contact for its claimer, read-only (with "Prendre") for the others."""
    return await _detail(request)


async def _act_error(request: web.Request, exc: CallbackError) -> web.Response:
    if exc.kind is Kind.NOT_FOUND:
        raise exc
    return await _detail(request, exc.message, status_of(exc))


@routes.post(CALLBACK + "/essai", name="callbacks-attempt")
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
                db, settings, required_user(request), callback_id, outcome, utcnow()
            )
    except CallbackError as exc:
        return await _act_error(request, exc)
    if callback.status == CallbackStatus.OPEN:
        raise see_other(request, "callbacks", {"info": "essai"})
    if callback.status == CallbackStatus.EXPIRED:
        raise see_other(request, "callbacks", {"info": "injoignable"})
    raise see_other(request, "callbacks-detail", callback_id=callback_id)


@routes.post(CALLBACK + "/visio", name="callbacks-visio")
@login_required(*STAFF)
async def visio(request: web.Request) -> web.StreamResponse:
    """Send the person a visio link and code, then open the assistance room."""
    await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            session = await callback_requests.send_visio_link(
                db,
                settings,
                required_user(request),
                request.match_info["callback_id"],
                utcnow(),
                sms_budget=request.app[RATELIMIT_KEY],
            )
    except CallbackError as exc:
        return await _act_error(request, exc)
    raise see_other(request, "assistance-room", session_id=session.id)


@routes.post(CALLBACK + "/relacher", name="callbacks-release")
@login_required(*STAFF)
async def release(request: web.Request) -> web.StreamResponse:
    """ "Relâcher": give the request back to the list for someone else."""
    await check_csrf(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await callback_requests.release(
                db, required_user(request), request.match_info["callback_id"]
            )
    except CallbackError as exc:
        return await _act_error(request, exc)
    raise see_other(request, "callbacks", {"info": "relachee"})
