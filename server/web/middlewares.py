"""Middlewares: security headers, login from cookie, CSRF cookie, French error pages, gzip."""

from __future__ import annotations

import logging
import mimetypes

import aiohttp_jinja2
from aiohttp import web

from server import accounts
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.passes import CSRF_COOKIE, login_token
from server.runtime import (
    OUTAGE_KEY,
    RETRY_AFTER_SECONDS,
    SESSIONMAKER_KEY,
    SETTINGS_KEY,
    DatabaseUnavailable,
    unavailable_from,
)
from server.web.accesslog import logged_target
from server.web.assets import ASSETS_KEY
from server.web.language import template_context
from server.web.request import (
    CSRF_SEED_KEY,
    CSRF_SEED_NEW_KEY,
    LOGIN_TOKEN_KEY,
    USER_KEY,
    Handler,
    csrf_for,
    set_cookie,
)

log = logging.getLogger(__name__)

SCRIPT_SRC = "script-src 'self'"
CSP = "; ".join(
    [
        "default-src 'self'",
        SCRIPT_SRC,
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")


# JSON, not pages: the partner API, the vault's API (its browser script reads the French message
# of every refusal), and the health checks.
API_PREFIXES = ("/api/", "/coffre/api/")


def _is_api(request: web.Request) -> bool:
    return request.path.startswith(API_PREFIXES) or request.path in ("/healthz", "/readyz")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Strict CSP, no framing, no referrer (join URLs carry a secret), nosniff, HSTS on https."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects are raised; they need the headers too
        _set_security_headers(request, exc)
        raise
    _set_security_headers(request, response)
    return response


def _set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    static = request.path.startswith("/static/")
    if static:
        headers.setdefault("Content-Security-Policy", CSP)
    else:
        # Pages may carry the import map (server/web/assets.py): allowed by its hash only.
        script_src = f"{SCRIPT_SRC} {request.app[ASSETS_KEY].script_src()}"
        headers.setdefault("Content-Security-Policy", CSP.replace(SCRIPT_SRC, script_src, 1))
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault(
        "Permissions-Policy",
        "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
    )
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.app[SETTINGS_KEY].secure_cookies:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if static:
        version = request.query.get("v")
        path = request.path.removeprefix("/static/")
        if version and response.status == 200 and version == request.app[ASSETS_KEY].version(path):
            # The URL names this very content: keep it, never ask again (a 3G round trip saved
            # per file and per visit).
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            # A plain or stale URL: revalidate (a cheap 304) every time, so that a page never
            # mixes a new script with an old cached module.
            headers["Cache-Control"] = "no-cache"
    else:
        headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def compression(request: web.Request, handler: Handler) -> web.StreamResponse:
    """gzip text responses: the beneficiary is often on a slow mobile network."""
    response = await handler(request)
    content_type = response.headers.get("Content-Type", "")
    if isinstance(response, web.FileResponse):
        if request.if_none_match or request.if_modified_since:
            # It may turn into a body-less 304 when sent; gzip would then write a stray
            # gzip trailer after the headers and break the connection's framing.
            return response
        if not content_type:
            # FileResponse sets its Content-Type only when it is sent, after this middleware.
            content_type = mimetypes.guess_type(request.path)[0] or ""
    if (
        "gzip" in request.headers.get("Accept-Encoding", "")
        and content_type.startswith(COMPRESSIBLE)
        and not response.prepared
        and "Content-Encoding" not in response.headers
    ):
        response.enable_compression(web.ContentCoding.gzip)
    return response


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the logged-in account from the login cookie (pages and API, not static files)."""
    token = login_token(request.app[SETTINGS_KEY], request.cookies)
    if token and not request.path.startswith("/static/"):
        async with request.app[SESSIONMAKER_KEY]() as db:
            user = await accounts.user_for_login_token(db, token)
        if user is not None:
            request[USER_KEY] = user
            request[LOGIN_TOKEN_KEY] = token
    response = await handler(request)
    if request.get(CSRF_SEED_NEW_KEY) and not response.prepared:
        set_cookie(request, response, CSRF_COOKIE, request[CSRF_SEED_KEY], max_age=None)
    return response


# The one place a domain refusal becomes an HTTP status.
STATUS_OF_KIND: dict[Kind, int] = {
    Kind.INVALID: 400,
    Kind.UNAUTHENTICATED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.GONE: 410,
    Kind.TOO_LARGE: 413,
    Kind.RATE_LIMITED: 429,
    Kind.UNAVAILABLE: 503,
}
ERROR_TEXT = {
    400: N_("La demande n'est pas valide."),
    403: N_("Vous n'avez pas accès à cette page."),
    404: N_("Cette page n'existe pas."),
    405: N_("Cette action n'est pas possible ici."),
    413: N_("Ce que vous envoyez est trop gros."),
    429: N_("Trop d'essais. Attendez quelques minutes puis réessayez."),
    500: N_("Un problème est survenu de notre côté. Réessayez dans un instant."),
}


def status_of(error: DomainError) -> int:
    """The HTTP status of a domain refusal."""
    return STATUS_OF_KIND[error.kind]


def _error_page(
    request: web.Request, status: int, detail: str | None, error: DomainError | None = None
) -> web.StreamResponse:
    message = detail or _(ERROR_TEXT.get(status, ERROR_TEXT[500]))
    if _is_api(request):
        body = error.as_json() if error else {"code": f"http_{status}", "message": message}
        return web.json_response({"error": body}, status=status)
    context = {
        "status": status,
        "message": message,
        "user": request.get(USER_KEY),
        "csrf_token": csrf_for(request),
        **template_context(request),
    }
    response = aiohttp_jinja2.render_template("errors/error.html", request, context)
    response.set_status(status)
    return response


async def _outage_as_error(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler, with a database outage (stopped, restarting, no connection in time) raised
    as ``DatabaseUnavailable`` rather than as the driver's error."""
    try:
        return await handler(request)
    except Exception as exc:
        error = unavailable_from(exc)
        if error is None:
            raise
        raise error from exc


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a clear French page (JSON for the API), never a stack trace; a
    domain refusal no view caught gets the status of its kind."""
    try:
        return await _outage_as_error(request, handler)
    except DatabaseUnavailable as exc:
        # Not a bug: one line, no stack trace, and "come back in a few seconds" for people,
        # browsers and API clients alike.
        request.app[OUTAGE_KEY]("http", exc)
        response = _error_page(request, status_of(exc), exc.message, exc)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    except DomainError as exc:
        response = _error_page(request, status_of(exc), exc.message, exc)
        if exc.kind is Kind.RATE_LIMITED:
            response.headers["Retry-After"] = "60"
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/socket.io"):
            raise
        if exc.content_type == "application/json":
            raise  # already a structured API error
        detail = exc.text if exc.content_type == "text/plain" and exc.text else None
        if detail and detail.startswith(f"{exc.status}:"):
            detail = None  # aiohttp's default English reason, not one of ours
        response = _error_page(request, exc.status, detail)
        for name in ("Retry-After", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        # The target as the access log writes it: never a link's secret or a query string.
        log.exception("unhandled error on %s %s", request.method, logged_target(request))
        return _error_page(request, 500, None)
