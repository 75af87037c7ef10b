"""Login, logout and invitation acceptance for volunteers and coordinators."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from server import accounts, links, ratelimit
from server.i18n import _
from server.passes import LOGIN_COOKIE
from server.ratelimit import RATELIMIT_KEY
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.web.request import (
    LOGIN_TOKEN_KEY,
    after_login,
    check_csrf,
    client_key,
    current_user,
    delete_cookie,
    local_path,
    render,
    rotate_csrf,
    see_other,
    set_cookie,
)

routes = web.RouteTableDef()


@routes.get(links.LOGIN.path, name=links.LOGIN.name)
async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form (already logged in: straight to the dashboard)."""
    user = current_user(request)
    if user is not None:
        raise web.HTTPSeeOther(location=after_login(request, request.query.get("next"), user.role))
    return render(request, "auth/login.html", {"next": local_path(request.query.get("next")) or ""})


@routes.post(links.LOGIN.path, name="login-submit")
async def login(request: web.Request) -> web.StreamResponse:
    """Check credentials under rate limits, open a login session, set the cookie."""
    form = await check_csrf(request)
    email = str(form.get("email", ""))[:254]
    password = str(form.get("password", ""))[:1024]
    next_url = local_path(str(form.get("next", ""))[:500]) or ""
    limiter = request.app[RATELIMIT_KEY]
    ip = client_key(request)
    if not await limiter.hit(ratelimit.LOGIN_PER_IP, ip) or not await limiter.hit(
        ratelimit.LOGIN_PER_ACCOUNT, accounts.account_email(email)
    ):
        context = {
            "error": _("Trop d'essais. Attendez une minute puis réessayez."),
            "next": next_url,
        }
        response = render(request, "auth/login.html", context, status=429)
        response.headers["Retry-After"] = "60"
        return response
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        user = await accounts.authenticate(db, email, password)
        token = (
            await accounts.open_login_session(db, user, timedelta(hours=settings.login_ttl_hours))
            if user is not None
            else None
        )
    if token is None:
        context = {
            "error": _("Adresse e-mail ou mot de passe incorrect."),
            "email": email,
            "next": next_url,
        }
        return render(request, "auth/login.html", context, status=401)
    assert user is not None
    response = web.HTTPSeeOther(location=after_login(request, next_url, user.role))
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=settings.login_ttl_hours * 3600)
    rotate_csrf(request, response)
    raise response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """Close the login session and clear the cookie."""
    await check_csrf(request)
    token = request.get(LOGIN_TOKEN_KEY)
    if token:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await accounts.close_login_session(db, token)
    response = see_other(request, "login")
    delete_cookie(request, response, LOGIN_COOKIE)
    raise response


def _invitation_gone(request: web.Request) -> web.Response:
    """The same page for an unknown, used or expired invitation."""
    message = _("Ce lien d'invitation n'est plus valable.")
    return render(request, "errors/error.html", {"status": 404, "message": message}, status=404)


@routes.get(links.INVITATION.path, name=links.INVITATION.name)
async def invitation_page(request: web.Request) -> web.StreamResponse:
    """An invited volunteer chooses a password."""
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await accounts.pending_invitation(db, request.match_info["token"])
    if found is None:
        return _invitation_gone(request)
    return render(request, "auth/invitation.html", {"invited": found[1]})


@routes.post(links.INVITATION.path, name="invitation-accept")
async def accept_invitation(request: web.Request) -> web.StreamResponse:
    """Set the password, then go to the login page."""
    form = await check_csrf(request)
    password = str(form.get("password", ""))
    confirm = str(form.get("password_confirm", ""))
    token = request.match_info["token"]
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await accounts.pending_invitation(db, token)
    if found is None:
        return _invitation_gone(request)
    error = None
    if password != confirm:
        error = _("Les deux mots de passe ne sont pas identiques.")
    else:
        try:
            async with request.app[SESSIONMAKER_KEY].begin() as db:
                await accounts.accept_invitation(db, token, password)
        except accounts.AccountError as exc:
            error = str(exc)
    if error:
        return render(
            request, "auth/invitation.html", {"invited": found[1], "error": error}, status=400
        )
    raise see_other(request, "login", {"invitation": "ok"})
