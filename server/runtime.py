"""What the running application shares between its web and socket layers, each under a typed
``web.AppKey``: the settings, the database, the event dispatcher and the drop-in queue board.
Keys of objects that one layer owns are declared beside them (``RATELIMIT_KEY`` in
``server/ratelimit.py``; ``SIO_KEY`` and ``QUEUE_HUB_KEY`` in ``signaling/``).

This module imports the domain, never the web or socket layers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.accounts import Passwords
from server.db import make_sessionmaker
from server.dropin.board import QueueBoard
from server.events import Dispatcher, OpeningChanged
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import AssistanceSession, QueueEntry

SETTINGS_KEY = web.AppKey("settings", Settings)
ENGINE_KEY = web.AppKey("engine", AsyncEngine)
SESSIONMAKER_KEY: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessionmaker")
DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
BOARD_KEY = web.AppKey("queue_board", QueueBoard)
PASSWORDS_KEY = web.AppKey("passwords", Passwords)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the engine, the sessions (their committed events go to the app's
    dispatcher) and the queue board for the life of the app; dispose the engine on shutdown."""
    settings = app[SETTINGS_KEY]
    engine = make_engine(settings.database_url)
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
    app[SESSIONMAKER_KEY] = sessionmaker
    board = app[BOARD_KEY] = QueueBoard(sessionmaker, settings)

    async def opening_changed(event: OpeningChanged) -> None:
        board.forget_facts(event.association_id)

    dispatcher.subscribe(OpeningChanged, opening_changed)
    try:
        yield
    finally:
        dispatcher.unsubscribe(OpeningChanged, opening_changed)
        await engine.dispose()


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
