"""Handoff sheet pages: the volunteer's form after a session or a call-back, the beneficiary's
printable sheet (their link, their room pass, their queue place, their appointment's manage
link), the referrer's and the coordinator's reading. Rules live in server/handoff.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping

from server import assist, booking, data_used, handoff, links, passes
from server.contact import PROOF_PARAMETER
from server.handoff import SheetForm, SheetInvalid, Subject
from server.i18n import N_, _
from server.passes import QUEUE_COOKIE
from server.ratelimit import RATELIMIT_KEY
from server.rights import display
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.settings import Settings
from server.store.models import AssistanceSession, HandoffSheet, Role, utcnow
from server.taxonomy import AUTONOMY, ORGANISATIONS, OUTCOMES, THEMES
from server.web.request import (
    beneficiary_session_id,
    check_csrf,
    login_required,
    render,
    required_user,
    see_other,
    url_for,
)

STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
NOT_FOUND = N_("Cette fiche n'existe pas ou ne vous concerne pas.")
MISSING = N_("Cette fiche est introuvable. Vérifiez le lien reçu ou demandez à l'association.")
CHANNEL_LABELS = {
    "link": N_("Assistance"),
    "appointment": N_("Rendez-vous"),
    "drop_in": N_("Sans rendez-vous"),
    "callback": N_("Rappel"),
}

SheetFinder = Callable[[web.Request], Awaitable[HandoffSheet | None]]


routes = web.RouteTableDef()
SESSION_SHEET = "/assistance/{session_id:[0-9a-f-]{36}}/fiche"
CALLBACK_SHEET = "/rappels/{callback_id:[0-9a-f-]{36}}/fiche"


def _not_found(message: str = NOT_FOUND) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=_(message), content_type="text/plain")


def _today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


# -- The volunteer's form ---------------------------------------------------------------------


def _read(form: Mapping[str, Any]) -> SheetForm:
    """The form as posted (cut to sane lengths: the domain says what is too long)."""

    def many(name: str) -> tuple[str, ...]:
        raw = form.getall(name, []) if isinstance(form, MultiMapping) else []
        return tuple(str(value)[:40] for value in raw[:50])

    def text(name: str, limit: int = handoff.TEXT_MAX * 2) -> str:
        return str(form.get(name, ""))[:limit]

    return SheetForm(
        themes=many("themes"),
        organisations=many("organisations"),
        autonomy=text("autonomy", 20),
        outcome=text("outcome", 20),
        actions_done=text("actions_done"),
        next_steps=text("next_steps"),
        orientation_partner=text("orientation_partner", 1000),
        orientation_contact=text("orientation_contact", 1000),
        follow_up_on=text("follow_up_on", 20),
        postal_code=text("postal_code", 20),
        shared_with_volunteers=form.get("shared_with_volunteers") == "1",
    )


def _form_url(request: web.Request, subject: Subject) -> str:
    name, parts = subject.form
    return url_for(request, name, **parts)


def _back_url(request: web.Request, subject: Subject) -> str:
    """Back to where the volunteer came from: the dashboard, or the call-backs."""
    return url_for(request, "dashboard" if subject.session is not None else "callbacks")


def _rights_url(request: web.Request, subject: Subject, sheet: HandoffSheet | None) -> str | None:
    """Where the sheet form's rights check lives (issue 16): the filed sheet's, else the
    session's; a call-back's sheet has one once filed."""
    if sheet is not None:
        return url_for(request, "rights-sheet-form", sheet_id=sheet.id)
    if subject.session is not None:
        return url_for(request, "rights-session-form", session_id=subject.session.id)
    return None


def _form_page(
    request: web.Request,
    subject: Subject,
    values: SheetForm,
    *,
    sheet: HandoffSheet | None,
    errors: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    editing = sheet is not None
    settings = request.app[SETTINGS_KEY]
    today = _today(settings)
    context = {
        "subject": subject,
        "who": subject.first_name,
        "channel": _(CHANNEL_LABELS.get(subject.channel, CHANNEL_LABELS["link"])),
        "action": _form_url(request, subject),
        "skip_url": _back_url(request, subject),
        "themes": [(code, _(text)) for code, text in THEMES.items()],
        "organisations": [(code, _(text)) for code, text in ORGANISATIONS.items()],
        "autonomies": [(code, _(text)) for code, text in AUTONOMY.items()],
        "outcomes": [(code, _(text)) for code, text in OUTCOMES.items()],
        "form": values,
        "errors": errors or {},
        "editing": editing,
        "text_max": handoff.TEXT_MAX,
        "partner_max": handoff.PARTNER_MAX,
        "contact_max": handoff.CONTACT_MAX,
        "min_day": today.isoformat(),
        "max_day": (today + timedelta(days=handoff.FOLLOW_UP_MAX_DAYS)).isoformat(),
        "has_contact": bool(subject.phone or subject.email),
        # What the beneficiary's device used (a visio session only), as stored: issue 14.
        "data_used": data_used.describe(subject.session) if subject.session else None,
        "rights_url": _rights_url(request, subject, sheet),
    }
    return render(request, "handoff/form.html", context, status)


async def _session_subject(request: web.Request) -> Subject:
    async with request.app[SESSIONMAKER_KEY]() as db:
        subject = await handoff.subject_for_session(
            db, request.match_info["session_id"], required_user(request)
        )
    if subject is None:
        raise _not_found()
    return subject


async def _callback_subject(request: web.Request) -> Subject:
    async with request.app[SESSIONMAKER_KEY]() as db:
        subject = await handoff.subject_for_callback(
            db, request.match_info["callback_id"], required_user(request)
        )
    if subject is None:
        raise _not_found()
    if subject.session is not None:  # a visio link: the sheet belongs to its session
        raise web.HTTPSeeOther(location=_form_url(request, subject))
    return subject


async def _show_form(request: web.Request, subject: Subject) -> web.Response:
    async with request.app[SESSIONMAKER_KEY]() as db:
        sheet = await handoff.sheet_for(db, subject)
    if sheet is not None and sheet.purged_at is not None:
        raise _not_found()
    if sheet is not None:
        return _form_page(request, subject, SheetForm.of(sheet), sheet=sheet)
    return _form_page(
        request, subject, SheetForm(postal_code=subject.postal_code or ""), sheet=None
    )


async def _submit(request: web.Request, subject: Subject) -> web.Response:
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    values = _read(form)
    async with request.app[SESSIONMAKER_KEY]() as db:
        sheet = await handoff.sheet_for(db, subject)
    try:
        clean = values.validated(_today(settings))
    except SheetInvalid as exc:
        return _form_page(request, subject, values, sheet=sheet, errors=exc.errors, status=400)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            saved = await handoff.save(
                db,
                settings,
                subject,
                clean,
                required_user(request),
                utcnow(),
                sms_budget=request.app[RATELIMIT_KEY],
            )
            sheet_id = saved.sheet.id
    except handoff.SheetGone:
        raise _not_found() from None
    context = {
        "created": saved.created,
        "read_url": handoff.read_url(settings, saved.token) if saved.token else None,
        "sent": saved.sent,
        "edit_url": _form_url(request, subject),
        "back_url": _back_url(request, subject),
        "sheet_id": sheet_id,
    }
    return render(request, "handoff/saved.html", context)


@routes.get(SESSION_SHEET, name="handoff-form")
@login_required(*STAFF)
async def session_form(request: web.Request) -> web.StreamResponse:
    """The sheet form of an assistance (empty, or the filed sheet to edit)."""
    return await _show_form(request, await _session_subject(request))


@routes.post(SESSION_SHEET, name="handoff-submit")
@login_required(*STAFF)
async def session_submit(request: web.Request) -> web.StreamResponse:
    """File or edit the sheet of an assistance; mistakes come back in French, values kept."""
    return await _submit(request, await _session_subject(request))


@routes.get(CALLBACK_SHEET, name="handoff-callback-form")
@login_required(*STAFF)
async def callback_form(request: web.Request) -> web.StreamResponse:
    """The sheet form of a call-back resolved on the phone."""
    return await _show_form(request, await _callback_subject(request))


@routes.post(CALLBACK_SHEET, name="handoff-callback-submit")
@login_required(*STAFF)
async def callback_submit(request: web.Request) -> web.StreamResponse:
    """File or edit the sheet of a call-back resolved on the phone."""
    return await _submit(request, await _callback_subject(request))


# -- Staff reading ----------------------------------------------------------------------------


async def _staff_page(request: web.Request, sheet: HandoffSheet, back: str) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY]() as db:
        name = await handoff.association_name(db, sheet.association_id)
        rights = await display.sheet_rights(db, sheet)
    context = {
        "sheet": handoff.view(sheet, settings.timezone, name),
        "rights": rights,
        "audience": "staff",
        "share_action": None,
        "back_url": back,
    }
    return render(request, "handoff/sheet.html", context)


@routes.get("/fiches/{sheet_id:[0-9a-f-]{36}}", name="handoff-staff")
@login_required(*STAFF)
async def staff_read(request: web.Request) -> web.StreamResponse:
    """A sheet read by staff: every sheet of the association for a coordinator, their own for
    a volunteer (editing stays with the session's volunteer)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        sheet = await handoff.get_for_staff(
            db, request.match_info["sheet_id"], required_user(request)
        )
    if sheet is None:
        raise _not_found()
    return await _staff_page(request, sheet, url_for(request, "dashboard"))


@routes.get("/mes-reservations/{appointment_id:[0-9a-f-]{36}}/fiche", name="handoff-referrer")
@login_required(Role.REFERRER, Role.COORDINATOR)
async def referrer_read(request: web.Request) -> web.StreamResponse:
    """The sheet of an appointment this referrer booked; anyone else's is a 404."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        sheet = await handoff.find_for_referrer(
            db, required_user(request), request.match_info["appointment_id"]
        )
    if sheet is None:
        raise _not_found()
    return await _staff_page(request, sheet, url_for(request, "my-bookings"))


# -- The beneficiary's sheet ------------------------------------------------------------------


async def _by_token(request: web.Request) -> HandoffSheet | None:
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await handoff.find_by_token(db, request.match_info["token"])


async def _by_pass(request: web.Request) -> HandoffSheet | None:
    session_id = beneficiary_session_id(request)
    if session_id is None:
        raise _missing(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        session = await db.get(AssistanceSession, session_id)
        if session is None or not assist.pass_honoured(session, utcnow()):
            raise _missing(request)  # the pass expired with its session
        return await handoff.sheet_for_session(db, session_id)


async def _by_queue(request: web.Request) -> HandoffSheet | None:
    token = passes.cookie(request.app[SETTINGS_KEY], request.cookies, QUEUE_COOKIE)
    if not token:
        raise _missing(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await handoff.find_for_queue_token(db, token)


async def _by_manage_token(request: web.Request) -> HandoffSheet | None:
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await booking.find_by_manage_token(db, request.match_info["token"])
        if appointment is None:
            raise _missing(request)
        return await handoff.find_for_appointment(db, appointment)


def _missing(request: web.Request) -> web.HTTPException:
    """The same neutral French 404 for every unknown, forged or purged sheet."""
    return web.HTTPNotFound(text=_(MISSING), content_type="text/plain")


def _reader(find: SheetFinder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET view showing the beneficiary their sheet, found by `find`."""
    by_token = find is _by_token

    async def read(request: web.Request) -> web.StreamResponse:
        """The beneficiary's printable sheet (or "it is coming" while it is not filed)."""
        sheet = await find(request)
        if sheet is None:
            if by_token:
                raise _missing(request)
            return render(request, "handoff/pending.html", {})
        settings = request.app[SETTINGS_KEY]
        async with request.app[SESSIONMAKER_KEY]() as db:
            name = await handoff.association_name(db, sheet.association_id)
            rights = await display.sheet_rights(db, sheet)
        context = {
            "sheet": handoff.view(sheet, settings.timezone, name),
            "rights": rights,
            "audience": "beneficiary",
            "share_action": url_for(request, f"{_route_name(request)}-share", **request.match_info),
            "shared_now": request.query.get("partage"),
        }
        response = render(request, "handoff/sheet.html", context)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return read


def _sharer(find: SheetFinder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST view where the beneficiary gives or withdraws their agreement to share."""

    async def share(request: web.Request) -> web.StreamResponse:
        """Give or withdraw the agreement that later volunteers read this sheet."""
        form = await check_csrf(request)
        sheet = await find(request)
        if sheet is None:
            raise _missing(request)
        shared = form.get("share") == "1"
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await handoff.set_sharing(db, sheet.id, shared, utcnow())
        reader = _route_name(request).removesuffix("-share")
        answer = {"partage": "oui" if shared else "non"}
        raise see_other(request, reader, answer, **request.match_info)

    return share


def _route_name(request: web.Request) -> str:
    """The name of the route this request came by (readers and sharers are registered in
    pairs: ``<name>`` and ``<name>-share``)."""
    name = request.match_info.route.name
    assert name is not None
    return name


# The beneficiary reads their sheet, and says whether later volunteers may read it, through
# whatever they hold: the link sent to them, their room pass, their queue place, their
# appointment's manage link.
for _path, _find, _name in (
    (links.SHEET.path, _by_token, links.SHEET.name),
    ("/b/fiche", _by_pass, "handoff-room"),
    ("/aide/fiche", _by_queue, "handoff-dropin"),
    (links.BOOKING_MANAGE.path + "/fiche", _by_manage_token, "handoff-manage"),
):
    routes.get(_path, name=_name)(_reader(_find))
    routes.post(_path + "/partage", name=_name + "-share")(_sharer(_find))


# -- The join link marked for a contact -------------------------------------------------------


async def note_contact_proof(request: web.Request, session: AssistanceSession) -> None:
    """Hook of the join link (`/j/<token>?v=<mark>`), as the beneficiary enters: a link marked
    for the phone or address it was sent to proves the person reads it, which links their
    earlier sheets (server/handoff.py). An unmarked or wrongly marked link changes nothing."""
    proof = request.query.get(PROOF_PARAMETER, "")
    if not proof:
        return
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        await handoff.verify_contact(db, request.app[SETTINGS_KEY], session.id, proof[:64])
