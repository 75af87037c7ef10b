"""The language of the pages a helped person sees: their choice (a cookie set by the switch),
else their browser's ``Accept-Language``, else French. Volunteers' and coordinators' pages stay
French: only the routes named in ``BENEFICIARY_ROUTES`` (and pages nobody routes, a dead link
being more often a person's than a volunteer's) are written in another language."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from server import i18n, passes
from server.i18n import Language
from server.runtime import SETTINGS_KEY

COOKIE = i18n.LANGUAGE_COOKIE
COOKIE_SECONDS = 365 * 24 * 3600
LANGUAGE_KEY = web.RequestKey("language", Language)

# Every page, form and script address a helped person meets, by route name. Their texts are
# the catalogues' "beneficiary" messages (tests/test_i18n_catalogues.py checks every language
# has them all).
BENEFICIARY_ROUTES: frozenset[str] = frozenset(
    {
        "home",
        "language",
        "join-link",
        "code",
        "code-submit",
        "beneficiary-room",
        "beneficiary-vault",
        "beneficiary-handover",
        "dropin",
        "dropin-join",
        "dropin-waiting",
        "dropin-enter",
        "dropin-leave",
        "callback-form",
        "callback-submit",
        "callback-cancel-page",
        "callback-cancel",
        "booking-motifs",
        "booking-slots",
        "booking-form",
        "booking-submit",
        "booking-waitlist",
        "booking-manage",
        "booking-ics",
        "booking-cancel",
        "booking-move",
        "booking-move-submit",
        "booking-manage-waitlist",
        "booking-recover",
        "booking-recover-submit",
        "handoff-read",
        "handoff-read-share",
        "handoff-room",
        "handoff-room-share",
        "handoff-dropin",
        "handoff-dropin-share",
        "handoff-manage",
        "handoff-manage-share",
        "vault",
        "vault-challenge",
        "vault-recover",
        "vault-api",
        "vault-contact",
        "vault-documents",
        "vault-document-blob",
        "vault-document",
        "vault-trustee-key",
        "vault-trustees",
        "vault-trustee",
        "vault-recovery-requests",
        "vault-recovery-request",
    }
)


# Routes that answer with the room itself (server/web/views/join.py enter_session).
_ROOM_ENTRANCES = frozenset({"join-link", "code-submit", "dropin-enter"})


def is_beneficiary_request(request: web.Request) -> bool:
    """True for a helped person's page (or an address nobody routes)."""
    name = request.match_info.route.name
    return name is None or name in BENEFICIARY_ROUTES


def chosen_language(request: web.Request) -> Language:
    """The person's language: the switch's cookie, else their browser's preference."""
    chosen = passes.cookie(request.app[SETTINGS_KEY], request.cookies, COOKIE)
    return i18n.preferred(chosen, request.headers.get("Accept-Language"))


def request_language(request: web.Request) -> Language:
    """The language this request's page is written in (French for staff pages)."""
    lang: Language = request.get(LANGUAGE_KEY, i18n.FRENCH)
    return lang


@web.middleware
async def language(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Write a helped person's page (and its error page) in their language; say which, and
    that it depends on the browser's preference and the cookie."""
    if not is_beneficiary_request(request):
        return await handler(request)
    lang = chosen_language(request)
    request[LANGUAGE_KEY] = lang
    i18n.activate(lang)
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        _label(exc, lang)
        raise
    _label(response, lang)
    return response


def _label(response: web.StreamResponse | web.HTTPException, lang: Language) -> None:
    if isinstance(response, web.StreamResponse) and response.prepared:
        return  # a stream (a file) already under way
    response.headers["Content-Language"] = lang.code
    response.headers.add("Vary", "Accept-Language, Cookie")


def template_context(request: web.Request) -> dict[str, Any]:
    """What every page's layout needs to be written in the request's language: ``lang`` and
    ``dir`` for <html>, and the switch (None on staff pages, which have none)."""
    lang = request_language(request)
    switch = None
    if LANGUAGE_KEY in request:
        here = _here(request)
        router = request.app.router
        switch = [
            {
                "language": candidate,
                "current": candidate == lang,
                "href": str(
                    router["language"].url_for(code=candidate.code).with_query({"next": here})
                ),
            }
            for candidate in i18n.LANGUAGES
        ]
    return {"lang": lang.code, "dir": lang.dir, "rtl": lang.rtl, "language_switch": switch}


def _here(request: web.Request) -> str:
    """Where the switch comes back to: this page, or for a page answering a form, the page the
    form was on (a POST address has no page to come back to)."""
    if request.match_info.route.name in _ROOM_ENTRANCES:
        # The room, entered by its link or code: it is at /b from then on (the page's script
        # puts /b in the address bar), and the link's secret stays out of the switch's links.
        return str(request.app.router["beneficiary-room"].url_for())
    if request.method == "GET":
        return request.path_qs
    referer = request.headers.get("Referer", "")
    return safe_next(_path_of(request, referer)) or "/"


def _path_of(request: web.Request, url: str) -> str:
    """The path and query of a URL on this site, else ''."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if not parts.scheme or parts.netloc != request.host:
        return ""
    return parts.path + (f"?{parts.query}" if parts.query else "")


def safe_next(target: str) -> str | None:
    """A local path to come back to, or None for anything that could leave the site (``//x``,
    ``/\\x``, a scheme) or is too long to be one of ours."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or len(target) > 2000
        or any(ord(char) < 0x20 for char in target)
    ):
        return None
    return target
