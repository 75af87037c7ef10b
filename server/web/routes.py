"""The route table: every view module declares its routes (a ``RouteTableDef`` named
``routes``, each route named); this module adds them to the application, with the static files.
Templates build links with ``url("name", ...)``, views with ``url_for``/``see_other``."""

from __future__ import annotations

from aiohttp import web

from server.web.assets import STATIC_DIR, VENDORED, WEB_DIR
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
    language_switch,
    motifs,
    notifications,
    profile,
    referrers,
    rights,
    stats,
    vault,
    vault_trustees,
)

CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}
VIEW_MODULES = (
    home,
    language_switch,
    health,
    auth,
    assistance,
    coordinator,
    join,
    dropin,
    callback_requests,
    handoff,
    rights,
    stats,
    booking,
    agenda,
    availability,
    motifs,
    notifications,
    referrers,
    profile,
    access_tokens,
    api_v1,
    vault,
    vault_trustees,
)


async def vendored_file(request: web.Request) -> web.StreamResponse:
    """A browser file of an npm package (VENDORED), installed by `npm ci`."""
    file = VENDORED.get(request.match_info["name"])
    if file is None:
        raise web.HTTPNotFound()
    if not file.exists():
        raise web.HTTPServiceUnavailable(
            text=f"{file.relative_to(WEB_DIR)} is missing: run `npm ci` in web/ (make setup)",
            content_type="text/plain",
        )
    response = web.FileResponse(file)
    response.content_type = CONTENT_TYPES[file.suffix]
    return response


def setup_routes(app: web.Application) -> None:
    """Register every view module's routes, then the static files."""
    for module in VIEW_MODULES:
        app.router.add_routes(module.routes)
    r = app.router
    r.add_get("/static/vendor/{name:.+}", vendored_file, name="vendor")
    r.add_static("/static/", STATIC_DIR, name="static", append_version=False)
