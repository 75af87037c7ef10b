"""SQLite statements make one trip to the connection's thread (server/store/sqlite_cursor.py)
with the same results as SQLAlchemy's own cursor: rows, counts, ids, errors, streams. (The
writers' queue of server/store/engine.py is tested in tests/test_sqlite_writers.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.store.engine import make_engine
from server.store.sqlite_cursor import OneTripCursor


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite engine on a fresh file with a small table."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
        )
    yield engine
    await engine.dispose()


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
