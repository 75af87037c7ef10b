"""The SQLite engine of server/store/engine.py: writers of one process queue in the event loop
(a transaction that ends, however it ends, lets the next one in) and each statement makes one
trip to the connection's thread with the same results as SQLAlchemy's own cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.store.engine import begin_write, make_engine
from server.store.sqlite_cursor import OneTripCursor

WRITERS = 40


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite engine on a fresh file with a one-row counter and a small table."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
        await conn.exec_driver_sql("INSERT INTO counter VALUES (0)")
        await conn.exec_driver_sql(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
        )
    yield engine
    await engine.dispose()


async def _increment(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker.begin() as db:
        await begin_write(db)
        n = (await db.execute(text("SELECT n FROM counter"))).scalar_one()
        await asyncio.sleep(0)  # other writers run meanwhile: only the lock keeps them out
        await db.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})


async def test_concurrent_writers_take_turns_and_none_is_lost(engine: AsyncEngine) -> None:
    maker = async_sessionmaker(engine)
    await asyncio.gather(*(_increment(maker) for _ in range(WRITERS)))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == WRITERS


async def test_a_writer_that_fails_or_never_commits_lets_the_next_one_in(
    engine: AsyncEngine,
) -> None:
    maker = async_sessionmaker(engine)
    with pytest.raises(RuntimeError):
        async with maker.begin() as db:
            await db.execute(text("UPDATE counter SET n = 100"))
            raise RuntimeError("the transaction rolls back")
    async with maker() as db:  # closed without commit: the pool rolls it back on return
        await db.execute(text("UPDATE counter SET n = 200"))
    with pytest.raises(IntegrityError):
        async with maker.begin() as db:
            await db.execute(text("INSERT INTO item (name) VALUES ('a'), ('a')"))
    async with asyncio.timeout(5):  # the queue's own wait would be 30 s
        await _increment(maker)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == 1
        assert (await conn.execute(text("SELECT count(*) FROM item"))).scalar_one() == 0


async def test_one_trip_statements_give_rows_counts_and_ids(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]
        inserted = await conn.execute(text("INSERT INTO item (name) VALUES ('first')"))
        assert inserted.lastrowid == 1
        many = await conn.execute(
            text("INSERT INTO item (name) VALUES (:name)"),
            [{"name": "second"}, {"name": "third"}, {"name": "fourth"}],
        )
        assert many.rowcount == 3
        returned = await conn.execute(
            text("INSERT INTO item (name) VALUES ('fifth') RETURNING id, name")
        )
        assert returned.all() == [(5, "fifth")]
        updated = await conn.execute(text("UPDATE item SET name = name || '!' WHERE id > 2"))
        assert updated.rowcount == 3
        result = await conn.execute(text("SELECT id, name FROM item ORDER BY id"))
        assert result.fetchmany(2) == [(1, "first"), (2, "second")]
        assert result.fetchone() == (3, "third!")
        assert result.fetchall() == [(4, "fourth!"), (5, "fifth!")]
        with pytest.raises(IntegrityError):
            await conn.execute(text("INSERT INTO item (name) VALUES ('first')"))


async def test_streamed_results_still_work(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("INSERT INTO item (name) VALUES ('a'), ('b'), ('c')"))
        stream = await conn.stream(text("SELECT name FROM item ORDER BY id"))
        assert [row.name async for row in stream] == ["a", "b", "c"]
        await conn.commit()
