"""SQLite writers of one process are served first come, first served (server/store/engine.py):
they queue on the process's writer lock instead of SQLite's busy handler, and the lock is given
back however their transaction ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text, update

from server.store.engine import begin_write, make_engine, make_session_factory
from server.store.models import Association, Base, Motif


async def test_concurrent_sqlite_writers_commit_in_the_order_they_asked(tmp_path: Path) -> None:
    """Without SQLite's busy handler at all (busy_timeout 0: a second writer asking SQLite
    would fail at once), twelve concurrent writers all commit, in the order they asked."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.sqlite3'}")

    @event.listens_for(engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    sessions = make_session_factory(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE log (n INTEGER)"))
    asked: list[int] = []

    async def writer(n: int) -> None:
        async with sessions.begin() as db:
            await db.connection()  # connected first: asking is the next step, without a wait
            asked.append(n)
            await begin_write(db)
            await asyncio.sleep(0.01)  # hold the lock across an await, as a take does
            await db.execute(text("INSERT INTO log (n) VALUES (:n)"), {"n": n})

    try:
        await asyncio.gather(*(writer(n) for n in range(12)))
        async with sessions() as db:
            written = list((await db.execute(text("SELECT n FROM log ORDER BY rowid"))).scalars())
    finally:
        await engine.dispose()
    assert written == asked and sorted(written) == list(range(12))


async def test_the_writer_lock_is_given_back_on_rollback_and_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.sqlite3'}")
    sessions = make_session_factory(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE log (n INTEGER)"))
    try:
        with pytest.raises(ZeroDivisionError):
            async with sessions.begin() as db:
                await begin_write(db)
                await db.execute(text("INSERT INTO log (n) VALUES (1)"))
                _ = 1 / 0
        async with sessions() as db:
            await begin_write(db)
            await db.rollback()
        async with asyncio.timeout(5):  # a lock kept by either would block here
            async with sessions.begin() as db:
                await begin_write(db)
                await db.execute(text("INSERT INTO log (n) VALUES (2)"))
        async with sessions() as db:
            written = list((await db.execute(text("SELECT n FROM log"))).scalars())
    finally:
        await engine.dispose()
    assert written == [2]


async def test_writers_that_never_call_begin_write_queue_too(tmp_path: Path) -> None:
    """A flush of new objects and an ORM ``update`` take their turn like ``begin_write``
    callers: with SQLite's busy handler off (busy_timeout 0), each would otherwise fail at once
    with "database is locked" while a queued writer holds the lock."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.sqlite3'}")

    @event.listens_for(engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    sessions = make_session_factory(engine)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with sessions.begin() as db:
        db.add(Association(id=1, name="Asso"))
    holding = asyncio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with sessions.begin() as db:
            await begin_write(db)
            holding.set()
            await asyncio.sleep(0.2)  # the others arrive while the lock is held
            db.add(Motif(association_id=1, name="held"))
            await db.flush()
            order.append("held")

    async def flusher() -> None:
        await holding.wait()
        async with sessions.begin() as db:
            db.add(Motif(association_id=1, name="flushed"))
        order.append("flushed")

    async def updater() -> None:
        await holding.wait()
        await asyncio.sleep(0.01)
        async with sessions.begin() as db:
            await db.execute(update(Motif).where(Motif.name == "flushed").values(name="renamed"))
        order.append("updated")

    try:
        await asyncio.gather(holder(), flusher(), updater())
        async with sessions() as db:
            names = set((await db.scalars(select(Motif.name))).all())
    finally:
        await engine.dispose()
    assert order == ["held", "flushed", "updated"]
    assert names == {"held", "renamed"}
