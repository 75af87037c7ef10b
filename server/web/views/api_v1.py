"""JSON API for partner software under /api/v1, described by /api/v1/openapi.json.

Referrers authenticate with their API tokens (`Authorization: Bearer vp_…`); each endpoint needs
one scope. Errors are ``{"error": {"code", "message"}}`` with a French message for the people
using the partner software and a stable English code for its developers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from limits import parse

from server import api_tokens, availability, booking, motifs, taxonomy
from server.contact import ContactInfo, Needs
from server.i18n import _
from server.notify import appointments as notifications
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.stats.export import report_json
from server.stats.filters import FilterError
from server.stats.rollups import CHANNELS
from server.store.models import Appointment, Motif, Role, User, VisitKind, utcnow
from server.web.request import check_csrf, current_user, login_required, render
from server.web.views import stats as stats_views

API_PER_TOKEN = Rule("api-token", parse("120/minute"))
MAX_DAYS = 31
MAX_START_DAYS = 366  # slots are never offered further ahead than a year
MAX_BODY = 16 * 1024
USER_KEY: web.RequestKey[User] = web.RequestKey("api_user", User)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An API refusal rendered as JSON."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False),
            content_type="application/json",
        )


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Authenticate the bearer token, check its scope and its rate limit."""

    def decorator(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            raw = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
            async with request.app[SESSIONMAKER_KEY].begin() as db:
                found = await api_tokens.authenticate(db, raw) if raw else None
            if found is None:
                raise ApiError(401, "unauthorized", _("Jeton d'accès absent ou invalide."))
            token, user = found
            if scope not in token.scopes:
                raise ApiError(
                    403, "forbidden", _("Ce jeton n'a pas l'autorisation %(s)s.") % {"s": scope}
                )
            if not await request.app[RATELIMIT_KEY].hit(API_PER_TOKEN, str(token.id)):
                raise ApiError(
                    429, "rate_limited", _("Trop de requêtes. Réessayez dans une minute.")
                )
            request[USER_KEY] = user
            return await handler(request)

        wrapper.__doc__ = handler.__doc__
        return wrapper

    return decorator


def _motif_json(motif: Motif) -> dict[str, Any]:
    return {
        "id": motif.id,
        "name": motif.name,
        "description": motif.description,
        "first_visit_minutes": motif.first_visit_minutes,
        "follow_up_minutes": motif.follow_up_minutes,
    }


def _appointment_json(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "motif_id": appointment.motif_id,
        "kind": appointment.kind.value,
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "status": appointment.status.value,
        "first_name": appointment.first_name,
        "created_at": appointment.created_at.isoformat(),
        "moved_to": appointment.moved_to_id,
    }


def _kind(value: object) -> VisitKind:
    try:
        return VisitKind(str(value or "first"))
    except ValueError:
        raise ApiError(
            422, "invalid_kind", _("Le type de visite doit être first ou follow_up.")
        ) from None


def _zone(value: str | None, default: str) -> ZoneInfo:
    try:
        return availability.zone(value or default)
    except availability.AvailabilityError:
        raise ApiError(422, "invalid_timezone", _("Fuseau horaire inconnu.")) from None


async def _motif(request: web.Request, motif_id: object) -> Motif:
    if isinstance(motif_id, bool) or not isinstance(motif_id, int | str):
        raise ApiError(422, "invalid_motif", _("Motif inconnu."))
    try:
        wanted = int(str(motif_id))
    except ValueError:
        raise ApiError(422, "invalid_motif", _("Motif inconnu.")) from None
    if not 0 < wanted < 2**31:
        raise ApiError(422, "invalid_motif", _("Motif inconnu."))
    association_id = request[USER_KEY].association_id
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await motifs.get_motif(db, association_id, wanted)
    if found is None or not found.is_active:
        raise ApiError(422, "invalid_motif", _("Motif inconnu."))
    return found


@requires("motifs:read")
async def list_motifs(request: web.Request) -> web.Response:
    """The association's active motifs."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = await motifs.list_motifs(db, request[USER_KEY].association_id, active_only=True)
    return web.json_response({"motifs": [_motif_json(m) for m in rows]})


@requires("slots:read")
async def list_slots(request: web.Request) -> web.Response:
    """Free slots for a motif over up to 31 local days."""
    settings = request.app[SETTINGS_KEY]
    motif = await _motif(request, request.query.get("motif_id"))
    kind = _kind(request.query.get("kind"))
    zone = _zone(request.query.get("tz"), settings.timezone)
    try:
        start = date.fromisoformat(
            request.query.get("from") or utcnow().astimezone(zone).date().isoformat()
        )
        days = int(request.query.get("days", "7"))
    except ValueError:
        raise ApiError(
            422, "invalid_range", _("Période invalide (from=AAAA-MM-JJ, days=1 à 31).")
        ) from None
    today = utcnow().astimezone(zone).date()
    if not 1 <= days <= MAX_DAYS or not -1 <= (start - today).days <= MAX_START_DAYS:
        raise ApiError(422, "invalid_range", _("Période invalide (from=AAAA-MM-JJ, days=1 à 31)."))
    async with request.app[SESSIONMAKER_KEY]() as db:
        slots = await availability.find_slots(
            db,
            settings,
            request[USER_KEY].association_id,
            motif,
            kind,
            start,
            days,
            utcnow(),
            tz=zone,
        )
    return web.json_response(
        {
            "slots": [
                {
                    "starts_at": s.starts_at.isoformat(),
                    "ends_at": s.ends_at.isoformat(),
                    "capacity": s.capacity,
                }
                for s in slots
            ]
        }
    )


@requires("bookings:read")
async def list_bookings(request: web.Request) -> web.Response:
    """The bookings made by this token's referrer (only theirs)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = await booking.appointments_for_referrer(db, request[USER_KEY].id)
    return web.json_response({"bookings": [_appointment_json(a) for a in rows]})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", _("Requête trop grosse."))
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_json", _("Le corps de la requête doit être du JSON.")
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", _("Le corps de la requête doit être un objet JSON."))
    return body


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"invalid_{name}", _("Valeur invalide pour %(f)s.") % {"f": name})
    return value


@requires("bookings:write")
async def create_booking(request: web.Request) -> web.Response:
    """Book a slot on behalf of a beneficiary; answers the join link, code and manage URL."""
    settings = request.app[SETTINGS_KEY]
    body = await _json_body(request)
    motif = await _motif(request, body.get("motif_id"))
    kind = _kind(body.get("kind"))
    try:
        starts_at = datetime.fromisoformat(str(body.get("starts_at", "")))
    except ValueError:
        starts_at = None
    if starts_at is None or starts_at.tzinfo is None:
        raise ApiError(
            422, "invalid_starts_at", _("starts_at doit être une date ISO 8601 avec fuseau.")
        )
    needs_raw = body.get("needs") or {}
    if not isinstance(needs_raw, dict):
        raise ApiError(422, "invalid_needs", _("needs doit être un objet."))
    language = needs_raw.get("interpreter_language")
    if language is not None and not isinstance(language, str):
        raise ApiError(422, "invalid_needs", _("interpreter_language doit être un texte."))
    contact = ContactInfo(
        first_name=_text(body, "first_name") or "",
        phone=_text(body, "phone"),
        email=_text(body, "email"),
        postal_code=_text(body, "postal_code"),
        description=_text(body, "description"),
        needs=Needs(
            interpreter_language=needs_raw.get("interpreter_language"),
            hearing=needs_raw.get("hearing", False),
            first_time_computer=needs_raw.get("first_time_computer", False),
        ),
        timezone=_text(body, "timezone"),
    )
    user = request[USER_KEY]
    now = utcnow()
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            referrer = await db.get_one(User, user.id)
            booked = await booking.book(
                db,
                settings,
                association_id=user.association_id,
                motif_id=motif.id,
                kind=kind,
                starts_at=starts_at,
                contact=contact,
                via="api",
                referrer=referrer,
                now=now,
            )
            await notifications.appointment_booked(db, settings, booked, now)
    except booking.BookingError as exc:
        status = 409 if exc.code == "slot_taken" else 422
        raise ApiError(status, exc.code, str(exc)) from None
    payload = _appointment_json(booked.appointment)
    payload.update(
        {
            "join_url": booked.join_url,
            "code": booked.code,
            "manage_url": settings.url(f"/rendez-vous/gerer/{booked.manage_token}"),
        }
    )
    return web.json_response(payload, status=201)


@requires("bookings:write")
async def cancel_booking(request: web.Request) -> web.Response:
    """Cancel one of this referrer's bookings; the slot is free again at once."""
    user = request[USER_KEY]
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            referrer = await db.get_one(User, user.id)
            now = utcnow()
            appointment = await booking.cancel_for_referrer(
                db, request.match_info["booking_id"][:36], referrer, now
            )
            await notifications.appointment_cancelled(
                db, request.app[SETTINGS_KEY], appointment, now
            )
    except booking.BookingError as exc:
        status = {"not_found": 404, "already_cancelled": 409}.get(exc.code, 422)
        raise ApiError(status, exc.code, str(exc)) from None
    return web.json_response(_appointment_json(appointment))


async def stats(request: web.Request) -> web.Response:
    """The coordinator's statistics as JSON (logged-in coordinator session; API tokens are
    referrers' and never see statistics). Counts below stats_small_count read "< N"."""
    user = current_user(request)
    if user is None:
        raise ApiError(401, "unauthorized", _("Connectez-vous avec un compte de coordination."))
    if user.role != Role.COORDINATOR:
        raise ApiError(403, "forbidden", _("Les statistiques sont réservées à la coordination."))
    try:
        filters = stats_views.filters_or_error(request)
    except FilterError as exc:
        raise ApiError(422, "invalid_filters", str(exc)) from None
    report = await stats_views.load_report(request, filters)
    small = request.app[SETTINGS_KEY].stats_small_count
    return web.json_response(report_json(report, small))


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(openapi_document(request.app[SETTINGS_KEY].base_url))


async def _tokens_page(
    request: web.Request, status: int = 200, **extra: object
) -> web.StreamResponse:
    user = current_user(request)
    assert user is not None
    async with request.app[SESSIONMAKER_KEY]() as db:
        tokens = await api_tokens.list_tokens(db, user)
    context = {"tokens": tokens, "scopes": api_tokens.SCOPES, **extra}
    return render(request, "api/tokens.html", context, status)


@login_required(Role.REFERRER)
async def tokens_page(request: web.Request) -> web.StreamResponse:
    """A referrer's API tokens."""
    return await _tokens_page(request)


@login_required(Role.REFERRER)
async def create_token(request: web.Request) -> web.StreamResponse:
    """Create a token and show it once."""
    form = await check_csrf(request)
    user = current_user(request)
    assert user is not None
    scopes = [str(s) for s in form.getall("scopes", [])] if hasattr(form, "getall") else []
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            _token, raw = await api_tokens.create_token(
                db, user, str(form.get("name", ""))[:200], scopes
            )
    except api_tokens.ApiTokenError as exc:
        return await _tokens_page(request, 400, error=str(exc))
    return await _tokens_page(request, new_token=raw)


@login_required(Role.REFERRER)
async def revoke_token(request: web.Request) -> web.StreamResponse:
    """Revoke one of one's tokens."""
    await check_csrf(request)
    user = current_user(request)
    assert user is not None
    try:
        token_id = int(request.match_info["token_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        if not await api_tokens.revoke(db, user, token_id):
            raise web.HTTPNotFound()
    raise web.HTTPSeeOther(location="/mes-jetons")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the /api/v1 routes and the referrer's token page."""
    router.add_get("/mes-jetons", tokens_page, name="api-tokens")
    router.add_post("/mes-jetons", create_token, name="api-tokens-create")
    router.add_post("/mes-jetons/{token_id}/revoquer", revoke_token, name="api-tokens-revoke")
    router.add_get("/api/v1/openapi.json", openapi, name="api-openapi")
    router.add_get("/api/v1/motifs", list_motifs, name="api-motifs")
    router.add_get("/api/v1/slots", list_slots, name="api-slots")
    router.add_get("/api/v1/bookings", list_bookings, name="api-bookings")
    router.add_post("/api/v1/bookings", create_booking, name="api-bookings-create")
    router.add_delete("/api/v1/bookings/{booking_id}", cancel_booking, name="api-bookings-cancel")
    router.add_get("/api/v1/stats", stats, name="api-stats")


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    """The API description, kept next to the handlers it describes."""
    errors = {
        "401": _error_response("Missing, invalid or revoked token"),
        "403": _error_response("The token lacks the scope"),
        "429": _error_response("Rate limit (120 requests per minute per token)"),
    }
    motif_param = {
        "name": "motif_id",
        "in": "query",
        "required": True,
        "schema": {"type": "integer"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "visio-permanence partner API",
            "version": "1",
            "description": "Book visio appointments on behalf of the people you follow. "
            "Create a token on your referrer page; send it as `Authorization: Bearer <token>`.",
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/motifs": {
                "get": {
                    "operationId": "listMotifs",
                    "summary": "Active motifs (scope motifs:read)",
                    "responses": {
                        "200": {
                            "description": "Motifs",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "motifs": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Motif"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
            "/api/v1/slots": {
                "get": {
                    "operationId": "listSlots",
                    "summary": "Free slots (scope slots:read)",
                    "parameters": [
                        motif_param,
                        {
                            "name": "kind",
                            "in": "query",
                            "schema": {"$ref": "#/components/schemas/Kind"},
                        },
                        {
                            "name": "from",
                            "in": "query",
                            "schema": {"type": "string", "format": "date"},
                        },
                        {
                            "name": "days",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
                        },
                        {
                            "name": "tz",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "examples": ["Europe/Paris", "Indian/Reunion"],
                            },
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Slots",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "slots": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Slot"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        "422": _error_response("Invalid motif, kind, time zone or range"),
                        **errors,
                    },
                }
            },
            "/api/v1/bookings": {
                "get": {
                    "operationId": "listBookings",
                    "summary": "Bookings made with this referrer's account (scope bookings:read)",
                    "responses": {
                        "200": {
                            "description": "Bookings",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "bookings": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Booking"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **errors,
                    },
                },
                "post": {
                    "operationId": "createBooking",
                    "summary": "Book a slot for a beneficiary (scope bookings:write)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/BookingRequest"}
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Booked",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/BookingCreated"}
                                }
                            },
                        },
                        "400": _error_response("Body is not a JSON object"),
                        "409": _error_response("slot_taken: the slot was just taken"),
                        "413": _error_response("Body too large"),
                        "422": _error_response("Invalid field (code names it)"),
                        **errors,
                    },
                },
            },
            "/api/v1/bookings/{booking_id}": {
                "delete": {
                    "operationId": "cancelBooking",
                    "summary": "Cancel one of this referrer's bookings (scope bookings:write)",
                    "parameters": [
                        {
                            "name": "booking_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Cancelled",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Booking"}
                                }
                            },
                        },
                        "404": _error_response("No such booking of yours"),
                        "409": _error_response("Already cancelled"),
                        "422": _error_response("Too late to cancel"),
                        **errors,
                    },
                }
            },
            "/api/v1/stats": _stats_path(),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "coordinatorSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "vp_session",
                    "description": "The session cookie of a logged-in coordinator "
                    "(log in on /login). API tokens belong to referrers and cannot read "
                    "statistics.",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Kind": {"type": "string", "enum": [k.value for k in VisitKind]},
                "Count": _count_schema(),
                "Motif": {
                    "type": "object",
                    "required": ["id", "name", "first_visit_minutes", "follow_up_minutes"],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "description": {"type": ["string", "null"]},
                        "first_visit_minutes": {"type": "integer"},
                        "follow_up_minutes": {"type": "integer"},
                    },
                },
                "Slot": {
                    "type": "object",
                    "required": ["starts_at", "ends_at", "capacity"],
                    "properties": {
                        "starts_at": {"type": "string", "format": "date-time"},
                        "ends_at": {"type": "string", "format": "date-time"},
                        "capacity": {"type": "integer", "minimum": 1},
                    },
                },
                "Booking": {
                    "type": "object",
                    "required": ["id", "motif_id", "kind", "starts_at", "ends_at", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "motif_id": {"type": "integer"},
                        "kind": {"$ref": "#/components/schemas/Kind"},
                        "starts_at": {"type": "string", "format": "date-time"},
                        "ends_at": {"type": "string", "format": "date-time"},
                        "status": {
                            "type": "string",
                            "enum": ["booked", "cancelled", "done", "no_show"],
                        },
                        "first_name": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "moved_to": {
                            "type": ["string", "null"],
                            "description": "Set when the booking was moved: its new id",
                        },
                    },
                },
                "BookingCreated": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Booking"},
                        {
                            "type": "object",
                            "required": ["join_url", "code", "manage_url"],
                            "properties": {
                                "join_url": {"type": "string", "format": "uri"},
                                "code": {"type": "string", "pattern": "^[0-9]{6}$"},
                                "manage_url": {"type": "string", "format": "uri"},
                            },
                        },
                    ]
                },
                "BookingRequest": {
                    "type": "object",
                    "required": ["motif_id", "starts_at", "first_name"],
                    "properties": {
                        "motif_id": {"type": "integer"},
                        "kind": {"$ref": "#/components/schemas/Kind"},
                        "starts_at": {"type": "string", "format": "date-time"},
                        "first_name": {"type": "string", "maxLength": 40},
                        "phone": {
                            "type": "string",
                            "description": "French or overseas number; phone or email required",
                        },
                        "email": {"type": "string", "format": "email"},
                        "postal_code": {"type": "string", "pattern": "^[0-9]{5}$"},
                        "description": {"type": "string", "maxLength": 1000},
                        "timezone": {"type": "string"},
                        "needs": {
                            "type": "object",
                            "properties": {
                                "interpreter_language": {"type": "string", "maxLength": 40},
                                "hearing": {"type": "boolean"},
                                "first_time_computer": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    }


def _count_schema() -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": "^< [0-9]+$"},
        ],
        "description": 'A count; below stats_small_count it reads "< N" (never re-identifying)',
    }


def _stats_path() -> dict[str, Any]:
    """GET /api/v1/stats: same filters as the /stats page."""
    count = {"$ref": "#/components/schemas/Count"}
    rate = {
        "type": ["number", "null"],
        "description": "Per 100,000 inhabitants; null when "
        "the count is suppressed or the population unknown (Mayotte)",
    }
    labelled = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code", "label", "sessions"],
            "properties": {
                "code": {"type": ["string", "null"]},
                "label": {"type": "string"},
                "sessions": count,
                "unmet": count,
            },
        },
    }
    departement = {
        "type": "object",
        "required": ["code", "name", "sessions", "unmet"],
        "properties": {
            "code": {"type": "string", "description": 'INSEE code, or "inconnu"'},
            "name": {"type": "string"},
            "population": {"type": ["integer", "null"]},
            "sessions": count,
            "sessions_per_100k": rate,
            "unmet": count,
            "unmet_per_100k": rate,
        },
    }
    query = [
        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
        {
            "name": "channel",
            "in": "query",
            "schema": {"type": "string", "enum": list(CHANNELS)},
        },
        {
            "name": "theme",
            "in": "query",
            "schema": {"type": "string", "enum": list(taxonomy.THEMES)},
        },
        {"name": "step", "in": "query", "schema": {"type": "string", "enum": ["month", "week"]}},
    ]
    body = {
        "type": "object",
        "required": ["period", "filters", "small_count", "totals", "volumes", "departements"],
        "properties": {
            "period": {
                "type": "object",
                "properties": {
                    "from": {"type": "string", "format": "date"},
                    "to": {"type": "string", "format": "date"},
                    "step": {"type": "string", "enum": ["month", "week"]},
                },
            },
            "filters": {
                "type": "object",
                "properties": {
                    "channel": {"type": ["string", "null"]},
                    "theme": {"type": ["string", "null"]},
                },
            },
            "small_count": {"type": "integer"},
            "totals": {
                "type": "object",
                "properties": {
                    "sessions": count,
                    "sessions_ended": count,
                    "demand": count,
                    "unmet": count,
                    "mean_duration_minutes": {"type": ["number", "null"]},
                },
            },
            "volumes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "period": {"type": "string", "examples": ["2025-03", "2025-W09"]},
                        "sessions": count,
                        "by_channel": {"type": "object", "additionalProperties": count},
                        "demand": count,
                        "unmet": count,
                    },
                },
            },
            "themes": labelled,
            "organisations": labelled,
            "outcomes": labelled,
            "autonomy": labelled,
            "durations": labelled,
            "volunteers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": ["integer", "null"]},
                        "name": {"type": "string"},
                        "sessions": count,
                    },
                },
            },
            "departements": {"type": "array", "items": departement},
            "ranking": {
                "type": "array",
                "items": departement,
                "description": "Where to open a permanence: highest unmet demand per 100k first",
            },
        },
    }
    return {
        "get": {
            "operationId": "getStatistics",
            "summary": "Coordinator's statistics (logged-in coordinator session)",
            "description": "Sessions (handoff sheets), demand and unmet demand (left the queue, "
            "call-backs expired or wrong number, searches without a slot) by period, channel, "
            "theme, organisation, outcome, autonomy, duration, volunteer and département, with "
            "rates per 100,000 inhabitants. Default period: the last 12 calendar months; at "
            "most 5 years.",
            "security": [{"coordinatorSession": []}],
            "parameters": query,
            "responses": {
                "200": {
                    "description": "Statistics",
                    "content": {"application/json": {"schema": body}},
                },
                "401": _error_response("Not logged in"),
                "403": _error_response("Logged in, but not as a coordinator"),
                "422": _error_response("invalid_filters: bad date, range, channel or theme"),
            },
        }
    }
