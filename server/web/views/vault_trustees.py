"""The personne de confiance (server/vault/trustees.py) over HTTP.

Person's side, under ``/coffre/api/`` (server/vault/DESIGN.md): naming a trustee and revoking
one need the vault's ``Authorization: Vault`` capability; a new device's recovery request and
its polling need none (the poll token proves the device). Staff side: the trustee page
``/coffre/confiance`` and its JSON actions (login and CSRF token, like every staff page).

Every answer is JSON ``{"error": {"code", "message", "field"}}`` on a refusal, and
``Cache-Control: no-store``. Code lookups are rate limited per client and per vault (trustee
codes) or per account (pairing codes), so that nobody can enumerate them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from aiohttp import web
from limits import parse

from server import links
from server.errors import DomainError, Kind
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Vault, utcnow
from server.vault import trustees
from server.web.middlewares import status_of
from server.web.request import (
    check_csrf,
    client_key,
    login_required,
    render,
    required_user,
    url_for,
)
from server.web.views.vault import json_body, request_vault, too_many

routes = web.RouteTableDef()

API = "/coffre/api"
STAFF_PAGE = links.TRUSTEE.path

# Trustee codes (40 bits): typed once or twice by a person; a stranger guessing codes gets a
# few tries per hour from one client and one vault.
TRUSTEE_CODE_PER_CLIENT = Rule("vault-trustee-code-ip", parse("20/hour"))
TRUSTEE_CODE_PER_VAULT = Rule("vault-trustee-code-vault", parse("30/day"))
# A new device asks for help: a few requests per client (each holds a pairing code).
RECOVERY_REQUESTS_PER_CLIENT = Rule("vault-recovery-request-ip", parse("10/hour"))
# The device polls every few seconds while it waits (15 minutes).
RECOVERY_POLLS_PER_CLIENT = Rule("vault-recovery-poll-ip", parse("120/minute"), exact=False)
# Pairing codes (6 digits) typed by a trustee: a handful a day is the real use.
PAIRING_PER_ACCOUNT = Rule("vault-pairing-account", parse("10/10 minutes"))
PAIRING_PER_ACCOUNT_DAILY = Rule("vault-pairing-account-day", parse("60/day"))
TRUSTEE_CODES_MADE_PER_ACCOUNT = Rule("vault-trustee-codes-made", parse("60/hour"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: DomainError) -> web.Response:
    response = web.json_response({"error": exc.as_json()}, status=status_of(exc))
    response.headers["Cache-Control"] = "no-store"
    if exc.kind is Kind.RATE_LIMITED:
        response.headers["Retry-After"] = "60"
    return response


def json_api(handler: Handler) -> Handler:
    """A JSON endpoint: a domain refusal becomes ``{"error": …}`` with the status of its kind,
    and nothing is ever cached."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except DomainError as exc:
            return _error(exc)
        response.headers["Cache-Control"] = "no-store"
        return response

    return wrapper


async def _limit(request: web.Request, rule: Rule, *identifiers: str) -> None:
    if not await request.app[RATELIMIT_KEY].hit(rule, *identifiers):
        raise too_many()


async def _code_lookup_allowed(request: web.Request, vault: Vault) -> None:
    await _limit(request, TRUSTEE_CODE_PER_CLIENT, client_key(request))
    await _limit(request, TRUSTEE_CODE_PER_VAULT, vault.id)


# -- The person's side --------------------------------------------------------------------------


@routes.get(API + "/trustee-key", name="vault-trustee-key")
@json_api
async def trustee_key(request: web.Request) -> web.StreamResponse:
    """Whom a trustee code names, with their public key, before the person confirms."""
    settings = request.app[SETTINGS_KEY]
    vault = await request_vault(request)
    await _code_lookup_allowed(request, vault)
    async with request.app[SESSIONMAKER_KEY]() as db:
        info = await trustees.trustee_for_code(db, settings, request.query.get("code"), utcnow())
    return web.json_response(info.as_json())


@routes.post(API + "/trustees", name="vault-trustees")
@json_api
async def add_trustee(request: web.Request) -> web.StreamResponse:
    """Name a trustee: the vault key and a label, both encrypted for the trustee's key."""
    settings = request.app[SETTINGS_KEY]
    body = await json_body(request)
    vault = await request_vault(request)
    await _code_lookup_allowed(request, vault)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        grant = await trustees.add_grant(
            db,
            settings,
            vault,
            body.get("trustee_code"),
            body.get("wrapped_key"),
            body.get("label"),
            utcnow(),
        )
        views = await trustees.grants_of(db, vault)
    shown = next(v for v in views if v.grant.id == grant.id)
    return web.json_response({"trustee": shown.as_json()}, status=201)


@routes.delete(API + "/trustees/{grant_id}", name="vault-trustee")
@json_api
async def revoke_trustee(request: web.Request) -> web.StreamResponse:
    """Revoke a trustee: the key wrapped for them is erased; the history keeps the event."""
    vault = await request_vault(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        await trustees.revoke_grant(db, vault, request.match_info["grant_id"][:36], utcnow())
    return web.Response(status=204)


@routes.post(API + "/recovery-requests", name="vault-recovery-requests")
@json_api
async def create_recovery_request(request: web.Request) -> web.StreamResponse:
    """A new device asks its trustee for the vault key (no vault capability: it has none)."""
    settings = request.app[SETTINGS_KEY]
    await _limit(request, RECOVERY_REQUESTS_PER_CLIENT, client_key(request))
    body = await json_body(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        made = await trustees.create_request(db, settings, body.get("public_key"), utcnow())
    return web.json_response(made.as_json(), status=201)


@routes.get(API + "/recovery-requests/{request_id}", name="vault-recovery-request")
@json_api
async def poll_recovery_request(request: web.Request) -> web.StreamResponse:
    """The device waits for its trustee: pending, or the wrapped key once (then gone)."""
    await _limit(request, RECOVERY_POLLS_PER_CLIENT, client_key(request))
    token = trustees.poll_token_from_header(request.headers.get("Authorization"))
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        poll = await trustees.poll_request(
            db, request.match_info["request_id"][:36], token, utcnow()
        )
    return web.json_response(poll.as_json())


# -- The trustee's side (staff) -----------------------------------------------------------------


@routes.get(STAFF_PAGE, name=links.TRUSTEE.name)
@login_required()
async def trustee_page(request: web.Request) -> web.StreamResponse:
    """The personne de confiance page: a key on this device, codes to give, requests."""
    user = required_user(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY]() as db:
        key = await trustees.current_key(db, user)
        grants = await trustees.grants_for_key(db, key) if key else []
    config = {
        "user_id": user.id,
        "fingerprint": key.fingerprint if key else None,
        "key_created_at": key.created_at.isoformat() if key else None,
        "grants": len(grants),
        "code_minutes": settings.vault_trustee_code_minutes,
        "urls": {
            "key": url_for(request, "vault-trustee-key-register"),
            "code": url_for(request, "vault-trustee-code"),
            "pairing": url_for(request, "vault-trustee-pairing", pairing_code="CODE"),
            "open": url_for(request, "vault-trustee-open", request_id="REQUEST"),
            "answer": url_for(request, "vault-trustee-answer", request_id="REQUEST"),
        },
    }
    context = {"key": key, "grant_count": len(grants), "config": config}
    return render(request, "vault/trustee.html", context)


@routes.post(STAFF_PAGE + "/cle", name="vault-trustee-key-register")
@login_required()
@json_api
async def register_key(request: web.Request) -> web.StreamResponse:
    """Register this account's public key (made in this browser); replaces an older one."""
    await check_csrf(request)
    body = await json_body(request)
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        key = await trustees.register_key(db, user, body.get("public_key"), utcnow())
    return web.json_response(
        {"fingerprint": key.fingerprint, "created_at": key.created_at.isoformat()}
    )


@routes.post(STAFF_PAGE + "/code", name="vault-trustee-code")
@login_required()
@json_api
async def make_code(request: web.Request) -> web.StreamResponse:
    """A fresh code to give to a person so that they can name this account."""
    await check_csrf(request)
    user = required_user(request)
    await _limit(request, TRUSTEE_CODES_MADE_PER_ACCOUNT, str(user.id))
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        code, expires_at = await trustees.make_code(db, request.app[SETTINGS_KEY], user, utcnow())
    return web.json_response(
        {
            "code": trustees.grouped_trustee_code(code),
            "expires_at": expires_at.isoformat(),
        },
        status=201,
    )


@routes.get(STAFF_PAGE + "/demandes/{pairing_code}", name="vault-trustee-pairing")
@login_required()
@json_api
async def pairing(request: web.Request) -> web.StreamResponse:
    """The request of a pairing code, with this account's grants to pick the person from."""
    user = required_user(request)
    await _limit(request, PAIRING_PER_ACCOUNT, str(user.id))
    await _limit(request, PAIRING_PER_ACCOUNT_DAILY, str(user.id))
    async with request.app[SESSIONMAKER_KEY]() as db:
        found, grants = await trustees.request_for_pairing(
            db, request.app[SETTINGS_KEY], user, request.match_info["pairing_code"], utcnow()
        )
    return web.json_response(
        {"request": trustees.request_json(found), "grants": [g.as_json() for g in grants]}
    )


@routes.post(STAFF_PAGE + "/demandes/{request_id}/personne", name="vault-trustee-open")
@login_required()
@json_api
async def open_grant(request: web.Request) -> web.StreamResponse:
    """The trustee picked the person: the vault key wrapped for them (decrypted in this
    browser). Recorded on the person's vault before the key leaves the server."""
    await check_csrf(request)
    body = await json_body(request)
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        wrapped = await trustees.open_grant(
            db, user, request.match_info["request_id"][:36], body.get("grant_id"), utcnow()
        )
    return web.json_response({"wrapped_key": wrapped})


@routes.post(STAFF_PAGE + "/demandes/{request_id}", name="vault-trustee-answer")
@login_required()
@json_api
async def answer(request: web.Request) -> web.StreamResponse:
    """Answer a request with one of this account's grants (the key re-encrypted for the
    device in this browser); the person's history shows it."""
    await check_csrf(request)
    body = await json_body(request)
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        await trustees.answer_request(
            db,
            user,
            request.match_info["request_id"][:36],
            body.get("grant_id"),
            body.get("wrapped_key"),
            utcnow(),
        )
    return web.json_response({"ok": True})
