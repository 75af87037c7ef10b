"""`GET /api/ice-servers`: the STUN/TURN servers of one live session, with TURN credentials
that expire after TURN_TTL_SECONDS. Granted by the same rule as the `/assist` socket
(``signaling/access.py``): the session's volunteer or observer (``?session=<id>`` with the login
cookie), its beneficiary (pass cookie, or ``Authorization: Bearer <join token>`` for non-browser
peers)."""

from __future__ import annotations

from aiohttp import web

from server.i18n import _
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.turn import session_ice_servers
from signaling.access import Refused, session_access

PATH = "/api/ice-servers"
NAME = "ice-servers"


async def ice_servers_view(request: web.Request) -> web.Response:
    """STUN/TURN servers for one session; TURN credentials expire after TURN_TTL_SECONDS."""
    settings = request.app[SETTINGS_KEY]
    auth = request.headers.get("Authorization", "")
    bearer = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
    try:
        async with request.app[SESSIONMAKER_KEY]() as db:
            access = await session_access(
                db,
                settings,
                request.cookies,
                join_token=bearer,
                session_id=request.query.get("session") or None,
            )
    except Refused:
        message = _("Accès refusé : cette assistance n'existe pas ou ne vous concerne pas.")
        return web.json_response({"error": {"code": "forbidden", "message": message}}, status=403)
    return web.json_response(session_ice_servers(settings, access.session.id))


def add_routes(app: web.Application) -> None:
    """Register the endpoint on the application's router."""
    app.router.add_get(PATH, ice_servers_view, name=NAME)
