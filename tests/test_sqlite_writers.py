"""SQLite writers of one process are served first come, first served (server/store/engine.py):
they queue on the process's writer lock instead of SQLite's busy handler, and the lock is given
back however their transaction ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from server.store.engine import begin_write, make_engine, make_session_factory


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
