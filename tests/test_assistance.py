"""The assistance domain module on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from server import assist
from server.store.models import AssistanceSession, User, utcnow
from server.tokens import code_hash, join_code
from tests.conftest import Account, Running


async def test_a_code_collision_with_a_live_session_draws_a_new_code(
    running: Running, volunteer: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = running.settings
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        first = await assist.create_session(db, settings, user)
        second = await assist.create_session(db, settings, user)
        first_id, second_id = first.id, second.id

    # Control the randomness: the next salts drawn are "clash" then "free". Make the first
    # session hold the very code that "clash" gives the second one.
    salts: Iterator[str] = iter(["clash", "free"])
    monkeypatch.setattr(assist, "new_salt", lambda: next(salts))
    clashing = join_code(
        settings.secret_key.get_secret_value(), second_id, "clash", settings.code_digits
    )
    async with running.sessionmaker.begin() as db:
        holder = await db.get_one(AssistanceSession, first_id)
        holder.code_hash = code_hash(settings.secret_key.get_secret_value(), clashing)

    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, second_id)
        code = await assist.assign_new_code(db, settings, session)

    free = join_code(
        settings.secret_key.get_secret_value(), second_id, "free", settings.code_digits
    )
    assert code == free != clashing
    async with running.sessionmaker() as db:
        found = await assist.find_by_code(db, settings, code)
        assert found is not None and found.id == second_id
        holder_found = await assist.find_by_code(db, settings, clashing)
        assert holder_found is not None and holder_found.id == first_id


async def test_a_new_session_whose_first_code_is_held_is_written_with_another_code(
    running: Running, volunteer: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_session writes its code in its INSERT: a code held by a live session makes that
    INSERT fail in its savepoint, and the session is written once with a fresh code."""
    settings = running.settings
    secret = settings.secret_key.get_secret_value()
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        holder = await assist.create_session(db, settings, user)
        holder_id = holder.id
    new_id = "00000000-0000-4000-8000-000000000001"
    clashing = join_code(secret, new_id, "clash", settings.code_digits)
    async with running.sessionmaker.begin() as db:
        held = await db.get_one(AssistanceSession, holder_id)
        held.code_hash = code_hash(secret, clashing)

    # The link salt, then the code salts "clash" (held by the holder) and "free".
    salts: Iterator[str] = iter(["link", "clash", "free"])
    monkeypatch.setattr(assist, "new_salt", lambda: next(salts))
    monkeypatch.setattr(assist, "new_id", lambda: new_id)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        session = await assist.create_session(db, settings, user, beneficiary_name="Aïcha")
        code = assist.current_code(settings, session)

    assert code == join_code(secret, new_id, "free", settings.code_digits) != clashing
    async with running.sessionmaker() as db:
        found = await assist.find_by_code(db, settings, code)
        assert found is not None and found.id == new_id
        assert found.beneficiary_name == "Aïcha" and found.code_salt == "free"
        holder_found = await assist.find_by_code(db, settings, clashing)
        assert holder_found is not None and holder_found.id == holder_id
        sessions = await db.scalar(
            select(func.count())
            .select_from(AssistanceSession)
            .where(AssistanceSession.id == new_id)
        )
        assert sessions == 1


async def test_an_expired_code_keeps_its_slot_until_a_new_session_draws_it(
    running: Running, volunteer: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired codes are not freed on every new session: the one a new session draws is freed
    then (its INSERT fails once), and the new session gets that very code."""
    settings = running.settings
    secret = settings.secret_key.get_secret_value()
    new_id = "00000000-0000-4000-8000-000000000002"
    clashing = join_code(secret, new_id, "clash", settings.code_digits)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        holder = await assist.create_session(db, settings, user)
        holder.code_hash = code_hash(secret, clashing)
        holder.code_expires_at = utcnow() - timedelta(minutes=1)
        holder_id = holder.id
    async with running.sessionmaker() as db:
        assert await assist.find_by_code(db, settings, clashing) is None  # expired: not live

    salts: Iterator[str] = iter(["link", "clash", "clash"])
    monkeypatch.setattr(assist, "new_salt", lambda: next(salts))
    monkeypatch.setattr(assist, "new_id", lambda: new_id)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        session = await assist.create_session(db, settings, user)
        assert assist.current_code(settings, session) == clashing

    async with running.sessionmaker() as db:
        found = await assist.find_by_code(db, settings, clashing)
        assert found is not None and found.id == new_id
        released = await db.get_one(AssistanceSession, holder_id)
        assert released.code_hash is None


async def test_ending_a_session_frees_its_code_and_link(
    running: Running, volunteer: Account
) -> None:
    settings = running.settings
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        session = await assist.create_session(db, settings, user)
        code = assist.current_code(settings, session)
        token = assist.link_for(settings, session).rsplit("/", 1)[1]
        assert await assist.end_session(db, session, "volunteer") is True
        assert await assist.end_session(db, session, "volunteer") is False
    assert code is not None
    async with running.sessionmaker() as db:
        assert await assist.find_by_code(db, settings, code) is None
        assert await assist.find_by_token(db, token) is None
