"""The coordinator's motifs: why people book and how long each visit lasts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from server import motifs
from server.errors import Kind
from server.i18n import _
from server.integers import parse_int
from server.motifs import MotifError
from server.runtime import SESSIONMAKER_KEY
from server.store.models import Role
from server.web.forms import form_text
from server.web.middlewares import status_of
from server.web.request import check_csrf, login_required, render, required_user, see_other

routes = web.RouteTableDef()


async def _motifs_page(request: web.Request, status: int = 200, **extra: Any) -> web.StreamResponse:
    association_id = required_user(request).association_id
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        # A new association starts from the default list rather than from an empty page.
        rows = await motifs.ensure_default_motifs(db, association_id)
    context: dict[str, Any] = {
        "motifs": rows,
        "min_minutes": motifs.MIN_MINUTES,
        "max_minutes": motifs.MAX_MINUTES,
        "step_minutes": motifs.STEP_MINUTES,
        "form": {},
        "error": None,
        "edit_error": None,
        "edited_id": None,
    }
    context.update(extra)
    return render(request, "motifs/motifs.html", context, status)


def _minutes(form: Mapping[str, Any], name: str) -> int:
    raw = form_text(form, name, 6).strip()
    # Anything that is not a whole number gets validate_minutes' sentence (range and step).
    minutes = parse_int(raw)
    return -1 if minutes is None else minutes


def _motif_not_found() -> MotifError:
    return MotifError("not_found", _("Ce motif n'existe pas."), kind=Kind.NOT_FOUND)


def _to_list(request: web.Request) -> web.HTTPSeeOther:
    return see_other(request, "motifs")


@routes.get("/motifs", name="motifs")
@login_required(Role.COORDINATOR)
async def motifs_page(request: web.Request) -> web.StreamResponse:
    """The association's motifs with their visit lengths, and the forms to change them."""
    return await _motifs_page(request)


@routes.post("/motifs", name="motifs-create")
@login_required(Role.COORDINATOR)
async def motif_create(request: web.Request) -> web.StreamResponse:
    """Add a motif at the end of the list."""
    form = await check_csrf(request)
    fields = {name: form_text(form, name, 400) for name in form if name != "csrf_token"}
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await motifs.create_motif(
                db,
                required_user(request).association_id,
                name=form_text(form, "name", 200),
                description=form_text(form, "description", 400),
                first_visit_minutes=_minutes(form, "first_visit_minutes"),
                follow_up_minutes=_minutes(form, "follow_up_minutes"),
            )
    except MotifError as exc:
        return await _motifs_page(request, status_of(exc), form=fields, error=exc.message)
    raise _to_list(request)


@routes.post("/motifs/{motif_id:[0-9]{1,9}}", name="motifs-update")
@login_required(Role.COORDINATOR)
async def motif_update(request: web.Request) -> web.StreamResponse:
    """Change a motif's name, description and visit lengths."""
    form = await check_csrf(request)
    motif_id = int(request.match_info["motif_id"])
    try:
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            motif = await motifs.update_motif(
                db,
                required_user(request).association_id,
                motif_id,
                name=form_text(form, "name", 200),
                description=form_text(form, "description", 400),
                first_visit_minutes=_minutes(form, "first_visit_minutes"),
                follow_up_minutes=_minutes(form, "follow_up_minutes"),
            )
    except MotifError as exc:
        return await _motifs_page(
            request, status_of(exc), edit_error=exc.message, edited_id=motif_id
        )
    if motif is None:
        raise _motif_not_found()
    raise _to_list(request)


async def _set_motif_active(request: web.Request, active: bool) -> web.StreamResponse:
    await check_csrf(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        changed = await motifs.set_motif_active(
            db, required_user(request).association_id, int(request.match_info["motif_id"]), active
        )
    if not changed:
        raise _motif_not_found()
    raise _to_list(request)


@routes.post("/motifs/{motif_id:[0-9]{1,9}}/desactiver", name="motifs-deactivate")
@login_required(Role.COORDINATOR)
async def motif_deactivate(request: web.Request) -> web.StreamResponse:
    """Stop offering a motif for booking; its appointments stay."""
    return await _set_motif_active(request, False)


@routes.post("/motifs/{motif_id:[0-9]{1,9}}/reactiver", name="motifs-reactivate")
@login_required(Role.COORDINATOR)
async def motif_reactivate(request: web.Request) -> web.StreamResponse:
    """Offer a motif for booking again."""
    return await _set_motif_active(request, True)
