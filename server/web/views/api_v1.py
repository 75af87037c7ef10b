"""JSON API for partner software under /api/v1, described by /api/v1/openapi.json.

Referrers authenticate with their API tokens (`Authorization: Bearer vp_…`); each endpoint needs
one scope. Inputs and outputs are the pydantic models of ``server/web/api/models.py``, and the
OpenAPI document is generated from them and from this module's route table. Refusals are
DomainErrors, rendered by the error middleware as ``{"error": {"code", "message", "field"?}}``
with a French message for the people using the partner software and a stable English code for
its developers.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from limits import parse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from server import api_tokens, availability, booking, links, motifs
from server.contact import ContactInfo, Needs
from server.errors import DomainError, Kind
from server.i18n import _
from server.matching import LanguageChoice
from server.notify import appointments as notifications
from server.passes import LOGIN_COOKIE, secure_cookie_name
from server.ratelimit import RATELIMIT_KEY, Rule
from server.rights import figures as rights_figures
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.stats.export import report_json
from server.store.models import Appointment, Motif, Role, User, VisitKind, utcnow
from server.web.api import models as m
from server.web.api.openapi import InT, Operation, Security, describe, parse_json, parse_mapping
from server.web.api.openapi import document as build_document
from server.web.request import current_user
from server.web.views import stats as stats_views

log = logging.getLogger(__name__)

API_PER_TOKEN = Rule("api-token", parse("120/minute"))
MAX_BODY = 16 * 1024
JSON = "application/json"
UTF_8 = frozenset({"utf-8", "utf8"})
USER_KEY: web.RequestKey[User] = web.RequestKey("api_user", User)
# The token whose "last used" stamp is due: (token id, time of use). A write operation folds it
# into its own transaction (``_fold_stamp``); otherwise the wrapper writes it after the handler.
STAMP_KEY: web.RequestKey[tuple[int, datetime] | None] = web.RequestKey("api_token_stamp", tuple)

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OperationHandler = Callable[[web.Request, InT], Awaitable[BaseModel]]

AUTH_ERRORS: dict[Security, dict[int, str]] = {
    "bearer": {
        401: "unauthorized: missing, invalid or revoked token",
        403: "forbidden: the token lacks the scope",
        429: "rate_limited: 120 requests per minute per token",
    },
    "coordinatorSession": {
        401: "unauthorized: not logged in",
        403: "forbidden: logged in, but not as a coordinator",
    },
}


async def _bearer(request: web.Request, scope: str | None) -> User:
    header = request.headers.get("Authorization", "")
    raw = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await api_tokens.authenticate(db, raw) if raw else None
    if found is None:
        raise DomainError(
            "unauthorized", _("Jeton d'accès absent ou invalide."), kind=Kind.UNAUTHENTICATED
        )
    token, user = found
    now = utcnow()
    if api_tokens.stamp_due(token, now):
        request[STAMP_KEY] = (token.id, now)
    if scope is not None and scope not in token.scopes:
        raise DomainError(
            "forbidden",
            _("Ce jeton n'a pas l'autorisation %(s)s.") % {"s": scope},
            kind=Kind.FORBIDDEN,
        )
    if not await request.app[RATELIMIT_KEY].hit(API_PER_TOKEN, str(token.id)):
        raise DomainError(
            "rate_limited",
            _("Trop de requêtes. Réessayez dans une minute."),
            kind=Kind.RATE_LIMITED,
        )
    return user


def _coordinator(request: web.Request) -> User:
    user = current_user(request)
    if user is None:
        raise DomainError(
            "unauthorized",
            _("Connectez-vous avec un compte de coordination."),
            kind=Kind.UNAUTHENTICATED,
        )
    if user.role != Role.COORDINATOR:
        raise DomainError(
            "forbidden",
            _("Les statistiques sont réservées à la coordination."),
            kind=Kind.FORBIDDEN,
        )
    return user


async def _input(request: web.Request, operation: Operation[InT]) -> InT:
    if operation.input_in == "query":
        return parse_mapping(operation.input, {k: request.query[k] for k in request.query})
    if operation.input_in == "path":
        return parse_mapping(operation.input, request.match_info)
    if operation.input_in == "body":
        _json_media_type(request)
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(
                MAX_BODY, request.content_length, text=_("Requête trop grosse.")
            )
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(raw), text=_("Requête trop grosse."))
        return parse_json(operation.input, raw)
    return operation.input()


def _json_media_type(request: web.Request) -> None:
    """Refuse (415) a body that is not declared as JSON, or as JSON in another charset than
    UTF-8 (the only one JSON has, RFC 8259): what a program sends by mistake is refused
    whole instead of guessed at."""
    charset = request.charset
    if request.content_type != JSON or (charset is not None and charset.lower() not in UTF_8):
        body = {
            "error": {
                "code": "unsupported_media_type",
                "message": _(
                    "Envoyez le corps en JSON (Content-Type: application/json), en UTF-8."
                ),
            }
        }
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps(body, ensure_ascii=False), content_type=JSON
        )


def operation(op: Operation[InT]) -> Callable[[OperationHandler[InT]], Handler]:
    """Authenticate the caller (the operation's security, scope and rate limit), validate its
    input with the operation's model, and answer the handler's model as JSON."""

    def decorator(handler: OperationHandler[InT]) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if op.security != "bearer":
                request[USER_KEY] = _coordinator(request)
                answer = await handler(request, await _input(request, op))
            else:
                try:
                    request[USER_KEY] = await _bearer(request, op.scope)
                    answer = await handler(request, await _input(request, op))
                except Exception:
                    await _stamp_alone(request, failing=True)
                    raise
                await _stamp_alone(request)
            return web.Response(
                text=answer.model_dump_json(by_alias=True),
                status=op.status,
                content_type="application/json",
            )

        describe(wrapper, op)
        return wrapper

    return decorator


# -- Helpers --------------------------------------------------------------------------------------


async def _fold_stamp(request: web.Request, db: AsyncSession) -> None:
    """Write the token's due "last used" stamp in the handler's transaction ``db`` (once it
    holds the write lock): the request pays one UPDATE instead of a write transaction of its
    own. The stamp counts as written only once that transaction commits (``_stamped``)."""
    pending = request.get(STAMP_KEY)
    if pending is not None:
        await api_tokens.stamp(db, *pending)


def _stamped(request: web.Request) -> None:
    """The handler's transaction that carried ``_fold_stamp`` committed."""
    request[STAMP_KEY] = None


async def _stamp_alone(request: web.Request, *, failing: bool = False) -> None:
    """Write a due stamp no handler transaction carried (read operations, refusals, errors).
    When the request is ``failing``, a stamp that cannot be written is logged, so that the
    request's own error is the one answered."""
    pending = request.get(STAMP_KEY)
    if pending is None:
        return
    request[STAMP_KEY] = None
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await api_tokens.stamp(db, *pending)
    except Exception:
        if not failing:
            raise
        log.warning("API token %s: last-used stamp not written", pending[0], exc_info=True)


def _booking(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "motif_id": appointment.motif_id,
        "kind": appointment.kind,
        "starts_at": appointment.starts_at,
        "ends_at": appointment.ends_at,
        "status": appointment.status,
        "first_name": appointment.first_name,
        "created_at": appointment.created_at,
        "moved_to": appointment.moved_to_id,
    }


async def _active_motif(
    request: web.Request, motif_id: int, db: AsyncSession | None = None
) -> Motif:
    """The association's active motif ``motif_id``, read in ``db`` if given."""
    if db is None:
        async with request.app[SESSIONMAKER_KEY]() as own:
            return await _active_motif(request, motif_id, own)
    found = await motifs.get_motif(db, request[USER_KEY].association_id, motif_id)
    if found is None or not found.is_active:
        raise DomainError("invalid_motif", _("Motif inconnu."), "motif_id", kind=Kind.NOT_FOUND)
    return found


# -- Operations -----------------------------------------------------------------------------------


@routes.get("/api/v1/motifs", name="api-motifs")
@operation(
    Operation(
        "listMotifs",
        "Active motifs",
        m.NoInput,
        "none",
        m.MotifList,
        scope="motifs:read",
    )
)
async def list_motifs(request: web.Request, _input: m.NoInput) -> m.MotifList:
    """The association's active motifs."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = await motifs.list_motifs(db, request[USER_KEY].association_id, active_only=True)
    return m.MotifList(motifs=[m.Motif.model_validate(row) for row in rows])


@routes.get("/api/v1/slots", name="api-slots")
@operation(
    Operation(
        "listSlots",
        "Free slots",
        m.SlotQuery,
        "query",
        m.SlotList,
        errors={
            400: "invalid_motif, invalid_kind, invalid_range or invalid_timezone (field names "
            "the parameter)",
            404: "invalid_motif: no active motif of your association has this id",
        },
        scope="slots:read",
        description="Free slots for a motif over up to 31 local days, counted in `tz`.",
    )
)
async def list_slots(request: web.Request, query: m.SlotQuery) -> m.SlotList:
    """Free slots for a motif over up to 31 local days."""
    settings = request.app[SETTINGS_KEY]
    motif = await _active_motif(request, query.motif_id)
    zone = availability.zone(query.tz or settings.timezone)
    today = utcnow().astimezone(zone).date()
    start = query.from_ or today
    if not -1 <= (start - today).days <= m.MAX_START_DAYS:
        raise DomainError(
            "invalid_range", _("Période invalide (from=AAAA-MM-JJ, days=1 à 31)."), "from"
        )
    async with request.app[SESSIONMAKER_KEY]() as db:
        slots = await availability.find_slots(
            db,
            settings,
            request[USER_KEY].association_id,
            motif,
            query.kind or VisitKind.FIRST,
            start,
            query.days,
            utcnow(),
            tz=zone,
        )
    return m.SlotList(slots=[m.Slot.model_validate(slot) for slot in slots])


@routes.get("/api/v1/bookings", name="api-bookings")
@operation(
    Operation(
        "listBookings",
        "Bookings made with this referrer's account",
        m.NoInput,
        "none",
        m.BookingList,
        scope="bookings:read",
    )
)
async def list_bookings(request: web.Request, _input: m.NoInput) -> m.BookingList:
    """The bookings made by this token's referrer (only theirs)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = await booking.appointments_for_referrer(db, request[USER_KEY].id)
    return m.BookingList(bookings=[m.Booking.model_validate(_booking(a)) for a in rows])


@routes.post("/api/v1/bookings", name="api-bookings-create")
@operation(
    Operation(
        "createBooking",
        "Book a slot for a beneficiary",
        m.BookingRequest,
        "body",
        m.BookingCreated,
        status=201,
        errors={
            400: "invalid_json, or a field breaks a rule (code and field name it)",
            404: "invalid_motif: no active motif of your association has this id",
            409: "slot_taken or motif_unavailable: the agenda changed",
            413: "The body is larger than 16 KiB",
            415: "unsupported_media_type: the body is not application/json in UTF-8",
        },
        scope="bookings:write",
        description="Books the slot with a free volunteer and sends the beneficiary the "
        "confirmation (SMS and/or e-mail); answers the join link, code and manage link.",
    )
)
async def create_booking(request: web.Request, body: m.BookingRequest) -> m.BookingCreated:
    """Book a slot on behalf of a beneficiary; answers the join link, code and manage URL."""
    settings = request.app[SETTINGS_KEY]
    needs = body.needs or m.Needs.model_validate({})
    contact = ContactInfo(
        first_name=body.first_name,
        phone=body.phone,
        email=body.email,
        postal_code=body.postal_code,
        description=body.description,
        needs=Needs(
            interpreter_language=needs.interpreter_language,
            hearing=needs.hearing,
            first_time_computer=needs.first_time_computer,
        ),
        timezone=body.timezone,
    )
    user = request[USER_KEY]
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        # The motif is read once, in the booking's transaction; the referrer is the account the
        # token authenticated in this request (active, a referrer), not read again.
        motif = await _active_motif(request, body.motif_id, db)
        booked = await booking.book(
            db,
            settings,
            association_id=user.association_id,
            motif_id=motif.id,
            kind=body.kind or VisitKind.FIRST,
            starts_at=body.starts_at,
            contact=contact,
            via="api",
            referrer=user,
            now=now,
            motif=motif,
            language=LanguageChoice.of(body.language or None, body.language_wanted),
        )
        await _fold_stamp(request, db)
        await notifications.appointment_booked(
            db, settings, booked, now, sms_budget=request.app[RATELIMIT_KEY]
        )
    _stamped(request)
    return m.BookingCreated.model_validate(
        {
            **_booking(booked.appointment),
            "join_url": booked.join_url,
            "code": booked.code,
            "manage_url": links.BOOKING_MANAGE.url(settings, token=booked.manage_token),
        }
    )


@routes.delete(f"/api/v1/bookings/{{booking_id:{m.UUID_PATTERN}}}", name="api-bookings-cancel")
@operation(
    Operation(
        "cancelBooking",
        "Cancel one of this referrer's bookings",
        m.BookingPath,
        "path",
        m.Booking,
        errors={
            404: "not_found: no such booking of yours",
            409: "already_cancelled, or too_late: the booking has started or passed",
        },
        scope="bookings:write",
        description="The slot is free again at once; the beneficiary is told.",
    )
)
async def cancel_booking(request: web.Request, path: m.BookingPath) -> m.Booking:
    """Cancel one of this referrer's bookings; the slot is free again at once."""
    user = request[USER_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        referrer = await db.get_one(User, user.id)
        now = utcnow()
        appointment = await booking.cancel_for_referrer(db, path.booking_id, referrer, now)
        await _fold_stamp(request, db)
        await notifications.appointment_cancelled(
            db,
            request.app[SETTINGS_KEY],
            appointment,
            now,
            sms_budget=request.app[RATELIMIT_KEY],
        )
    _stamped(request)
    return m.Booking.model_validate(_booking(appointment))


@routes.get("/api/v1/stats", name="api-stats")
@operation(
    Operation(
        "getStatistics",
        "Coordinator's statistics (logged-in coordinator session)",
        m.StatisticsQuery,
        "query",
        m.StatisticsReport,
        errors={400: "invalid_filters: bad date, range, channel, theme or step"},
        security="coordinatorSession",
        description="Sessions (handoff sheets), demand and unmet demand (left the queue, "
        "call-backs expired or wrong number, searches without a slot) by period, channel, "
        "theme, organisation, outcome, autonomy, duration, volunteer and département, with "
        "rates per 100,000 inhabitants; demand and unmet demand by language (and how many "
        "asked for a volunteer speaking it); and the rights checks' benefits probably due and not "
        "received (droits potentiels non réclamés) by benefit and by département, with an "
        "estimated monthly total. Default period: the last 12 calendar months; at most 5 "
        "years. API tokens belong to referrers and never see statistics.",
    )
)
async def stats(request: web.Request, _query: m.StatisticsQuery) -> m.StatisticsReport:
    """The coordinator's statistics as JSON; counts below stats_small_count read "< N"."""
    # The model checked each parameter; the domain applies the defaults and the rules
    # between them (end after start, 5 years at most), refusing with a FilterError.
    filters = stats_views.filters_or_error(request)
    report = await stats_views.load_report(request, filters)
    small = request.app[SETTINGS_KEY].stats_small_count
    rights = rights_figures.rights_json(rights_figures.publish(report, small))
    return m.StatisticsReport.model_validate({**report_json(report, small), "rights": rights})


# -- The document ---------------------------------------------------------------------------------

INFO = {
    "title": "visio-permanence partner API",
    "version": "1",
    "description": "Book visio appointments on behalf of the people you follow. Create a token "
    "on your referrer page; send it as `Authorization: Bearer <token>`. Every refusal is "
    '`{"error": {"code", "message", "field"?}}`: a stable English code for your program, a '
    "French message for the people using it.",
    "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "coordinatorSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": LOGIN_COOKIE,
        "description": "The session cookie of a logged-in coordinator (log in on /login). API "
        "tokens belong to referrers and cannot read statistics.",
    },
}


def openapi_document(base_url: str) -> dict[str, Any]:
    """The API description, generated from this module's routes and their models."""
    secure = urlsplit(base_url).scheme == "https"
    session = {**SECURITY_SCHEMES["coordinatorSession"]}
    session["name"] = secure_cookie_name(LOGIN_COOKIE, secure)
    return build_document(
        info=INFO,
        base_url=base_url,
        routes=routes,
        security_schemes={**SECURITY_SCHEMES, "coordinatorSession": session},
        auth_errors=AUTH_ERRORS,
    )


@functools.cache
def _document_text(base_url: str) -> str:
    return json.dumps(openapi_document(base_url), ensure_ascii=False)


@routes.get("/api/v1/openapi.json", name="api-openapi")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return web.Response(
        text=_document_text(request.app[SETTINGS_KEY].base_url), content_type="application/json"
    )
