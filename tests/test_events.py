"""The one event path: published on the session, handed to the subscribers after the commit —
never on rollback, never from a rolled-back savepoint, once per distinct event."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts
from server.db import make_sessionmaker
from server.events import (
    Dispatcher,
    Event,
    OpeningChanged,
    OutboxWritten,
    QueueChanged,
    RoomEnded,
    publish,
)
from server.settings import Settings
from server.store.engine import make_engine
from server.store.models import Association

Maker = async_sessionmaker[AsyncSession]


class Seen:
    """A subscriber that records what it got and what the database held at that moment."""

    def __init__(self, sessionmaker: Maker) -> None:
        self.sessionmaker = sessionmaker
        self.events: list[Event] = []
        self.associations_then: list[int] = []

    async def __call__(self, event: Event) -> None:
        async with self.sessionmaker() as db:  # another session: sees committed rows only
            count = await db.scalar(select(func.count()).select_from(Association))
        self.associations_then.append(int(count or 0))
        self.events.append(event)


@pytest.fixture
async def wired(settings: Settings) -> AsyncIterator[tuple[Maker, Seen, Dispatcher]]:
    engine = make_engine(settings.database_url)
    dispatcher = Dispatcher()
    sessionmaker = make_sessionmaker(engine, settings, dispatcher)
    seen = Seen(sessionmaker)
    for kind in (QueueChanged, RoomEnded, OpeningChanged, OutboxWritten):
        dispatcher.subscribe(kind, seen)
    try:
        yield sessionmaker, seen, dispatcher
    finally:
        await engine.dispose()


async def test_events_reach_subscribers_after_the_commit_once_each_in_order(
    wired: tuple[Maker, Seen, Dispatcher],
) -> None:
    sessionmaker, seen, _ = wired
    async with sessionmaker.begin() as db:
        await accounts.get_or_create_association(db, "Asso A")
        publish(db, QueueChanged(1))
        publish(db, RoomEnded("s1", "volunteer"))
        publish(db, QueueChanged(1))  # the same change twice: one push
        publish(db, QueueChanged(2))
        assert seen.events == []  # nothing before the commit
    assert seen.events == [QueueChanged(1), RoomEnded("s1", "volunteer"), QueueChanged(2)]
    assert seen.associations_then == [1, 1, 1]  # the subscriber saw the committed row


async def test_a_rolled_back_transaction_publishes_nothing(
    wired: tuple[Maker, Seen, Dispatcher],
) -> None:
    sessionmaker, seen, _ = wired
    with pytest.raises(RuntimeError):
        async with sessionmaker.begin() as db:
            await accounts.get_or_create_association(db, "Asso A")
            publish(db, QueueChanged(1))
            raise RuntimeError("the action failed after publishing")
    assert seen.events == []
    # The session's next transaction starts clean.
    async with sessionmaker.begin() as db:
        publish(db, QueueChanged(3))
    assert seen.events == [QueueChanged(3)]


async def test_a_rolled_back_savepoint_drops_only_its_own_events(
    wired: tuple[Maker, Seen, Dispatcher],
) -> None:
    sessionmaker, seen, _ = wired
    async with sessionmaker.begin() as db:
        publish(db, QueueChanged(1))
        try:
            async with db.begin_nested():
                publish(db, RoomEnded("s-gone", "volunteer"))
                raise ValueError("the savepoint fails")
        except ValueError:
            pass
        async with db.begin_nested():
            publish(db, OpeningChanged(1))  # a released savepoint keeps its events
    assert seen.events == [QueueChanged(1), OpeningChanged(1)]


async def test_each_explicit_commit_hands_over_its_own_events(
    wired: tuple[Maker, Seen, Dispatcher],
) -> None:
    sessionmaker, seen, _ = wired
    async with sessionmaker() as db:
        publish(db, QueueChanged(1))
        await db.commit()
        assert seen.events == [QueueChanged(1)]
        publish(db, QueueChanged(2))
        await db.rollback()
        publish(db, QueueChanged(3))
        await db.commit()
    assert seen.events == [QueueChanged(1), QueueChanged(3)]


async def test_a_failing_subscriber_neither_stops_the_others_nor_fails_the_commit(
    wired: tuple[Maker, Seen, Dispatcher],
) -> None:
    sessionmaker, seen, dispatcher = wired

    async def broken(_event: QueueChanged) -> None:
        raise RuntimeError("a push failed")

    dispatcher.subscribe(QueueChanged, broken)
    async with sessionmaker.begin() as db:
        await accounts.get_or_create_association(db, "Asso A")
        publish(db, QueueChanged(1))
    assert seen.events == [QueueChanged(1)]
    async with sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(Association)) == 1


async def test_sessions_without_a_dispatcher_drop_their_events(settings: Settings) -> None:
    """The command line's sessions: nothing listens, nothing breaks."""
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine, settings).begin() as db:
            await accounts.get_or_create_association(db, "Asso A")
            publish(db, QueueChanged(1))
    finally:
        await engine.dispose()


async def test_only_events_are_dispatched() -> None:
    with pytest.raises(TypeError):
        await Dispatcher().dispatch(["not an event"])
