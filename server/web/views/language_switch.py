"""The language switch of a helped person's pages: one link per language, named in itself."""

from __future__ import annotations

from aiohttp import web

from server import i18n
from server.web import language
from server.web.request import set_cookie

routes = web.RouteTableDef()


@routes.get("/langue/{code}", name="language")
async def switch_language(request: web.Request) -> web.StreamResponse:
    """Keep the chosen language in a cookie (a year: it is the person's preference, nothing
    else) and go back to the page the switch was on. A plain link, so that it works without
    script and on the first screen; an unknown language or a ``next`` leaving the site is refused
    or ignored, never followed."""
    chosen = i18n.language(request.match_info["code"])
    if chosen is None:
        raise web.HTTPNotFound()
    target = language.safe_next(request.query.get("next", "")) or "/"
    response = web.HTTPSeeOther(target)
    set_cookie(request, response, language.COOKIE, chosen.code, language.COOKIE_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    raise response
