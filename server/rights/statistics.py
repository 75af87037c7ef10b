"""What a settled rights check leaves in the statistics: coded facts only.

One ``rights_checked`` event per check and one ``rights_unclaimed`` event per benefit found
probably due and not already received (``server/stats/events.py`` describes both). The events
carry the association, the channel of the session, the département of the commune checked, the
benefit's code and the band of its estimated monthly amount: no session id, no amount, no free
text, nothing that leads back to the person. ``server/rights/figures.py`` turns them into the
published figures of /stats, its CSV files and the API.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from server import geo
from server.rights.benefits import AMOUNT_BANDS, BENEFITS
from server.stats.events import UNKNOWN_DEPARTEMENT, EventKind, record
from server.stats.rollups import CHANNELS, CHECK_FOUND, CHECK_NONE

BAND_CODES = frozenset(code for code, _low, _high in AMOUNT_BANDS)


@functools.cache
def _departement_codes() -> frozenset[str]:
    return frozenset({d.code for d in geo.departements()} | {UNKNOWN_DEPARTEMENT})


def validate_check(
    *,
    association_id: int,
    departement: str | None,
    channel: str | None,
    unclaimed: Sequence[tuple[str, str | None]],
) -> None:
    """ValueError (a precise English message: a programming error, never a user's input)
    unless every fact is a known code."""
    if not isinstance(association_id, int) or isinstance(association_id, bool):
        raise ValueError(f"association_id must be an int, got {association_id!r}")
    if departement is not None and departement not in _departement_codes():
        raise ValueError(
            f"departement must be an INSEE département code (or {UNKNOWN_DEPARTEMENT!r} for a"
            f" commune that cannot be placed), got {departement!r}"
        )
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel must be one of {sorted(CHANNELS)} or None, got {channel!r}")
    seen: set[str] = set()
    for item in unclaimed:
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
            raise ValueError(f"each unclaimed benefit is (code, band), got {item!r}")
        code, band = item
        benefit = BENEFITS.get(code) if isinstance(code, str) else None
        if benefit is None:
            raise ValueError(f"unknown benefit code {code!r} (server/rights/benefits.py)")
        if code in seen:
            raise ValueError(f"benefit {code!r} given twice for one check")
        seen.add(code)
        if band is not None and band not in BAND_CODES:
            raise ValueError(f"unknown amount band {band!r} for {code!r}: one of AMOUNT_BANDS")
        if band is not None and benefit.boolean:
            raise ValueError(f"{code!r} has no amount: its band must be None, got {band!r}")


async def record_check(
    db: AsyncSession,
    *,
    association_id: int,
    departement: str | None,
    channel: str | None,
    unclaimed: Sequence[tuple[str, str | None]],
) -> None:
    """Record one settled check in the caller's transaction: one ``rights_checked`` event and
    one ``rights_unclaimed`` per (benefit code, amount band code or None). No session is
    passed to ``record``: the events carry no session id. ValueError for an unknown code."""
    validate_check(
        association_id=association_id,
        departement=departement,
        channel=channel,
        unclaimed=unclaimed,
    )
    await record(
        db,
        EventKind.RIGHTS_CHECKED,
        association_id=association_id,
        channel=channel,
        departement=departement,
        reason=CHECK_FOUND if unclaimed else CHECK_NONE,
    )
    for code, band in unclaimed:
        await record(
            db,
            EventKind.RIGHTS_UNCLAIMED,
            association_id=association_id,
            channel=channel,
            departement=departement,
            theme=code,
            reason=band,
        )
