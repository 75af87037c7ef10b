"""JSON API for the pages: ICE servers with time-limited TURN credentials."""

from __future__ import annotations

from aiohttp import web

from server import assist as domain
from server.booking import beneficiary_may_enter
from server.i18n import _
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import AssistanceSession, utcnow
from server.web.request import beneficiary_session_id, current_user
from signaling.turn import ice_servers, turn_credentials


async def _authorised_session(request: web.Request) -> AssistanceSession | None:
    """The live session the caller belongs to: volunteer/observer by login, beneficiary by
    pass cookie or by join token (``Authorization: Bearer <token>``, for non-browser peers)."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        user = current_user(request)
        requested = request.query.get("session", "")
        if user is not None and requested:
            found = await domain.get_for_user(db, requested, user)
            return found[0] if found and found[0].is_live else None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            session = await domain.find_by_token(db, auth.removeprefix("Bearer ").strip())
            if session is not None and not await beneficiary_may_enter(db, session, utcnow()):
                return None  # an appointment's link opens 15 minutes before
            return session
        session_id = beneficiary_session_id(request)
        if session_id is not None:
            return await domain.get_live(db, session_id)
    return None


async def ice_servers_view(request: web.Request) -> web.Response:
    """STUN/TURN servers for one session; TURN credentials expire after TURN_TTL_SECONDS."""
    session = await _authorised_session(request)
    if session is None:
        message = _("Accès refusé : cette assistance n'existe pas ou ne vous concerne pas.")
        return web.json_response({"error": {"code": "forbidden", "message": message}}, status=403)
    settings = request.app[SETTINGS_KEY]
    credentials = (
        turn_credentials(
            settings.turn_secret.get_secret_value(), session.id, settings.turn_ttl_seconds
        )
        if settings.turn_urls
        else None
    )
    servers = ice_servers(settings.stun_urls, settings.turn_urls, credentials)
    return web.json_response({"iceServers": servers, "ttl": settings.turn_ttl_seconds})
