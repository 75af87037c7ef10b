"""Alembic migrations build exactly the schema of the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.cli import alembic_config
from server.settings import load_settings
from server.store.engine import make_engine
from server.store.models import Base
from tests.conftest import PG_UNREACHABLE, POSTGRES_URL


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, Base.metadata))


async def _upgrade_and_compare(url: str, tmp_path: Path) -> list[Any]:
    settings = load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path),
            "PERMANENCE_DATABASE_URL": url,
            "PERMANENCE_SECRET_KEY": "s" * 40,
        }
    )
    config = alembic_config(settings)
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = make_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, config, "base")
    return diff


async def test_migrations_match_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    assert await _upgrade_and_compare(url, tmp_path) == []


async def test_migrations_match_models_on_postgresql(tmp_path: Path) -> None:
    if PG_UNREACHABLE:
        pytest.skip(PG_UNREACHABLE)
    admin_url = make_url(POSTGRES_URL)
    name = f"vp_migrations_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        assert await _upgrade_and_compare(url, tmp_path) == []
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
