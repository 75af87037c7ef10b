"""What the running application shares between its web and socket layers, each under a typed
``web.AppKey``: the settings, the database, the event dispatcher and the drop-in queue board;
and how both layers tell a database outage ("try again later") from a bug.
Keys of objects that one layer owns are declared beside them (``RATELIMIT_KEY`` in
``server/ratelimit.py``; ``SIO_KEY`` and ``QUEUE_HUB_KEY`` in ``signaling/``).

This module imports the domain, never the web or socket layers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.accounts import Passwords
from server.cluster import Cluster
from server.db import make_sessionmaker
from server.dropin.board import Presence, QueueBoard, RedisPresence
from server.errors import DomainError, Kind
from server.events import Dispatcher, OpeningChanged
from server.i18n import N_, _
from server.logs import Throttle
from server.metrics import DATABASE_UNAVAILABLE
from server.rights.engine import RightsEngine
from server.settings import Settings
from server.store.engine import database_unavailable, make_engine
from server.store.models import AssistanceSession, QueueEntry

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
ENGINE_KEY = web.AppKey("engine", AsyncEngine)
SESSIONMAKER_KEY: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessionmaker")
DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
BOARD_KEY = web.AppKey("queue_board", QueueBoard)
PASSWORDS_KEY = web.AppKey("passwords", Passwords)
CLUSTER_KEY = web.AppKey("cluster", Cluster)  # only with PERMANENCE_REDIS_URL (several nodes)
# The rights check's process pool (server/rights/engine.py); absent with RIGHTS_WORKERS=0.
RIGHTS_KEY = web.AppKey("rights_engine", RightsEngine)

# While the database cannot be reached, pages, the API and socket events answer "try again
# later" (503 + Retry-After, a French message) instead of an error 500 or a hang.
RETRY_AFTER_SECONDS = 10
DATABASE_DOWN = N_("Le service est momentanément indisponible. Réessayez dans quelques instants.")


class DatabaseUnavailable(DomainError):
    """The database cannot be reached now (stopped, restarting, no free connection in time)."""

    default_kind = Kind.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__("database_unavailable", _(DATABASE_DOWN))


def unavailable_from(exc: BaseException) -> DatabaseUnavailable | None:
    """``exc`` as a ``DatabaseUnavailable`` if it means the database is out of reach, else None
    (the caller re-raises ``exc``: a bug, not an outage)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if not database_unavailable(exc):
        return None
    error = DatabaseUnavailable()
    error.__cause__ = exc
    return error


class OutageReport:
    """Counts the answers given while the database is out of reach (a metric per layer) and
    logs them as a WARNING line at most every ``every`` seconds: an outage is not a bug, and a
    busy site must not write a line per request."""

    def __init__(self, every: float = 10.0) -> None:
        self._throttle = Throttle(every)

    def __call__(self, layer: str, error: DatabaseUnavailable) -> None:
        DATABASE_UNAVAILABLE.labels(layer).inc()
        count = self._throttle.due()
        if count is None:
            return
        cause = error.__cause__
        log.warning(
            "database unavailable (%s), answering 'try again later': %d answer(s) since the "
            "last line",
            type(cause).__name__ if cause else "unknown",
            count,
        )


OUTAGE_KEY = web.AppKey("outage_report", OutageReport)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the engine, the sessions (their committed events go to the app's
    dispatcher) and the queue board for the life of the app; dispose the engine on shutdown."""
    settings = app[SETTINGS_KEY]
    engine = make_engine(settings.database_url, timeout=settings.database_timeout_seconds)
    dispatcher = app[DISPATCHER_KEY]
    sessionmaker = make_sessionmaker(engine, settings, dispatcher)
    try:
        async with sessionmaker() as db:
            # Fail at start, with the fix, rather than at the first request.
            await db.execute(select(AssistanceSession.id).limit(1))
            await db.execute(select(QueueEntry.id).limit(1))
    except DBAPIError as exc:
        await engine.dispose()
        raise RuntimeError(
            "the database schema is missing or outdated: run `permanence migrate` "
            f"({type(exc.orig).__name__})"
        ) from exc
    app[ENGINE_KEY] = engine
    app[OUTAGE_KEY] = OutageReport()
    app[SESSIONMAKER_KEY] = sessionmaker
    cluster = app.get(CLUSTER_KEY)
    presence = RedisPresence(cluster.node) if cluster is not None else Presence()
    board = app[BOARD_KEY] = QueueBoard(sessionmaker, settings, presence)

    async def opening_changed(event: OpeningChanged) -> None:
        board.forget_facts(event.association_id)

    dispatcher.subscribe(OpeningChanged, opening_changed)
    try:
        yield
    finally:
        dispatcher.unsubscribe(OpeningChanged, opening_changed)
        await engine.dispose()


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: with Redis, join the cluster (heartbeat, committed events to and from the
    other nodes) for the life of the app; without, this process is the whole site."""
    settings = app[SETTINGS_KEY]
    if not settings.redis_url:
        yield
        return
    cluster = Cluster.connect(settings.redis_url, app[DISPATCHER_KEY])
    await cluster.start()
    app[CLUSTER_KEY] = cluster
    log.info("node %s joined the cluster through Redis", cluster.node.id)
    try:
        yield
    finally:
        await cluster.stop()


async def passwords_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the argon2 thread pool and the cap on logins in progress; threads stop on
    shutdown."""
    settings = app[SETTINGS_KEY]
    passwords = Passwords(settings.password_hash_threads, settings.login_max_concurrent)
    app[PASSWORDS_KEY] = passwords
    try:
        yield
    finally:
        passwords.close()


async def rights_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: start the rights check's process pool with the application, warming in the
    background (the server listens meanwhile), and stop it at the end. A pool set beforehand
    (the tests share one) is used as it is and left running."""
    given = app.get(RIGHTS_KEY)
    workers = app[SETTINGS_KEY].rights_workers
    engine = None
    if given is None and workers > 0:
        settings = app[SETTINGS_KEY]
        engine = RightsEngine(
            workers, timeout=settings.rights_timeout_seconds, queue_max=settings.rights_queue_max
        )
        engine.start_in_background()
        app[RIGHTS_KEY] = engine
    try:
        yield
    finally:
        if engine is not None:
            await engine.close()
