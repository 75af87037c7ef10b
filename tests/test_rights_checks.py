"""Rights checks in the database (server/rights/checks.py): what is kept, for how long, and
what the statistics get — on a real database, with the session ended by the real
``assist.end_session`` and the purge run by the real ``retention.purge``."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts, assist, retention
from server.db import make_sessionmaker
from server.rights import checks
from server.rights.answers import Adult, Answers
from server.rights.benefits import Verdict
from server.rights.results import BenefitResult
from server.settings import Settings
from server.stats.events import EventKind
from server.store.engine import make_engine
from server.store.models import (
    AssistanceSession,
    HandoffSheet,
    RightsCheck,
    Role,
    StatEvent,
    utcnow,
)


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url)
    try:
        yield make_sessionmaker(engine, settings)
    finally:
        await engine.dispose()


@pytest.fixture
async def place(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, "Asso D")
        user = await accounts.create_user(
            db,
            association=assoc,
            email="v@example.org",
            name="V",
            role=Role.VOLUNTEER,
            password=None,
        )
        return assoc.id, user.id


def evaluation(received: tuple[str, ...] = ()) -> checks.Evaluation:
    answers = Answers(
        adults=(Adult(40, "inactif", 0.0, 0.0, 0.0, "none"),),
        children=(),
        housing="hosted",
        rent=None,
        postal_code="13008",
        commune="13055",
        received=received,
    )
    results = [
        BenefitResult("rsa", Verdict.LIKELY, 569, "rsa_likely", received="rsa" in received),
        BenefitResult("css_gratuite", Verdict.LIKELY, None, "css_free"),
        BenefitResult("ppa", Verdict.UNLIKELY, None, "ppa_no_work"),
        BenefitResult("cheque_energie", Verdict.CHECK, 194, "energy_tax"),
    ]
    return checks.Evaluation(answers, results, "2026-12", "176.1.8")


async def live_session(db: AsyncSession, place: tuple[int, int]) -> AssistanceSession:
    now = utcnow()
    session = AssistanceSession(
        association_id=place[0],
        volunteer_id=place[1],
        token_salt="s",
        join_token_hash=secrets.token_hex(32),
        created_at=now,
        expires_at=now + timedelta(hours=4),
    )
    db.add(session)
    await db.flush()
    return session


async def rights_events(db: AsyncSession) -> list[StatEvent]:
    return list(
        (
            await db.scalars(
                select(StatEvent)
                .where(
                    StatEvent.kind.in_(
                        [EventKind.RIGHTS_CHECKED.value, EventKind.RIGHTS_UNCLAIMED.value]
                    )
                )
                .order_by(StatEvent.id)
            )
        ).all()
    )


async def test_the_end_of_the_session_forgets_the_answers_and_counts_the_check_once(
    sessionmaker: async_sessionmaker[AsyncSession], place: tuple[int, int]
) -> None:
    async with sessionmaker.begin() as db:
        session = await live_session(db, place)
        check = await checks.save_for_session(
            db, session, place[1], evaluation(), keep_answers=False
        )
        assert check.answers is not None and check.answers["commune"] == "13055"
        assert await rights_events(db) == []  # not settled while the session goes on
        session_id, check_id = session.id, check.id
    async with sessionmaker.begin() as db:
        session = await db.get(AssistanceSession, session_id)
        assert session is not None
        await assist.end_session(db, session, "done")
    async with sessionmaker.begin() as db:
        check = await db.get(RightsCheck, check_id)
        assert check is not None
        assert check.answers is None  # forgotten
        assert check.results  # the volunteer may still put them on the sheet
        events = await rights_events(db)
        # One check, one benefit probably due and not received (the RSA); the free health
        # cover has no amount; "à vérifier" and "probablement pas" are not counted.
        assert sorted((e.kind, e.theme or "", e.reason or "") for e in events) == sorted(
            [
                ("rights_checked", "", "found"),
                ("rights_unclaimed", "rsa", "400_800"),
                ("rights_unclaimed", "css_gratuite", ""),
            ]
        )
        for event in events:
            assert event.session_id is None  # nothing links the figures to the person
            assert event.departement == "13"
            assert event.association_id == place[0]
            assert event.duration_seconds is None and event.volunteer_id is None
        # Settling again, or doing the check again, does not count twice.
        assert await checks.settle(db, check) is False
        await checks.save_for_session(db, session, place[1], evaluation(), keep_answers=False)
        assert len(await rights_events(db)) == 3


async def test_kept_answers_follow_the_sheet_and_go_with_its_purge(
    sessionmaker: async_sessionmaker[AsyncSession], place: tuple[int, int], settings: Settings
) -> None:
    async with sessionmaker.begin() as db:
        session = await live_session(db, place)
        check = await checks.save_for_session(
            db, session, place[1], evaluation(received=("rsa",)), keep_answers=True
        )
        await assist.end_session(db, session, "done")
        sheet = HandoffSheet(
            association_id=place[0],
            volunteer_id=place[1],
            assistance_session_id=session.id,
            channel="link",
            themes=["social_sante"],
            organisations=["caf"],
            autonomy="with_help",
            outcome="follow_up",
            read_token_hash=secrets.token_hex(32),
        )
        db.add(sheet)
        await db.flush()
        await checks.sheet_filed(db, sheet)
        await checks.set_on_sheet(db, check, on_sheet=True, show_amounts=True)
        assert check.answers is not None  # the person agreed
        assert check.handoff_sheet_id == sheet.id
        assert (await checks.check_of_sheet(db, sheet)) is check
        # The RSA is already received: only the free health cover is unclaimed.
        unclaimed = [e.theme for e in await rights_events(db) if e.kind == "rights_unclaimed"]
        assert unclaimed == ["css_gratuite"]
        check_id, sheet_id = check.id, sheet.id
    now = utcnow() + timedelta(days=2)
    async with sessionmaker() as db:
        report = await retention.purge(db, settings, now)
    assert report.counts[checks.DELETED] == 0  # on a sheet that is still there
    async with sessionmaker.begin() as db:
        sheet = await db.get(HandoffSheet, sheet_id)
        assert sheet is not None
        sheet.purged_at = now
    async with sessionmaker() as db:
        dry = await retention.purge(db, settings, now, dry_run=True)
        assert dry.counts[checks.DELETED] == 1
        report = await retention.purge(db, settings, now)
    assert report.counts[checks.DELETED] == 1
    async with sessionmaker() as db:
        assert await db.get(RightsCheck, check_id) is None


async def test_a_check_never_put_on_a_sheet_is_deleted_after_a_day(
    sessionmaker: async_sessionmaker[AsyncSession], place: tuple[int, int], settings: Settings
) -> None:
    async with sessionmaker.begin() as db:
        session = await live_session(db, place)
        check = await checks.save_for_session(
            db, session, place[1], evaluation(), keep_answers=False
        )
        check_id = check.id
    # Its session never ended (the volunteer's tab closed): an hour later the purge pass
    # counts it, a day later deletes it.
    async with sessionmaker() as db:
        report = await retention.purge(db, settings, utcnow() + timedelta(hours=2))
    assert report.counts[checks.SETTLED] == 1
    assert report.counts[checks.DELETED] == 0
    async with sessionmaker() as db:
        assert len(await rights_events(db)) == 3
        assert (await db.get(RightsCheck, check_id)) is not None
    async with sessionmaker() as db:
        report = await retention.purge(
            db, settings, utcnow() + timedelta(hours=checks.UNFILED_HOURS + 1)
        )
    assert report.counts[checks.DELETED] == 1
    async with sessionmaker() as db:
        assert await db.get(RightsCheck, check_id) is None
        assert len(await rights_events(db)) == 3  # the statistics stay


async def test_a_check_made_from_a_sheet_keeps_no_answers_without_consent(
    sessionmaker: async_sessionmaker[AsyncSession], place: tuple[int, int]
) -> None:
    async with sessionmaker.begin() as db:
        sheet = HandoffSheet(
            association_id=place[0],
            volunteer_id=place[1],
            channel="callback",
            themes=["social_sante"],
            organisations=["caf"],
            autonomy="with_help",
            outcome="follow_up",
            read_token_hash=secrets.token_hex(32),
        )
        db.add(sheet)
        await db.flush()
        check = await checks.save_for_sheet(db, sheet, place[1], evaluation(), keep_answers=False)
        assert check.answers is None and check.results
        again = await checks.save_for_sheet(db, sheet, place[1], evaluation(), keep_answers=True)
        assert again.id == check.id and again.answers is not None
