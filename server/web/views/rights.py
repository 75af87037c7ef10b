"""The rights check (issue 16) in the volunteer's room and on the handoff sheet's form.

Two places, the same form (``rights/_form.html``, fetched by ``web/static/js/rights.js`` the
first time "Vérifier les droits" is pressed, so that the room's first load does not carry it):

- in the room: ``/assistance/<session_id>/droits``, for the volunteer holding the session;
- from a filed sheet: ``/fiches/<sheet_id>/droits``, for whoever may edit that sheet.

``POST`` there checks the answers (JSON) and computes every benefit; ``POST …/droits/fiche`` puts
the benefits to claim on the handoff sheet (with their amounts if the person agreed), or takes
them off. Bodies and answers are JSON; a refusal is ``{"error": {"code", "message", "errors"?}}``,
in French. The model runs outside any database transaction (seconds of CPU in the
engine's pool); what it gave is stored in a short one after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from limits import parse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import geo, handoff, i18n
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.ratelimit import RATELIMIT_KEY, Rule
from server.rights import answers as rights_answers
from server.rights import checks, display
from server.rights.benefits import BENEFITS
from server.rights.engine import EngineUnavailable
from server.runtime import RIGHTS_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import AssistanceSession, RightsCheck, Role, User
from server.web.middlewares import status_of
from server.web.request import check_csrf, login_required, render, required_user, url_for

routes = web.RouteTableDef()
STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
SESSION = "/assistance/{session_id:[0-9a-f-]{36}}/droits"
SHEET = "/fiches/{sheet_id:[0-9a-f-]{36}}/droits"

# A check costs one to two CPU seconds in the pool: a volunteer redoes one after a correction,
# rarely more than a few times an hour.
CHECKS_PER_VOLUNTEER = Rule("rights-check-volunteer", parse("30/10 minutes"))
# The form's answers are well under 2 KB; what is far bigger is not the form.
MAX_BODY_BYTES = 16 * 1024

NOT_FOUND = N_("Cette assistance ou cette fiche n'existe pas, ou ne vous concerne pas.")
NO_CHECK = N_("Faites d'abord la vérification des droits.")
UNREADABLE = N_("Les réponses n'ont pas pu être lues. Rechargez la page et réessayez.")
TOO_LARGE = N_("Ce que vous envoyez est trop gros.")
TOO_MANY = N_("Beaucoup de vérifications en peu de temps. Attendez quelques minutes.")
OFF = N_("La vérification des droits n'est pas disponible sur ce serveur.")


class RightsRefused(DomainError):
    """A refusal of these views that is not the answers' (not found, body, rate)."""


@dataclass(frozen=True)
class Target:
    """Where a check belongs: a live or ended session, or a filed sheet."""

    kind: str  # "session" | "sheet"
    id: str

    @property
    def route(self) -> tuple[str, dict[str, str]]:
        """The (route-name prefix, parts) of this target's URLs."""
        if self.kind == "session":
            return "rights-session", {"session_id": self.id}
        return "rights-sheet", {"sheet_id": self.id}


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    response = web.json_response(data, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _refusal(error: DomainError) -> web.Response:
    return _json({"error": error.as_json()}, status_of(error))


def _not_found() -> RightsRefused:
    return RightsRefused("not_found", _(NOT_FOUND), kind=Kind.NOT_FOUND)


def _today(request: web.Request) -> date:
    return datetime.now(ZoneInfo(request.app[SETTINGS_KEY].timezone)).date()


async def _check_access(request: web.Request, target: Target, user: User) -> None:
    """The target if this account may check rights there, else RightsRefused (404)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        if target.kind == "session":
            found: object = await handoff.subject_for_session(db, target.id, user)
        else:
            found = await handoff.editable_sheet(db, target.id, user)
    if found is None:
        raise _not_found()


def _target(request: web.Request) -> Target:
    if "session_id" in request.match_info:
        return Target("session", request.match_info["session_id"])
    return Target("sheet", request.match_info["sheet_id"])


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object posted, or RightsRefused (400 unreadable, 413 too large)."""
    too_large = RightsRefused("body_too_large", _(TOO_LARGE), kind=Kind.TOO_LARGE)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > MAX_BODY_BYTES:
        raise too_large
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8
        body = None
    if not isinstance(body, dict):
        raise RightsRefused("invalid_json", _(UNREADABLE))
    return body


def _answer(check: RightsCheck, person_language: str | None = None) -> dict[str, Any]:
    """What the form shows of a stored check: the check, its words for the volunteer, and in a
    session whose person reads another language, the same words in theirs (what "Montrer à la
    personne" sends them)."""
    answer = {"check": checks.check_json(check), "view": display.check_view(check).to_json()}
    if person_language and person_language != i18n.DEFAULT_LOCALE:
        with i18n.use_language(person_language):
            answer["person_view"] = display.check_view(check).to_json()
    return answer


async def _person_language(db: AsyncSession, target: Target) -> str | None:
    """The language of the session's person (their page's), None for a sheet's check."""
    if target.kind != "session":
        return None
    return await db.scalar(
        select(AssistanceSession.language).where(AssistanceSession.id == target.id)
    )


async def _language_of(request: web.Request, target: Target) -> str | None:
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await _person_language(db, target)


async def _stored_check(request: web.Request, target: Target) -> RightsCheck | None:
    async with request.app[SESSIONMAKER_KEY]() as db:
        if target.kind == "session":
            return await checks.check_of_session(db, target.id)
        sheet = await handoff.editable_sheet(db, target.id, required_user(request))
        return await checks.check_of_sheet(db, sheet) if sheet is not None else None


# -- The form's parts -------------------------------------------------------------------------


async def _form_parts(request: web.Request) -> web.StreamResponse:
    """The form and its French strings, for rights.js (a 404 page if not this account's).
    ``?pour=personne``: the same form in the language of the session's person, from which
    rights.js names the questions and answers it shows them (never displayed to the volunteer)."""
    target = _target(request)
    try:
        await _check_access(request, target, required_user(request))
    except RightsRefused as exc:
        raise web.HTTPNotFound(text=exc.message, content_type="text/plain") from None
    person_language = await _language_of(request, target)
    theirs = person_language if person_language != i18n.DEFAULT_LOCALE else None
    if request.query.get("pour") == "personne":
        with i18n.use_language(theirs):
            return _form_page(request, target, None, None)
    stored = await _stored_check(request, target)
    return _form_page(request, target, stored, theirs)


def _form_page(
    request: web.Request,
    target: Target,
    stored: RightsCheck | None,
    person_language: str | None,
) -> web.Response:
    prefix, parts = target.route
    urls = {
        "check": url_for(request, prefix + "-check", **parts),
        "sheet": url_for(request, prefix + "-put", **parts),
        "communes": url_for(request, "rights-communes"),
    }
    if person_language:
        form_url = url_for(request, prefix + "-form", **parts)
        urls["person_form"] = f"{form_url}?pour=personne"
    config = {
        "available": request.app.get(RIGHTS_KEY) is not None,
        "context": target.kind,
        "urls": urls,
        "stored": _answer(stored, person_language) if stored else None,
    }
    context = {
        "rights": config,
        "received_choices": [(code, display.label_of(code)) for code in BENEFITS],
        "activities": [(code, _(text)) for code, text in ACTIVITY_LABELS],
        "housings": [(code, _(text)) for code, text in HOUSING_LABELS],
        "disabilities": [(code, _(text)) for code, text in DISABILITY_LABELS],
        "max_children": rights_answers.MAX_CHILDREN,
    }
    response = render(request, "rights/_form.html", context)
    response.headers["Cache-Control"] = "no-store"
    return response


ACTIVITY_LABELS = (
    ("salarie", N_("Travaille (salarié, intérim, indépendant)")),
    ("chomeur", N_("Cherche un emploi (chômage)")),
    ("retraite", N_("Retraité")),
    ("etudiant", N_("Étudiant")),
    ("inactif", N_("Ne travaille pas (autre situation)")),
)
HOUSING_LABELS = (
    ("tenant", N_("Locataire (logement privé)")),
    ("social_tenant", N_("Locataire d'un logement social (HLM)")),
    ("owner", N_("Propriétaire")),
    ("hosted", N_("Hébergé gratuitement (famille, amis)")),
    ("homeless", N_("Sans domicile")),
)
DISABILITY_LABELS = (
    ("lt50", N_("Moins de 50 %")),
    ("50_79", N_("De 50 à 79 %")),
    ("80_plus", N_("Au moins 80 %")),
)


@routes.get(SESSION, name="rights-session-form")
@login_required(*STAFF)
async def session_form(request: web.Request) -> web.StreamResponse:
    """The rights form of an assistance (the room, or its sheet's form before filing)."""
    return await _form_parts(request)


@routes.get(SHEET, name="rights-sheet-form")
@login_required(*STAFF)
async def sheet_form(request: web.Request) -> web.StreamResponse:
    """The rights form of a filed sheet."""
    return await _form_parts(request)


# -- Checking ---------------------------------------------------------------------------------


async def _check(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    target = _target(request)
    user = required_user(request)
    try:
        await _check_access(request, target, user)
        if not await request.app[RATELIMIT_KEY].hit(CHECKS_PER_VOLUNTEER, str(user.id)):
            raise RightsRefused("rate_limited", _(TOO_MANY), kind=Kind.RATE_LIMITED)
        body = await _json_body(request)
        engine = request.app.get(RIGHTS_KEY)
        if engine is None:
            # Impossible answers are said first, whether the engine runs here or not.
            rights_answers.parse_answers(body.get("answers"))
            raise EngineUnavailable("rights_off", _(OFF))
        # Seconds in the pool: outside any transaction.
        evaluation = await checks.evaluate(engine, body.get("answers"), _today(request))
        keep = body.get("keep_answers") is True
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            if target.kind == "session":
                # Checked again in this transaction: the session may have moved meanwhile.
                subject = await handoff.subject_for_session(db, target.id, user)
                session = subject.session if subject is not None else None
                if session is None:
                    raise _not_found()
                check = await checks.save_for_session(
                    db, session, user.id, evaluation, keep_answers=keep
                )
                person_language = session.language
            else:
                person_language = None
                sheet = await handoff.editable_sheet(db, target.id, user)
                if sheet is None:
                    raise _not_found()
                check = await checks.save_for_sheet(
                    db, sheet, user.id, evaluation, keep_answers=keep
                )
            answer = _answer(check, person_language)
    except DomainError as exc:
        response = _refusal(exc)
        if exc.kind is Kind.RATE_LIMITED:
            response.headers["Retry-After"] = "60"
        return response
    return _json(answer)


@routes.post(SESSION, name="rights-session-check")
@login_required(*STAFF)
async def session_check(request: web.Request) -> web.StreamResponse:
    """Check the answers and compute every benefit, in the session (JSON in, JSON out)."""
    return await _check(request)


@routes.post(SHEET, name="rights-sheet-check")
@login_required(*STAFF)
async def sheet_check(request: web.Request) -> web.StreamResponse:
    """Check the answers and compute every benefit, from a filed sheet (JSON in, JSON out)."""
    return await _check(request)


# -- On the sheet -----------------------------------------------------------------------------


async def _put_on_sheet(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    target = _target(request)
    user = required_user(request)
    try:
        await _check_access(request, target, user)
        body = await _json_body(request)
        on_sheet = body.get("on_sheet") is True
        show_amounts = body.get("show_amounts") is True
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            if target.kind == "session":
                check = await checks.check_of_session(db, target.id)
            else:
                sheet = await handoff.editable_sheet(db, target.id, user)
                check = await checks.check_of_sheet(db, sheet) if sheet is not None else None
            if check is None:
                raise RightsRefused("no_check", _(NO_CHECK), kind=Kind.CONFLICT)
            await checks.set_on_sheet(db, check, on_sheet=on_sheet, show_amounts=show_amounts)
            answer = _answer(check, await _person_language(db, target))
    except DomainError as exc:
        return _refusal(exc)
    return _json(answer)


@routes.post(SESSION + "/fiche", name="rights-session-put")
@login_required(*STAFF)
async def session_put(request: web.Request) -> web.StreamResponse:
    """Put the benefits to claim on the session's sheet (``{"on_sheet", "show_amounts"}``)."""
    return await _put_on_sheet(request)


@routes.post(SHEET + "/fiche", name="rights-sheet-put")
@login_required(*STAFF)
async def sheet_put(request: web.Request) -> web.StreamResponse:
    """Put the benefits to claim on a filed sheet (``{"on_sheet", "show_amounts"}``)."""
    return await _put_on_sheet(request)


# -- Communes ---------------------------------------------------------------------------------


@routes.get("/droits/communes", name="rights-communes")
@login_required(*STAFF)
async def communes(request: web.Request) -> web.StreamResponse:
    """The communes a postal code serves (``?cp=13008``), for the form's commune list."""
    postal = geo.normalize_postal_code(request.query.get("cp", "")[:20])
    found = geo.communes_for(postal) if postal else []
    response = _json({"communes": [{"code": c.code, "name": c.name} for c in found]})
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
