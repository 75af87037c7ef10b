"""Login, logout and invitation acceptance for volunteers and coordinators."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from server import accounts, links, ratelimit
from server.i18n import _
from server.metrics import LOGIN_FAILURES, LOGINS_BUSY, RATE_LIMITED
from server.passes import LOGIN_COOKIE
from server.ratelimit import RATELIMIT_KEY
from server.runtime import PASSWORDS_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.web.request import (
    LOGIN_TOKEN_KEY,
    after_login,
    check_csrf,
    client_key,
    current_user,
    delete_cookie,
    local_path,
    login_required,
    render,
    required_user,
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


LOGIN_BUSY_RETRY_SECONDS = 5


async def _login_locked(request: web.Request, account: str, client: str) -> int | None:
    """Count this attempt against the client and the account-from-this-client failure tiers
    (a success forgets the latter); the seconds to wait if a limit is reached, else None."""
    limiter = request.app[RATELIMIT_KEY]
    if not await limiter.hit(ratelimit.LOGIN_PER_IP, client):
        return await limiter.retry_after(ratelimit.LOGIN_PER_IP, client)
    checks: list[tuple[ratelimit.Rule, tuple[str, ...]]] = [
        (rule, (client,)) for rule in ratelimit.LOGIN_FAILURES_PER_IP
    ]
    checks += [(rule, (account, client)) for rule in ratelimit.LOGIN_FAILURES_PER_ACCOUNT]
    for rule, identifiers in checks:
        if not await limiter.allowed(rule, *identifiers):
            RATE_LIMITED.labels(rule.name).inc()
            return await limiter.retry_after(rule, *identifiers)
    # Counted now as a failure, forgotten on success: concurrent guesses cannot pass together.
    for rule in ratelimit.LOGIN_FAILURES_PER_ACCOUNT:
        if not await limiter.hit(rule, account, client):
            return await limiter.retry_after(rule, account, client)
    return None


async def _login_failed(request: web.Request, client: str) -> None:
    """A wrong e-mail or password: counted against the client across accounts."""
    LOGIN_FAILURES.inc()
    limiter = request.app[RATELIMIT_KEY]
    for rule in ratelimit.LOGIN_FAILURES_PER_IP:
        await limiter.hit(rule, client)


async def _login_succeeded(request: web.Request, account: str, client: str) -> None:
    limiter = request.app[RATELIMIT_KEY]
    for rule in ratelimit.LOGIN_FAILURES_PER_ACCOUNT:
        await limiter.forget(rule, account, client)


def _login_refused(
    request: web.Request, message: str, next_url: str, status: int, retry_after: int
) -> web.Response:
    response = render(request, "auth/login.html", {"error": message, "next": next_url}, status)
    response.headers["Retry-After"] = str(retry_after)
    return response


@routes.post(links.LOGIN.path, name="login-submit")
async def login(request: web.Request) -> web.StreamResponse:
    """Check credentials under rate limits (failures only lock, per account and client), off
    the event loop, open a login session, set the cookie."""
    form = await check_csrf(request)
    email = str(form.get("email", ""))[:254]
    password = str(form.get("password", ""))[:1024]
    next_url = local_path(str(form.get("next", ""))[:500]) or ""
    client, account = client_key(request), accounts.account_email(email)
    wait = await _login_locked(request, account, client)
    if wait is not None:
        minutes = max(1, -(-wait // 60))
        message = _("Trop d'essais. Attendez %(n)d min puis réessayez.") % {"n": minutes}
        return _login_refused(request, message, next_url, 429, wait)
    settings = request.app[SETTINGS_KEY]
    passwords = request.app[PASSWORDS_KEY]
    with passwords.login_slot() as free:
        if not free:
            LOGINS_BUSY.inc()
            message = _("Beaucoup de connexions en ce moment. Réessayez dans quelques secondes.")
            return _login_refused(request, message, next_url, 503, LOGIN_BUSY_RETRY_SECONDS)
        found = await accounts.log_in(
            request.app[SESSIONMAKER_KEY],
            passwords,
            email,
            password,
            timedelta(hours=settings.login_ttl_hours),
        )
    if found is None:
        await _login_failed(request, client)
        context = {
            "error": _("Adresse e-mail ou mot de passe incorrect."),
            "email": email,
            "next": next_url,
        }
        return render(request, "auth/login.html", context, status=401)
    await _login_succeeded(request, account, client)
    user, token = found
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


@routes.get("/mot-de-passe", name="password")
@login_required()
async def password_page(request: web.Request) -> web.StreamResponse:
    """The form to change one's own password."""
    return render(request, "auth/password.html", {})


@routes.post("/mot-de-passe", name="password-change")
@login_required()
async def change_password(request: web.Request) -> web.StreamResponse:
    """Check the current password (under the login limits, off the event loop), set the new
    one: every login session of the account ends, this browser gets a new one."""
    form = await check_csrf(request)
    current = str(form.get("current", ""))[:1024]
    new = str(form.get("password", ""))[:1024]
    confirm = str(form.get("password_confirm", ""))[:1024]
    user = required_user(request)
    client = client_key(request)

    def again(error: str, status: int) -> web.Response:
        return render(request, "auth/password.html", {"error": error}, status)

    wait = await _login_locked(request, user.email, client)
    if wait is not None:
        minutes = max(1, -(-wait // 60))
        response = again(
            _("Trop d'essais. Attendez %(n)d min puis réessayez.") % {"n": minutes}, 429
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if new != confirm:
        return again(_("Les deux mots de passe ne sont pas identiques."), 400)
    passwords = request.app[PASSWORDS_KEY]
    seen = user.password_hash or ""
    with passwords.login_slot() as free:
        if not free:
            LOGINS_BUSY.inc()
            response = again(
                _("Beaucoup de connexions en ce moment. Réessayez dans quelques secondes."), 503
            )
            response.headers["Retry-After"] = str(LOGIN_BUSY_RETRY_SECONDS)
            return response
        if not seen or not await passwords.verify(seen, current):
            await _login_failed(request, client)
            return again(_("Le mot de passe actuel n'est pas le bon."), 400)
        await _login_succeeded(request, user.email, client)
        try:
            new_password = await passwords.new_password(new)
        except accounts.AccountError as exc:
            return again(exc.message, 400)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        token = await accounts.change_password(
            db, user.id, seen, new_password, timedelta(hours=settings.login_ttl_hours)
        )
    if token is None:  # changed meanwhile (another browser, a coordinator): log in again
        response = see_other(request, "login")
        response.del_cookie(LOGIN_COOKIE, path="/")
        raise response
    response = render(request, "auth/password.html", {"done": True})
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=settings.login_ttl_hours * 3600)
    return response


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
            # Hashed before the transaction: no connection waits for a hashing thread.
            new_password = await request.app[PASSWORDS_KEY].new_password(password)
            async with request.app[SESSIONMAKER_KEY].begin() as db:
                await accounts.accept_invitation(db, token, new_password)
        except accounts.AccountError as exc:
            error = str(exc)
    if error:
        return render(
            request, "auth/invitation.html", {"invited": found[1], "error": error}, status=400
        )
    raise see_other(request, "login", {"invitation": "ok"})
