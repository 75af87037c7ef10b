"""A database outage seen from the sockets: the peer is told "try again later" (an `error` event
or acknowledgement with code ``unavailable``, a refused connection that the page retries), the
outage is counted and logged once in a while, and no handler crashes."""

from __future__ import annotations

from aiohttp import web

from server.runtime import OUTAGE_KEY, DatabaseUnavailable, unavailable_from

CODE = "unavailable"


def outage(app: web.Application, exc: BaseException) -> DatabaseUnavailable | None:
    """``exc`` as a reported ``DatabaseUnavailable`` if it means the database is out of reach;
    None for any other error (the caller re-raises it)."""
    error = unavailable_from(exc)
    if error is not None:
        app[OUTAGE_KEY]("socket", error)
    return error
