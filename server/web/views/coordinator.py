"""Coordinator pages: list (with the languages each speaks), invite, deactivate and reactivate
volunteers, change their role."""

from __future__ import annotations

from aiohttp import web

from server import accounts, assist, links
from server.i18n import _
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Role
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()


async def _page(request: web.Request, status: int = 200, **extra: object) -> web.StreamResponse:
    coordinator = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        members = await accounts.list_members(db, coordinator.association_id)
        spoken = await accounts.languages_by_user(db, [member.id for member in members])
    languages = {
        member_id: [accounts.language_name(code) for code in codes]
        for member_id, codes in spoken.items()
    }
    context = {"members": members, "languages": languages, **extra}
    return render(request, "coordinator/volunteers.html", context, status)


@routes.get("/benevoles", name="volunteers")
@login_required(Role.COORDINATOR)
async def volunteers(request: web.Request) -> web.StreamResponse:
    """The association's accounts."""
    return await _page(request)


@routes.post("/benevoles", name="volunteers-invite")
@login_required(Role.COORDINATOR)
async def invite(request: web.Request) -> web.StreamResponse:
    """Create a volunteer account and show the one-time invitation link to send them."""
    form = await check_csrf(request)
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            invitation = await accounts.invite_volunteer(
                db,
                required_user(request),
                email=str(form.get("email", ""))[:300],
                name=str(form.get("name", ""))[:200],
            )
    except accounts.AccountError as exc:
        return await _page(request, 400, error=str(exc), form=dict(form))
    link = links.INVITATION.url(request.app[SETTINGS_KEY], token=invitation.token)
    return await _page(request, invitation_link=link, invited=invitation.user)


async def _set_active(request: web.Request, active: bool) -> web.StreamResponse:
    await check_csrf(request)
    user_id = int(request.match_info["user_id"])
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        coordinator = required_user(request)
        if active:
            changed = await accounts.reactivate(db, coordinator, user_id)
        else:
            changed = await accounts.deactivate(db, coordinator, user_id)
            if changed is not None:
                # Its sockets close after commit (AccountRevoked); the sessions it ran end too.
                await assist.withdraw_user(db, changed.id)
    if changed is None:
        raise web.HTTPNotFound(
            text=_("Ce compte n'existe pas dans votre association."), content_type="text/plain"
        )
    raise see_other(request, "volunteers")


@routes.post("/benevoles/{user_id:[0-9]{1,9}}/desactiver", name="volunteers-deactivate")
@login_required(Role.COORDINATOR)
async def deactivate(request: web.Request) -> web.StreamResponse:
    """Deactivate an account: it can no longer log in; its sessions are closed."""
    return await _set_active(request, False)


@routes.post("/benevoles/{user_id:[0-9]{1,9}}/reactiver", name="volunteers-reactivate")
@login_required(Role.COORDINATOR)
async def reactivate(request: web.Request) -> web.StreamResponse:
    """Give a deactivated account its access back."""
    return await _set_active(request, True)


@routes.post("/benevoles/{user_id:[0-9]{1,9}}/role", name="volunteers-role")
@login_required(Role.COORDINATOR)
async def change_role(request: web.Request) -> web.StreamResponse:
    """Make a member a volunteer or a coordinator; they log in again under the new role."""
    form = await check_csrf(request)
    user_id = int(request.match_info["user_id"])
    try:
        role = Role(str(form.get("role", ""))[:20])
    except ValueError:
        return await _page(request, 400, error=_("Ce rôle n'existe pas."))
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            changed = await accounts.set_role(db, required_user(request), user_id, role)
    except accounts.AccountError as exc:
        return await _page(request, 400, error=str(exc))
    if changed is None:
        raise web.HTTPNotFound(
            text=_("Ce compte n'existe pas dans votre association."), content_type="text/plain"
        )
    raise see_other(request, "volunteers")
