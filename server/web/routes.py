"""The one route table, with named routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.web.views import (
    agenda,
    api_v1,
    assistance,
    auth,
    booking,
    callbacks,
    coordinator,
    dropin,
    handoff,
    health,
    home,
    ice,
    join,
    stats,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
SOCKETIO_CLIENT = WEB_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js"


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
    """Register every route; names are used by templates and tests."""
    r = app.router
    r.add_get("/", home.home, name="home")
    r.add_get("/healthz", health.healthz, name="healthz")
    r.add_get("/readyz", health.readyz, name="readyz")
    r.add_get("/login", auth.login_page, name="login")
    r.add_post("/login", auth.login, name="login-submit")
    r.add_post("/logout", auth.logout, name="logout")
    r.add_get("/invitation/{token}", auth.invitation_page, name="invitation")
    r.add_post("/invitation/{token}", auth.accept_invitation, name="invitation-accept")
    r.add_get("/tableau", assistance.dashboard, name="dashboard")
    r.add_post("/assistance", assistance.create, name="assistance-create")
    r.add_get("/assistance/{session_id}", assistance.room, name="assistance-room")
    r.add_post("/assistance/{session_id}/code", assistance.new_code, name="assistance-code")
    r.add_post(
        "/assistance/{session_id}/observer", assistance.invite_observer, name="assistance-observer"
    )
    r.add_post("/assistance/{session_id}/end", assistance.end, name="assistance-end")
    r.add_get("/benevoles", coordinator.volunteers, name="volunteers")
    r.add_post("/benevoles", coordinator.invite, name="volunteers-invite")
    r.add_post(
        "/benevoles/{user_id}/desactiver", coordinator.deactivate, name="volunteers-deactivate"
    )
    r.add_post(
        "/benevoles/{user_id}/reactiver", coordinator.reactivate, name="volunteers-reactivate"
    )
    r.add_get("/j/{token}", join.join_link, name="join-link")
    r.add_get("/code", join.code_page, name="code")
    r.add_post("/code", join.submit_code, name="code-submit")
    r.add_get("/b", join.room, name="beneficiary-room")
    r.add_post("/b/continue", join.continue_on_pc, name="beneficiary-handover")
    r.add_get("/api/ice-servers", ice.ice_servers_view, name="ice-servers")
    booking.add_routes(r)
    dropin.add_routes(r)
    callbacks.add_routes(r)
    agenda.add_routes(r)
    handoff.add_routes(r)
    api_v1.add_routes(r)
    r.add_routes(stats.routes)
    r.add_get("/static/vendor/socket.io.esm.min.js", socketio_client, name="socketio-client")
    r.add_static("/static/", STATIC_DIR, name="static", append_version=False)
