"""Coordinator page: the association's notifications that could not be sent, and retrying one."""

from __future__ import annotations

from aiohttp import web

from server.i18n import _
from server.notify import failures
from server.runtime import SESSIONMAKER_KEY
from server.store.models import Role, utcnow
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()


@routes.get("/envois-en-echec", name="failed-notifications")
@login_required(Role.COORDINATOR)
async def failed_notifications(request: web.Request) -> web.StreamResponse:
    """E-mails and SMS of the association given up after their last attempt, recipient masked."""
    coordinator = required_user(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        notices = await failures.list_failed(db, coordinator.association_id)
    context = {
        "notices": notices,
        "limit": failures.LIST_LIMIT,
        "retried": request.query.get("renvoi") == "1",
    }
    return render(request, "coordinator/failed_notifications.html", context)


@routes.post("/envois-en-echec/{message_id:[0-9]{1,9}}/renvoyer", name="failed-notifications-retry")
@login_required(Role.COORDINATOR)
async def retry(request: web.Request) -> web.StreamResponse:
    """Hand a failed message back to the worker, which sends it again at once."""
    await check_csrf(request)
    message_id = int(request.match_info["message_id"])
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        retried = await failures.retry(
            db, required_user(request).association_id, message_id, utcnow()
        )
    if not retried:
        raise web.HTTPNotFound(
            text=_("Ce message n'existe pas dans votre association, ou il est déjà reparti."),
            content_type="text/plain",
        )
    raise see_other(request, "failed-notifications", {"renvoi": "1"})
