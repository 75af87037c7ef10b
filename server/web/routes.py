"""The route table: every view module declares its routes (a ``RouteTableDef`` named
``routes``, each route named); this module adds them to the application, with the static files.
Templates build links with ``url("name", ...)``, views with ``url_for``/``see_other``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.web.views import (
    access_tokens,
    agenda,
    api_v1,
    assistance,
    auth,
    availability,
    booking,
    callback_requests,
    coordinator,
    dropin,
    handoff,
    health,
    home,
    join,
    motifs,
    referrers,
    stats,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
SOCKETIO_CLIENT = WEB_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js"
VIEW_MODULES = (
    home,
    health,
    auth,
    assistance,
    coordinator,
    join,
    dropin,
    callback_requests,
    handoff,
    stats,
    booking,
    agenda,
    availability,
    motifs,
    referrers,
    access_tokens,
    api_v1,
)


async def socketio_client(request: web.Request) -> web.StreamResponse:
    """The Socket.IO browser client, installed by `npm ci` (never from a CDN)."""
    if not SOCKETIO_CLIENT.exists():
        raise web.HTTPServiceUnavailable(
            text="socket.io-client is missing: run `npm ci` in web/ (make setup does it)",
            content_type="text/plain",
        )
    response = web.FileResponse(SOCKETIO_CLIENT)
    response.content_type = "text/javascript"
    return response


def setup_routes(app: web.Application) -> None:
    """Register every view module's routes, then the static files."""
    for module in VIEW_MODULES:
        app.router.add_routes(module.routes)
    r = app.router
    r.add_get("/static/vendor/socket.io.esm.min.js", socketio_client, name="socketio-client")
    r.add_static("/static/", STATIC_DIR, name="static", append_version=False)
