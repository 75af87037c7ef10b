"""The referrer's page of API tokens (/mes-jetons): create one (shown once), revoke one."""

from __future__ import annotations

from aiohttp import web

from server import api_tokens
from server.runtime import SESSIONMAKER_KEY
from server.store.models import Role
from server.web.middlewares import status_of
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()


async def _tokens_page(
    request: web.Request, status: int = 200, **extra: object
) -> web.StreamResponse:
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        tokens = await api_tokens.list_tokens(db, user)
    context = {"tokens": tokens, "scopes": api_tokens.SCOPES, **extra}
    return render(request, "api/tokens.html", context, status)


@routes.get("/mes-jetons", name="api-tokens")
@login_required(Role.REFERRER)
async def tokens_page(request: web.Request) -> web.StreamResponse:
    """A referrer's API tokens."""
    return await _tokens_page(request)


@routes.post("/mes-jetons", name="api-tokens-create")
@login_required(Role.REFERRER)
async def create_token(request: web.Request) -> web.StreamResponse:
    """Create a token and show it once."""
    form = await check_csrf(request)
    user = required_user(request)
    scopes = [str(s) for s in form.getall("scopes", [])] if hasattr(form, "getall") else []
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            _token, raw = await api_tokens.create_token(
                db, user, str(form.get("name", ""))[:200], scopes
            )
    except api_tokens.ApiTokenError as exc:
        return await _tokens_page(request, status_of(exc), error=exc.message)
    return await _tokens_page(request, new_token=raw)


@routes.post("/mes-jetons/{token_id:[0-9]{1,9}}/revoquer", name="api-tokens-revoke")
@login_required(Role.REFERRER)
async def revoke_token(request: web.Request) -> web.StreamResponse:
    """Revoke one of one's tokens."""
    await check_csrf(request)
    user = required_user(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        if not await api_tokens.revoke(db, user, int(request.match_info["token_id"])):
            raise web.HTTPNotFound()
    raise see_other(request, "api-tokens")
