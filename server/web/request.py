"""Request helpers shared by the views: current user, CSRF, client IP, rendering, cookies."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server import passes
from server.i18n import _
from server.passes import CSRF_COOKIE
from server.ratelimit import address_key
from server.runtime import SETTINGS_KEY
from server.store.models import Role, User
from server.tokens import constant_time_equal, csrf_token
from server.web.forms import read_form
from server.web.language import template_context

USER_KEY: web.RequestKey[User] = web.RequestKey("user", User)
LOGIN_TOKEN_KEY: web.RequestKey[str] = web.RequestKey("login_token", str)
CSRF_SEED_KEY: web.RequestKey[str] = web.RequestKey("csrf_seed", str)
CSRF_SEED_NEW_KEY: web.RequestKey[bool] = web.RequestKey("csrf_seed_new", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def url_for(
    request: web.Request,
    name: str,
    query: Mapping[str, str | int] | None = None,
    /,
    **parts: object,
) -> str:
    """The path of a named route (``parts`` fill its placeholders), with an optional query."""
    url = request.app.router[name].url_for(**{key: str(value) for key, value in parts.items()})
    return str(url.with_query(query) if query else url)


def see_other(
    request: web.Request,
    name: str,
    query: Mapping[str, str | int] | None = None,
    /,
    **parts: object,
) -> web.HTTPSeeOther:
    """A 303 redirect to a named route (raise it, after a form, so that reloading is harmless)."""
    return web.HTTPSeeOther(location=url_for(request, name, query, **parts))


def client_address(request: web.Request) -> str:
    """The client's address. Behind a trusted proxy (TRUST_PROXY), the last X-Forwarded-For
    hop: the one our proxy appended; earlier hops are whatever the client chose to send."""
    if request.app[SETTINGS_KEY].trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return request.remote or ""


def client_key(request: web.Request) -> str:
    """The client's rate-limit identity: its IPv4 address or its IPv6 prefix (/64 by default)."""
    return address_key(client_address(request), request.app[SETTINGS_KEY].ipv6_prefix_length)


def current_user(request: web.Request) -> User | None:
    """The logged-in account, set by the auth middleware."""
    user: User | None = request.get(USER_KEY)
    return user


def required_user(request: web.Request) -> User:
    """The logged-in account of a view behind ``login_required``."""
    user = current_user(request)
    if user is None:  # login_required lets nobody else through
        raise RuntimeError("required_user() used in a view without login_required")
    return user


def csrf_seed(request: web.Request) -> str:
    """The per-browser random value the CSRF token is derived from (cookie set if missing)."""
    seed: str | None = request.get(CSRF_SEED_KEY)
    if seed is None:
        seed = passes.cookie(request.app[SETTINGS_KEY], request.cookies, CSRF_COOKIE) or ""
        if len(seed) < 20 or len(seed) > 64:
            seed = secrets.token_urlsafe(24)
            request[CSRF_SEED_NEW_KEY] = True
        request[CSRF_SEED_KEY] = seed
    return seed


def rotate_csrf(request: web.Request, response: web.StreamResponse) -> None:
    """A new CSRF seed for this browser, set on ``response``: called when the login session
    changes, so that a token read before (by another user of the same computer, in a cached
    page) is worthless after."""
    seed = secrets.token_urlsafe(24)
    request[CSRF_SEED_KEY] = seed
    request[CSRF_SEED_NEW_KEY] = False  # set here: a raised redirect skips the middleware
    set_cookie(request, response, CSRF_COOKIE, seed, max_age=None)


def _expected_csrf(request: web.Request, seed: str) -> str:
    return csrf_token(request.app[SETTINGS_KEY].secret_key.get_secret_value(), seed)


def mask_csrf(token: str) -> str:
    """The token XORed with a fresh random pad, pad first: a different string in every
    response, so that a compressed page does not leak it to a BREACH attacker (gzip stays on
    for 3G)."""
    raw = bytes.fromhex(token)
    pad = secrets.token_bytes(len(raw))
    masked = bytes(a ^ b for a, b in zip(pad, raw, strict=True))
    return base64.urlsafe_b64encode(pad + masked).decode()


_MASKED = re.compile(r"[A-Za-z0-9_-]{64}")
_PLAIN = re.compile(r"[0-9a-f]{48}")


def unmask_csrf(sent: str) -> str:
    """The token behind a masked one ("" if it is not one); an unmasked token (scripts that
    derive it from the seed) is taken as is."""
    if _PLAIN.fullmatch(sent):
        return sent
    if not _MASKED.fullmatch(sent):
        return ""
    data = base64.urlsafe_b64decode(sent)
    half = len(data) // 2
    return bytes(a ^ b for a, b in zip(data[:half], data[half:], strict=True)).hex()


def csrf_for(request: web.Request) -> str:
    """The CSRF token to put in this page's forms: masked afresh for every response."""
    return mask_csrf(_expected_csrf(request, csrf_seed(request)))


async def check_csrf(request: web.Request) -> Mapping[str, Any]:
    """Read the form and refuse it unless its CSRF token (form field or header) matches."""
    form: Mapping[str, Any] = await read_form(request)
    sent = request.headers.get("X-CSRF-Token") or str(form.get("csrf_token", ""))
    seed = passes.cookie(request.app[SETTINGS_KEY], request.cookies, CSRF_COOKIE) or ""
    expected = _expected_csrf(request, seed) if seed else ""
    if not seed or not sent or not constant_time_equal(unmask_csrf(sent), expected):
        raise web.HTTPForbidden(
            text=_("Le formulaire a expiré. Revenez en arrière, rechargez la page et réessayez."),
            content_type="text/plain",
        )
    return form


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    max_age: int | None,
) -> None:
    """HttpOnly, SameSite=Lax, Path=/; under https Secure and named ``__Host-<name>`` (no
    subdomain or plain-http page can set or shadow it)."""
    response.set_cookie(
        passes.cookie_name(request.app[SETTINGS_KEY], name),
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.app[SETTINGS_KEY].secure_cookies,
    )


def delete_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    """Clear a cookie set by ``set_cookie``."""
    settings = request.app[SETTINGS_KEY]
    response.del_cookie(
        passes.cookie_name(settings, name), path="/", secure=settings.secure_cookies
    )


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """Render a page with the common context (user, CSRF token)."""
    base = {"user": current_user(request), "csrf_token": csrf_for(request)}
    base.update(template_context(request))
    base.update(context)
    return aiohttp_jinja2.render_template(template, request, base, status=status)


def login_required(*roles: Role) -> Callable[[Handler], Handler]:
    """Views for logged-in accounts (of one of ``roles`` if given); anonymous visitors go to
    the login page, other roles get a French 403."""

    def decorator(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            user = current_user(request)
            if user is None:
                raise see_other(request, "login", {"next": request.path})
            if roles and user.role not in roles:
                raise web.HTTPForbidden(
                    text=_("Cette page n'est pas accessible avec votre compte."),
                    content_type="text/plain",
                )
            return await handler(request)

        return wrapper

    return decorator


def beneficiary_session_id(request: web.Request) -> str | None:
    """The session id of the beneficiary pass this browser holds, if valid."""
    return passes.beneficiary_session_id(request.app[SETTINGS_KEY], request.cookies)


def local_path(value: str | None) -> str | None:
    """``value`` if it is a plain local path (a safe place to go after logging in), else None."""
    if (
        value
        and value.startswith("/")
        and value[1:2] not in ("/", "\\")
        and "\\" not in value
        and value.isprintable()
        and not any(ch.isspace() for ch in value)
        and "%" not in value[:3]
    ):
        return value
    return None


def after_login(request: web.Request, wanted: str | None, role: Role | None = None) -> str:
    """Where to go after logging in: the page asked for if it is local, else the role's home
    (no open redirect)."""
    return local_path(wanted) or url_for(
        request, "my-bookings" if role is Role.REFERRER else "dashboard"
    )
