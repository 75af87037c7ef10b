"""The home page: beneficiaries type their code, volunteers log in."""

from __future__ import annotations

from aiohttp import web

from server import links
from server.web.request import render

routes = web.RouteTableDef()


@routes.get(links.HOME.path, name=links.HOME.name)
async def home(request: web.Request) -> web.StreamResponse:
    """Two obvious doors: "J'ai un code" and the volunteers' login."""
    return render(request, "home.html", {})
