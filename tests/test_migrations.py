"""Alembic migrations build exactly the schema of the models, on SQLite and PostgreSQL:
autogenerate finds nothing to change, and the rollup tables have the declared key layout."""

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
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.cli import alembic_config
from server.settings import load_settings
from server.store.engine import make_engine
from server.store.models import Base, StatRollup, StatRollupMonthly
from tests.conftest import PG_UNREACHABLE, POSTGRES_URL


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    diff = list(compare_metadata(context, Base.metadata))
    # Autogenerate compares columns, types and indexes, but neither the order of a primary
    # key's columns nor SQLite's WITHOUT ROWID: the rollup reads seek on both.
    for model in (StatRollup, StatRollupMonthly):
        migrated, declared = _rollup_layout(connection, model.__tablename__)
        if migrated != declared:
            diff.append(("rollup_layout", model.__tablename__, migrated, declared))
    return diff


def _rollup_layout(connection: Connection, name: str) -> tuple[Any, Any]:
    """(migrated, declared): columns with nullability, primary key in order, WITHOUT ROWID."""
    inspector = inspect(connection)
    table = Base.metadata.tables[name]
    sqlite = connection.dialect.name == "sqlite"
    without_rowid = None
    if sqlite:
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar_one()
        without_rowid = "WITHOUT ROWID" in sql.upper()
    migrated = (
        [(c["name"], c["nullable"]) for c in inspector.get_columns(name)],
        inspector.get_pk_constraint(name)["constrained_columns"],
        without_rowid,
    )
    declared = (
        [(c.name, c.nullable) for c in table.columns],
        [c.name for c in table.primary_key.columns],
        not table.dialect_options["sqlite"]["with_rowid"] if sqlite else None,
    )
    return migrated, declared


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


async def test_the_data_used_migration_adds_a_nullable_byte_count_and_takes_it_back(
    tmp_path: Path,
) -> None:
    """e2d5b8a4c601 (issue 14): one nullable integer column on the sessions (no default: rows
    written before it read as "not measured"); its downgrade removes that column only."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    settings = load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path),
            "PERMANENCE_DATABASE_URL": url,
            "PERMANENCE_SECRET_KEY": "s" * 40,
        }
    )
    config = alembic_config(settings)

    def columns(connection: Connection) -> dict[str, Any]:
        return {c["name"]: c for c in inspect(connection).get_columns("assistance_sessions")}

    await asyncio.to_thread(command.upgrade, config, "c4a7e2f19b3d")
    engine = make_engine(url)
    async with engine.connect() as conn:
        before = await conn.run_sync(columns)
    assert "data_bytes" not in before
    await asyncio.to_thread(command.upgrade, config, "e2d5b8a4c601")
    async with engine.connect() as conn:
        after = await conn.run_sync(columns)
    assert set(after) - set(before) == {"data_bytes"}
    assert after["data_bytes"]["nullable"] is True
    assert after["data_bytes"]["type"].python_type is int
    await asyncio.to_thread(command.downgrade, config, "c4a7e2f19b3d")
    async with engine.connect() as conn:
        assert set(await conn.run_sync(columns)) == set(before)
    await engine.dispose()
