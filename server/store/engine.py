"""Database engine and sessionmaker, opened and closed with the application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from server.runtime import ENGINE_KEY, SESSIONMAKER_KEY, SETTINGS_KEY


def make_engine(database_url: str) -> AsyncEngine:
    """Create the async engine; on SQLite, make sure the folder exists and set sane pragmas."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 30}}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


async def begin_write(db: AsyncSession) -> None:
    """On SQLite, take the write lock now (BEGIN IMMEDIATE) unless a transaction is open."""
    # Two reasons. pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so a SAVEPOINT
    # issued first starts one of its own and its RELEASE commits: the caller's transaction would
    # no longer be one. And concurrent writers queue on busy_timeout (30 s) instead of failing at
    # once with "database is locked" when a reader tries to become a writer.
    conn = await db.connection()
    if conn.dialect.name != "sqlite":
        return
    driver = (await conn.get_raw_connection()).driver_connection  # an aiosqlite.Connection
    if driver is not None and not driver.in_transaction:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit, so views can render them."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the engine for the life of the app, dispose it on shutdown."""
    engine = make_engine(app[SETTINGS_KEY].database_url)
    app[ENGINE_KEY] = engine
    app[SESSIONMAKER_KEY] = make_sessionmaker(engine)
    from server.assist import forget_presence
    from server.dropin.places import forget_presence as forget_waiting_pages
    from server.store.models import utcnow

    try:
        async with app[SESSIONMAKER_KEY].begin() as db:
            await forget_presence(db)
            await forget_waiting_pages(db, utcnow())
    except DBAPIError as exc:
        await engine.dispose()
        raise RuntimeError(
            "the database schema is missing or outdated: run `permanence migrate` "
            f"({type(exc.orig).__name__})"
        ) from exc
    yield
    await engine.dispose()
