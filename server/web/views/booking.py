"""Public booking pages under /rendez-vous: motif → slots → form → confirmation, and the manage
link (see, cancel, move, calendar file, waitlist). No account; a logged-in referrer books through
the same pages for the person they accompany. Every page works without JavaScript."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from limits import parse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import availability, booking, fair_use, handoff, links, ratelimit
from server.assist import current_code, link_for
from server.booking import BookingError
from server.contact import DESCRIPTION_MAX, FIRST_NAME_MAX, LANGUAGE_MAX, ContactInfo, Needs
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.integers import parse_int, typed_digits
from server.matching import FRENCH, LanguageChoice
from server.motifs import get_motif, list_motifs
from server.notify import appointments as notifications
from server.notify import outbox
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import (
    Appointment,
    AppointmentStatus,
    AssistanceSession,
    Association,
    Motif,
    Role,
    User,
    VisitKind,
    utcnow,
)
from server.timezones import ZONES, When, parse_timestamp, safe_zone
from server.tokens import sha256_hex
from server.web import pressure
from server.web.language import request_language
from server.web.middlewares import status_of
from server.web.request import check_csrf, client_key, current_user, render, see_other, url_for

# Two limits on the booking form per IP. Attempts: generous, since a France Services office or
# a family shares one address and a refused "slot just taken" answer costs nothing; it stops
# floods. Bookings made: the real protection against someone filling every slot, counted only
# when a booking succeeds, so a crowd racing for one slot (the contention test: 200 attempts
# from 127.0.0.1) is not refused by the limiter but by the database.
BOOKING_ATTEMPTS_PER_IP = Rule("booking-attempts-ip", parse("300/10 minutes"))
BOOKINGS_PER_IP = Rule("bookings-ip", parse("20/hour"))
# Each move sends a new confirmation (SMS/e-mail): never a way to flood someone's phone.
MOVES_PER_APPOINTMENT = Rule("moves-appointment", parse("3/day"))
WAITLIST_PER_IP = Rule("waitlist-ip", parse("20/hour"))
DAYS_SHOWN = 14
MAX_DATE_OFFSET_DAYS = 400
HONEYPOT = "site_web"
TOO_MANY = N_("Trop de demandes depuis cette connexion. Attendez un peu puis réessayez.")
# Query parameters in English like the API; links already sent or bookmarked still carry the
# French names, which are read when the English one is missing.
FROM, OLD_FROM = "from", "depuis"
KIND, OLD_KIND = "kind", "type"
# The box "a volunteer who speaks my language" (a query parameter from the slots step on).
LANGUAGE_WANTED = "language_wanted"

routes = web.RouteTableDef()


# -- Helpers ----------------------------------------------------------------------------------


def _referrer(request: web.Request) -> User | None:
    """The logged-in referrer booking for someone, if any."""
    user = current_user(request)
    return user if user is not None and user.role == Role.REFERRER and user.is_active else None


def _param(values: Mapping[str, Any], name: str, old_name: str) -> object:
    """A query or form value by its English name, else by its former French name."""
    return values.get(name) or values.get(old_name)


def _to_manage(request: web.Request, token: str, notice: str) -> web.HTTPSeeOther:
    """Back to the manage page with a notice (``confirme``, ``annule``…) shown on top."""
    return see_other(request, links.BOOKING_MANAGE.name, {notice: "1"}, token=token)


async def public_association(request: web.Request, db: AsyncSession, raw: object) -> Association:
    """The association asked for (`a=<id>`), the referrer's own, or the first one."""
    referrer = _referrer(request)
    if referrer is not None:
        return await db.get_one(Association, referrer.association_id)
    wanted = parse_int(raw)
    association = None
    if wanted is not None:
        association = await db.get(Association, wanted)
    elif raw in (None, ""):
        association = await db.scalar(select(Association).order_by(Association.id).limit(1))
    if association is None:
        raise BookingError(
            "unknown_association",
            _("Cette association est introuvable. Vérifiez le lien."),
            kind=Kind.NOT_FOUND,
        )
    return association


async def _motif(db: AsyncSession, association: Association, motif_id: int) -> Motif:
    motif = await get_motif(db, association.id, motif_id)
    if motif is None or not motif.is_active:
        raise BookingError(
            "motif_unavailable",
            _("Ce motif n'est plus proposé. Choisissez un autre motif."),
            kind=Kind.NOT_FOUND,
        )
    return motif


def _reading_zone(request: web.Request, name: str | None) -> str:
    """The zone the visitor reads times in: one of the offered zones, else the site's."""
    return safe_zone(name, request.app[SETTINGS_KEY].timezone)


def _kind(raw: object) -> VisitKind:
    return VisitKind.FOLLOW_UP if raw == VisitKind.FOLLOW_UP.value else VisitKind.FIRST


def _start_day(raw: object, today: date) -> date:
    """The first day shown: `from=YYYY-MM-DD`, never before today nor absurdly far."""
    try:
        day = date.fromisoformat(str(raw or ""))
    except ValueError:
        return today
    return min(max(day, today), today + timedelta(days=MAX_DATE_OFFSET_DAYS))


def _language(request: web.Request, values: Mapping[str, Any]) -> LanguageChoice:
    """The page's language, and whether the person ticked the box (ignored in French)."""
    return LanguageChoice.of(request_language(request).code, values.get(LANGUAGE_WANTED))


def _language_context(request: web.Request, language: LanguageChoice) -> dict[str, Any]:
    """What the slots and form pages need of the language box: whether to show it, its state,
    and the query parameter that carries it from page to page (``lw``, to merge into links)."""
    return {
        "ask_language": request_language(request).code != FRENCH,
        "language_wanted": language.wanted,
        "lw": {LANGUAGE_WANTED: "1"} if language.wanted else {},
    }


def _query(**values: object) -> str:
    return "?" + urlencode({k: v for k, v in values.items() if v is not None and v != ""})


def _slot_days(
    slots: list[availability.Slot], tz_name: str
) -> list[tuple[str, list[tuple[int, str]]]]:
    """(French day, [(epoch seconds, "14:00")]) for display."""
    tz = availability.zone(tz_name)
    return [
        (
            When.of(day_slots[0].starts_at, tz_name).day,
            [
                (
                    int(slot.starts_at.timestamp()),
                    When.of(slot.starts_at, tz_name).time,
                )
                for slot in day_slots
            ],
        )
        for _day, day_slots in availability.slots_by_day(slots, tz)
    ]


# -- Choose a motif, then a slot --------------------------------------------------------------


@routes.get(links.BOOKING.path, name=links.BOOKING.name)
async def motifs_page(request: web.Request) -> web.StreamResponse:
    """Step 1: why do you need help? One big button per motif."""
    tz = _reading_zone(request, request.query.get("tz"))
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await public_association(request, db, request.query.get("a"))
        motifs = await list_motifs(db, association.id, active_only=True)
    context = {
        "association": association,
        "motifs": motifs,
        "tz": tz,
        "referrer": _referrer(request),
        "query": _query,
        "cp": _postal_code(request),
    }
    return render(request, "booking/motifs.html", context)


def _postal_code(request: web.Request) -> str:
    """The optional postal code typed on the motif page (statistics only: its département)."""
    return "".join(request.query.get("cp", "").split())[:10]


async def _find(
    request: web.Request,
    db: AsyncSession,
    association: Association,
    motif: Motif,
    kind: VisitKind,
    tz: str,
    now: datetime,
    language: str | None = None,
) -> tuple[date, list[availability.Slot], bool]:
    """The first day shown and the slots from it; with ``language``, those of the volunteers
    who speak it, else (none in these days) every slot and True: "nobody speaks it here"."""
    settings = request.app[SETTINGS_KEY]
    today = now.astimezone(availability.zone(tz)).date()
    first = _start_day(_param(request.query, FROM, OLD_FROM), today)

    async def find(only: str | None) -> list[availability.Slot]:
        return await availability.find_slots(
            db,
            settings,
            association.id,
            motif,
            kind,
            first,
            DAYS_SHOWN,
            now,
            tz=availability.zone(tz),
            language=only,
        )

    if language is not None:
        slots = await find(language)
        if slots:
            return first, slots, False
        return first, await find(None), True
    return first, await find(None), False


# The declared link's path, with the id constrained.
@routes.get("/rendez-vous/motif/{motif_id:[0-9]{1,9}}", name=links.BOOKING_SLOTS.name)
async def slots_page(request: web.Request) -> web.StreamResponse:
    """Step 2: the next free slots, by day, in the zone the visitor reads times in."""
    tz = _reading_zone(request, request.query.get("tz"))
    kind = _kind(_param(request.query, KIND, OLD_KIND))
    now = utcnow()
    settings = request.app[SETTINGS_KEY]
    language = _language(request, request.query)
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await public_association(request, db, request.query.get("a"))
        motif = await _motif(db, association, int(request.match_info["motif_id"]))
        first, slots, no_speaker = await _find(
            request, db, association, motif, kind, tz, now, language.wanted_language
        )
    today = now.astimezone(availability.zone(tz)).date()
    if not slots and first == today:
        # Unmet demand is counted once per search, on its first page: "voir plus tard" pages
        # past the last permanence are browsing, not a new person without a slot.
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await availability.note_no_slot_found(
                db,
                association.id,
                postal_code=_postal_code(request) or None,
                language=language.language,
                language_wanted=language.wanted,
            )
    last_bookable = now + timedelta(days=settings.booking_horizon_days)
    after = first + timedelta(days=DAYS_SHOWN)
    context: dict[str, Any] = {
        "association": association,
        "motif": motif,
        "kind": kind.value,
        "tz": tz,
        "zones": [(name, _(label)) for name, label in ZONES],
        "days": _slot_days(slots, tz),
        "first": first,
        "later": after.isoformat()
        if availability.local_midnight(after, availability.zone(tz)) <= last_bookable
        else None,
        "earlier": (first - timedelta(days=DAYS_SHOWN)).isoformat()
        if first > now.astimezone(availability.zone(tz)).date()
        else None,
        "referrer": _referrer(request),
        "query": _query,
        "form": {},
        "error": None,
        "no_speaker": no_speaker and bool(slots),
        **_language_context(request, language),
    }
    return render(request, "booking/slots.html", context)


# -- The form and the booking -----------------------------------------------------------------


@routes.get("/rendez-vous/motif/{motif_id:[0-9]{1,9}}/reserver", name="booking-form")
async def form_page(request: web.Request) -> web.StreamResponse:
    """Step 3: who are you and how can we reach you? (the chosen slot in hidden fields)."""
    tz = _reading_zone(request, request.query.get("tz"))
    kind = _kind(_param(request.query, KIND, OLD_KIND))
    starts_at = parse_timestamp(request.query.get("t"))
    if starts_at is None:
        raise _no_slot_chosen()
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await public_association(request, db, request.query.get("a"))
        motif = await _motif(db, association, int(request.match_info["motif_id"]))
    challenge = None if _referrer(request) else await pressure.challenge_for(request, "bookings")
    form = {LANGUAGE_WANTED: request.query.get(LANGUAGE_WANTED, "")}
    return _form(request, association, motif, kind, tz, starts_at, form, None, challenge)


def _form(
    request: web.Request,
    association: Association,
    motif: Motif,
    kind: VisitKind,
    tz: str,
    starts_at: datetime,
    form: Mapping[str, Any],
    error: DomainError | None,
    challenge: dict[str, Any] | None = None,
) -> web.Response:
    context = {
        "association": association,
        "motif": motif,
        "kind": kind.value,
        "tz": tz,
        "t": int(starts_at.timestamp()),
        "when": When.of(starts_at, tz),
        "form": {key: str(form.get(key, "")) for key in _FIELDS},
        "checked": {key: bool(form.get(key)) for key in ("hearing", "first_time_computer")},
        "error": error,
        "referrer": _referrer(request),
        "honeypot": HONEYPOT,
        "query": _query,
        "pow": challenge,
        **_language_context(request, _language(request, form)),
    }
    return render(request, "booking/form.html", context, 200 if error is None else status_of(error))


_FIELDS = ("first_name", "phone", "email", "postal_code", "description", "interpreter_language")


def _contact(form: Mapping[str, Any], tz: str) -> ContactInfo:
    def text(name: str, limit: int) -> str:
        value = str(form.get(name, ""))
        if len(value) > limit:
            # Longer than any valid answer: let validation refuse it with its own message.
            return value[: limit + 1]
        return value

    return ContactInfo(
        first_name=text("first_name", FIRST_NAME_MAX * 4),
        phone=text("phone", 64),
        email=text("email", 300),
        postal_code=text("postal_code", 16),
        description=text("description", DESCRIPTION_MAX * 2),
        needs=Needs(
            interpreter_language=text("interpreter_language", LANGUAGE_MAX * 2),
            hearing=bool(form.get("hearing")),
            first_time_computer=bool(form.get("first_time_computer")),
        ),
        timezone=tz,
    )


def _no_slot_chosen() -> BookingError:
    return BookingError("no_slot", _("Choisissez un horaire dans la liste."), "t")


@routes.post("/rendez-vous/reserver", name="booking-submit")
async def submit_booking(request: web.Request) -> web.StreamResponse:
    """Book the slot (all or nothing), enqueue the confirmation and reminders, then show the
    confirmation through the manage link."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    tz = _reading_zone(request, str(form.get("tz", "")))
    kind = _kind(_param(form, KIND, OLD_KIND))
    starts_at = parse_timestamp(form.get("t"))
    motif_id = parse_int(form.get("motif"))
    if starts_at is None or motif_id is None:
        raise _no_slot_chosen()
    referrer = _referrer(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await public_association(request, db, form.get("a"))
        motif = await _motif(db, association, motif_id)
    if form.get(HONEYPOT):
        error = BookingError(
            "spam",
            _("Votre demande n'a pas pu être enregistrée. Appelez l'association pour réserver."),
        )
        return _form(request, association, motif, kind, tz, starts_at, form, error)
    limiter = request.app[RATELIMIT_KEY]
    ip = client_key(request)
    if not await limiter.hit(BOOKING_ATTEMPTS_PER_IP, ip) or not await limiter.allowed(
        BOOKINGS_PER_IP, ip
    ):
        error = BookingError("rate_limited", _(TOO_MANY), kind=Kind.RATE_LIMITED)
        response = _form(request, association, motif, kind, tz, starts_at, form, error)
        response.headers["Retry-After"] = "600"
        return response
    now = utcnow()
    client = fair_use.client_hash(settings.secret_key.get_secret_value(), ip)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            if referrer is None:  # referrers have accounts: neither a proof of work nor caps
                await pressure.check_form(request, db, "bookings", form)
                await fair_use.serialise(db, "booking", client)
            booked = await booking.book(
                db,
                settings,
                association_id=association.id,
                motif_id=motif.id,
                kind=kind,
                starts_at=starts_at,
                contact=_contact(form, tz),
                via="referrer" if referrer is not None else "public",
                referrer=referrer,
                now=now,
                language=_language(request, form),
            )
            if referrer is None:
                await fair_use.hold_booking(db, settings, booked.appointment, client, now)
            await notifications.appointment_booked(db, settings, booked, now, sms_budget=limiter)
    except DomainError as exc:  # the booking's refusals, the caps, a missing proof of work
        pressure.count_refusal(exc)
        challenge = None if referrer else await pressure.challenge_for(request, "bookings")
        return _form(request, association, motif, kind, tz, starts_at, form, exc, challenge)
    await limiter.hit(BOOKINGS_PER_IP, ip)
    await pressure.spend(request, "bookings")
    raise _to_manage(request, booked.manage_token, "confirme")


@routes.post("/rendez-vous/attente", name="booking-waitlist")
async def submit_waitlist(request: web.Request) -> web.StreamResponse:
    """No slot suits: leave a first name and a contact to be told when one frees up."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    tz = _reading_zone(request, str(form.get("tz", "")))
    motif_id = parse_int(form.get("motif"))
    if motif_id is None:
        raise BookingError("no_motif", _("Choisissez un motif."), "motif")
    async with request.app[SESSIONMAKER_KEY]() as db:
        association = await public_association(request, db, form.get("a"))
        motif = await _motif(db, association, motif_id)
    context: dict[str, Any] = {
        "association": association,
        "motif": motif,
        "kind": _kind(_param(form, KIND, OLD_KIND)).value,
        "tz": tz,
        "zones": [(name, _(label)) for name, label in ZONES],
        "days": [],
        "first": None,
        "later": None,
        "earlier": None,
        "referrer": _referrer(request),
        "query": _query,
        "form": {key: str(form.get(key, ""))[:300] for key in ("first_name", "phone", "email")},
        "error": None,
        "no_speaker": False,
        **_language_context(request, _language(request, form)),
    }
    if form.get(HONEYPOT):
        context["error"] = _("Votre demande n'a pas pu être enregistrée.")
        return render(request, "booking/slots.html", context, 400)
    if not await request.app[RATELIMIT_KEY].hit(WAITLIST_PER_IP, client_key(request)):
        context["error"] = _(TOO_MANY)
        return render(request, "booking/slots.html", context, 429)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await booking.join_waitlist(
                db,
                settings,
                association_id=association.id,
                motif_id=motif.id,
                contact=_contact(form, tz),
                now=utcnow(),
                language=_language(request, form),
            )
    except BookingError as exc:
        context["error"] = exc.message
        return render(request, "booking/slots.html", context, status_of(exc))
    return render(request, "booking/waitlist_done.html", {"association": association})


# -- The manage link --------------------------------------------------------------------------


async def _load(request: web.Request, db: AsyncSession) -> Appointment:
    appointment = await booking.find_by_manage_token(db, request.match_info["token"])
    if appointment is None:
        raise BookingError(
            "not_found",
            _("Ce lien ne marche pas. Vérifiez le lien reçu ou appelez l'association."),
            kind=Kind.NOT_FOUND,
        )
    return appointment


async def _links(
    request: web.Request, db: AsyncSession, appointment: Appointment
) -> tuple[str | None, str | None]:
    """The join link and code of a booked appointment (None once it is over or cancelled)."""
    if appointment.assistance_session_id is None:
        return None, None
    session = await db.get(AssistanceSession, appointment.assistance_session_id)
    if session is None or session.code_salt is None:
        return None, None
    settings = request.app[SETTINGS_KEY]
    return link_for(settings, session), current_code(settings, session)


@routes.get(links.BOOKING_MANAGE.path, name=links.BOOKING_MANAGE.name)
async def manage_page(request: web.Request) -> web.StreamResponse:
    """The appointment, with its join link and code, and the buttons to cancel or move it."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _load(request, db)
        motif = await db.get_one(Motif, appointment.motif_id)
        association = await db.get_one(Association, appointment.association_id)
        join_url, code = await _links(request, db, appointment)
        has_sheet = await handoff.find_for_appointment(db, appointment) is not None
        sms_withheld = await outbox.withheld_sms(db, appointment_id=appointment.id) is not None
    return _manage(
        request,
        appointment,
        motif,
        association,
        join_url,
        code,
        has_sheet=has_sheet,
        sms_withheld=sms_withheld,
    )


def _manage(
    request: web.Request,
    appointment: Appointment,
    motif: Motif,
    association: Association,
    join_url: str | None,
    code: str | None,
    error: str | None = None,
    status: int = 200,
    *,
    has_sheet: bool = False,
    sms_withheld: bool = False,
) -> web.Response:
    token = request.match_info["token"]
    booked = appointment.status == AppointmentStatus.BOOKED
    context = {
        "token": token,
        "appointment": appointment,
        "motif": motif,
        "association": association,
        "when": When.of(appointment.starts_at, appointment.display_timezone),
        "opens": When.of(booking.join_opens_at(appointment), appointment.display_timezone),
        "booked": booked,
        "changeable": booked and appointment.starts_at > utcnow(),
        "cancelled": appointment.status == AppointmentStatus.CANCELLED,
        "confirmed": request.query.get("confirme") == "1",
        "recovered": request.query.get("retrouve") == "1",
        "just_cancelled": request.query.get("annule") == "1",
        "on_waitlist": request.query.get("attente") == "1",
        "join_url": join_url if booked else None,
        "code": code if booked else None,
        "code_url": links.CODE.url(request.app[SETTINGS_KEY]),
        "base": url_for(request, links.BOOKING_MANAGE.name, token=token),
        "for_someone": appointment.booked_via == "referrer",
        "error": error,
        "sheet_url": url_for(request, "handoff-manage", token=token) if has_sheet else None,
        # An SMS of this appointment was held back (a cap): say so, and that e-mail is used.
        "sms_withheld": sms_withheld and booked,
    }
    return render(request, "booking/manage.html", context, status)


@routes.get("/rendez-vous/gerer/{token}/rendez-vous.ics", name="booking-ics")
async def ics_file(request: web.Request) -> web.StreamResponse:
    """The appointment as a calendar file (or its cancellation)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _load(request, db)
        motif = await db.get_one(Motif, appointment.motif_id)
        join_url, _code = await _links(request, db, appointment)
    settings = request.app[SETTINGS_KEY]
    url = join_url or links.BOOKING_MANAGE.url(settings, token=request.match_info["token"])
    cancelled = appointment.status == AppointmentStatus.CANCELLED
    body = notifications.ics_for(settings, appointment, motif.name, url, cancelled=cancelled)
    return web.Response(
        text=body,
        content_type="text/calendar",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{notifications.ICS_FILENAME}"',
            "Cache-Control": "no-store",
        },
    )


async def _refuse(request: web.Request, message: str) -> web.Response:
    """The manage page again with why the change was refused. Always 409, whatever the reason
    (a past or cancelled appointment, a taken or invalid time): the appointment stays as it was."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _load(request, db)
        motif = await db.get_one(Motif, appointment.motif_id)
        association = await db.get_one(Association, appointment.association_id)
        join_url, code = await _links(request, db, appointment)
    return _manage(request, appointment, motif, association, join_url, code, message, 409)


@routes.post("/rendez-vous/gerer/{token}/annuler", name="booking-cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    """Cancel: the slot is free for others as soon as this commits; the waitlist is told."""
    await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    token = request.match_info["token"]
    now = utcnow()
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await _load(request, db)
            appointment = await booking.cancel(db, token, now)
            await notifications.appointment_cancelled(
                db, settings, appointment, now, sms_budget=request.app[RATELIMIT_KEY]
            )
    except BookingError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise
        return await _refuse(request, exc.message)
    raise _to_manage(request, token, "annule")


@routes.get("/rendez-vous/gerer/{token}/deplacer", name="booking-move")
async def move_page(request: web.Request) -> web.StreamResponse:
    """Choose another time for the same motif and visit length."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        appointment = await _load(request, db)
        if appointment.status == AppointmentStatus.BOOKED and appointment.starts_at > utcnow():
            association = await db.get_one(Association, appointment.association_id)
            motif = await db.get_one(Motif, appointment.motif_id)
            tz = _reading_zone(request, appointment.display_timezone)
            first, slots, no_speaker = await _find(
                request, db, association, motif, appointment.kind, tz, utcnow(), _asked(appointment)
            )
            return _move(request, appointment, motif, tz, first, slots, None, no_speaker=no_speaker)
    if appointment.status == AppointmentStatus.CANCELLED:
        error = _("Ce rendez-vous est déjà annulé.")
    else:
        error = _("Ce rendez-vous est passé : il ne peut plus être changé.")
    return await _refuse(request, error)


def _asked(appointment: Appointment) -> str | None:
    """The language a booking asked its volunteer to speak, if it did: a move offers the
    times of those volunteers first, like the booking did."""
    return LanguageChoice.of(appointment.language, appointment.language_wanted).wanted_language


def _move(
    request: web.Request,
    appointment: Appointment,
    motif: Motif,
    tz: str,
    first: date,
    slots: list[availability.Slot],
    error: str | None,
    status: int = 200,
    *,
    no_speaker: bool = False,
) -> web.Response:
    token = request.match_info["token"]
    after = first + timedelta(days=DAYS_SHOWN)
    context = {
        "token": token,
        "motif": motif,
        "when": When.of(appointment.starts_at, tz),
        "days": _slot_days([s for s in slots if s.starts_at != appointment.starts_at], tz),
        "later": after.isoformat(),
        "base": url_for(request, links.BOOKING_MANAGE.name, token=token),
        "error": error,
        "no_speaker": no_speaker and bool(slots),
    }
    return render(request, "booking/move.html", context, status)


@routes.post("/rendez-vous/gerer/{token}/deplacer", name="booking-move-submit")
async def move(request: web.Request) -> web.StreamResponse:
    """Move to the chosen time: book it and free the old one together, or change nothing."""
    form = await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    token = request.match_info["token"]
    new_start = parse_timestamp(form.get("t"))
    if new_start is None:
        raise _no_slot_chosen()
    limiter = request.app[RATELIMIT_KEY]
    if not (
        await limiter.hit(BOOKING_ATTEMPTS_PER_IP, client_key(request))
        and await limiter.hit(MOVES_PER_APPOINTMENT, sha256_hex(token))
    ):
        raise BookingError("rate_limited", _(TOO_MANY), kind=Kind.RATE_LIMITED)
    now = utcnow()
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            old = await _load(request, db)
            booked = await booking.reschedule(db, settings, token, new_start, now)
            booked.appointment.client_key_hash = old.client_key_hash  # still counts (caps)
            await notifications.appointment_moved(
                db, settings, old, booked, now, sms_budget=limiter
            )
    except BookingError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise
        if exc.code in ("already_cancelled", "too_late"):
            return await _refuse(request, exc.message)
        async with request.app[SESSIONMAKER_KEY]() as db:
            appointment = await _load(request, db)
            association = await db.get_one(Association, appointment.association_id)
            motif = await db.get_one(Motif, appointment.motif_id)
            tz = _reading_zone(request, appointment.display_timezone)
            first, slots, no_speaker = await _find(
                request, db, association, motif, appointment.kind, tz, utcnow(), _asked(appointment)
            )
        # 409 whatever the reason, as on the manage page: the appointment stays where it was.
        return _move(
            request, appointment, motif, tz, first, slots, exc.message, 409, no_speaker=no_speaker
        )
    raise _to_manage(request, token, "confirme")


@routes.post("/rendez-vous/gerer/{token}/attente", name="booking-manage-waitlist")
async def manage_waitlist(request: web.Request) -> web.StreamResponse:
    """Keep this appointment, and be told if an earlier time frees up."""
    await check_csrf(request)
    settings = request.app[SETTINGS_KEY]
    token = request.match_info["token"]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            appointment = await _load(request, db)
            await booking.join_waitlist(
                db,
                settings,
                association_id=appointment.association_id,
                motif_id=appointment.motif_id,
                contact=ContactInfo.of(appointment),
                manage_token=token,
                now=utcnow(),
            )
    except BookingError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise
        return await _refuse(request, exc.message)
    raise _to_manage(request, token, "attente")


# -- Lost manage link: code + phone -----------------------------------------------------------

RECOVER_FAILED = N_(
    "Nous ne trouvons pas de rendez-vous avec ce code et ce numéro. Vérifiez-les, ou appelez "
    "l'association."
)


@routes.get("/rendez-vous/retrouver", name="booking-recover")
async def recover_page(request: web.Request) -> web.StreamResponse:
    """The form for someone who lost the link: the join code and the phone number."""
    return render(request, "booking/recover.html", {"error": None, "code": "", "phone": ""})


@routes.post("/rendez-vous/retrouver", name="booking-recover-submit")
async def recover(request: web.Request) -> web.StreamResponse:
    """Code + phone → a new manage link (the old one stops working), limited like codes."""
    form = await check_csrf(request)
    code = typed_digits(str(form.get("code", "")), 40)
    phone = str(form.get("phone", ""))[:40]
    limiter = request.app[RATELIMIT_KEY]
    if not await ratelimit.code_try_allowed(limiter, client_key(request), code):
        context = {"error": _(TOO_MANY), "code": code, "phone": phone}
        return render(request, "booking/recover.html", context, status=429)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        found = await booking.recover_manage_link(
            db, request.app[SETTINGS_KEY], code, phone, utcnow()
        )
    if found is None:
        await ratelimit.wrong_code(limiter)
        context = {"error": _(RECOVER_FAILED), "code": code, "phone": phone}
        return render(request, "booking/recover.html", context, status=400)
    raise _to_manage(request, found[1], "retrouve")
