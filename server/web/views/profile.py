"""`/profil`: what a volunteer or coordinator tells about themselves; today the languages they
speak besides French, which the drop-in queue and the booking match with the people who ask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from server import accounts
from server.accounts import AccountError
from server.runtime import SESSIONMAKER_KEY
from server.store.models import Role
from server.web.middlewares import status_of
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()
STAFF = (Role.VOLUNTEER, Role.COORDINATOR)
# The page has one box per language: a longer list is cut before it is read.
MAX_TICKED = 4 * len(accounts.SPEAKABLE)


def language_choices() -> list[tuple[str, str]]:
    """(code, "Arabe (العربية)") for each language a volunteer may declare."""
    from server.i18n import BY_CODE

    return [
        (code, f"{accounts.language_name(code).capitalize()} ({BY_CODE[code].name})")
        for code in accounts.SPEAKABLE
    ]


def _page(request: web.Request, spoken: list[str], status: int = 200, **extra: Any) -> web.Response:
    context = {"options": language_choices(), "spoken": spoken, "error": None, **extra}
    return render(request, "profile/profile.html", context, status)


@routes.get("/profil", name="profile")
@login_required(*STAFF)
async def profile_page(request: web.Request) -> web.StreamResponse:
    """The languages one speaks, as ticked boxes."""
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        spoken = await accounts.languages_of(db, user.id)
    return _page(request, spoken, saved=request.query.get("enregistre") == "1")


def _ticked(form: Mapping[str, Any]) -> list[str]:
    values = form.getall("languages", []) if isinstance(form, MultiMapping) else []
    return [str(value)[:20] for value in values[:MAX_TICKED]]


@routes.post("/profil", name="profile-save")
@login_required(*STAFF)
async def save_profile(request: web.Request) -> web.StreamResponse:
    """Replace the languages one speaks; an unknown one changes nothing (400)."""
    form = await check_csrf(request)
    ticked = _ticked(form)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await accounts.set_languages(db, required_user(request), ticked)
    except AccountError as exc:
        async with request.app[SESSIONMAKER_KEY]() as db:
            spoken = await accounts.languages_of(db, required_user(request).id)
        return _page(request, spoken, status_of(exc), error=exc.message)
    raise see_other(request, "profile", {"enregistre": "1"})
