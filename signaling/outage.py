"""A database outage (or the other nodes out of reach) seen from the sockets: the peer is told
"try again later" (an `error` event or acknowledgement with code ``unavailable``, a refused
connection that the page retries), the outage is counted and logged once in a while, and no
handler crashes."""

from __future__ import annotations

from aiohttp import web

from server.cluster import ClusterUnavailable
from server.errors import DomainError
from server.runtime import OUTAGE_KEY, DatabaseUnavailable, unavailable_from

CODE = "unavailable"


def outage(app: web.Application, exc: BaseException) -> DomainError | None:
    """``exc`` as a reported ``DatabaseUnavailable`` if it means the database is out of reach,
    or the ``ClusterUnavailable`` it is (the other nodes cannot be reached: logged by the
    cluster); None for any other error (the caller re-raises it)."""
    if isinstance(exc, ClusterUnavailable):
        return exc
    error: DatabaseUnavailable | None = unavailable_from(exc)
    if error is not None:
        app[OUTAGE_KEY]("socket", error)
    return error
