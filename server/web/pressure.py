"""The public forms under pressure: while a family's global budget is spent
(``RateLimiter.under_pressure``), its form carries a proof-of-work challenge and its handler
accepts a submission only with a fresh solution (server/pow.py). The handlers spend the budget
on each action they carry out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from server import fair_use, pow
from server.errors import DomainError
from server.metrics import CLIENT_CAP_REFUSED, POW_CHECKED
from server.ratelimit import RATELIMIT_KEY, Family
from server.runtime import SETTINGS_KEY
from server.store.models import utcnow


async def challenge_for(request: web.Request, family: Family) -> dict[str, Any] | None:
    """The challenge the form must carry now, or None while the family's budget lasts."""
    if not await request.app[RATELIMIT_KEY].under_pressure(family):
        return None
    return pow.new_challenge(request.app[SETTINGS_KEY], utcnow())


async def check_form(
    request: web.Request, db: AsyncSession, family: Family, form: Mapping[str, Any]
) -> None:
    """Under pressure, accept the form's proof of work once (in ``db``'s transaction), else
    raise ``pow.ProofOfWorkError``; while the budget lasts, do nothing."""
    if not await request.app[RATELIMIT_KEY].under_pressure(family):
        return
    try:
        await pow.check(db, request.app[SETTINGS_KEY], form.get(pow.FIELD), utcnow())
    except pow.ProofOfWorkError as exc:
        POW_CHECKED.labels(family, exc.code).inc()
        raise
    POW_CHECKED.labels(family, "ok").inc()


def count_refusal(exc: DomainError) -> None:
    """Count a refusal of a client cap (``permanence_client_cap_refused``), if it is one."""
    if isinstance(exc, fair_use.TooMany) or exc.code == "too_many_places":
        CLIENT_CAP_REFUSED.labels(exc.code).inc()


async def spend(request: web.Request, family: Family) -> None:
    """Count one action carried out against the family's global budget."""
    await request.app[RATELIMIT_KEY].spend(family)
