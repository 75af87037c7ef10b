"""The application's database sessions: the store's sessions configured for this deployment.

Every sessionmaker of the application — the web app's, the stand-alone worker's, the CLI's, the
tests' — is made here, so all of them keep the statistics rollups at flush (days counted in
``settings.timezone``) and, when given a dispatcher, hand their committed events to it.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.events import Dispatcher
from server.settings import Settings
from server.stats.rollups import maintain_rollups
from server.store import engine as store


def make_sessionmaker(
    engine: AsyncEngine, settings: Settings, dispatcher: Dispatcher | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine`` with the statistics rollups kept in step at every flush and, if
    a dispatcher is given, the events of each committed transaction handed to it."""
    return store.make_session_factory(
        engine,
        flush_hooks=[maintain_rollups(ZoneInfo(settings.timezone))],
        after_commit_handler=dispatcher.dispatch if dispatcher is not None else None,
    )
