"""Synthetic history (`permanence demo --sessions N`): deterministic, realistic, no personal
data, rollups rebuilt. Real databases (SQLite and PostgreSQL) and the real CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts, callback_requests, geo, motifs, room_vault, synthetic, taxonomy
from server.db import make_sessionmaker
from server.dropin.places import LeftReason
from server.rights.benefits import AMOUNT_BANDS, BENEFITS
from server.settings import Settings, load_settings
from server.stats.events import EventKind
from server.stats.rollups import CHECK_FOUND, CHECK_NONE
from server.store.engine import make_engine
from server.store.models import (
    Appointment,
    CallbackRequest,
    HandoffSheet,
    QueueEntry,
    Role,
    StatEvent,
    StatRollup,
    User,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SESSIONS = 3000
SMALL = 300


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A sessionmaker on the test database (created by the settings fixture)."""
    engine = make_engine(settings.database_url)
    try:
        yield make_sessionmaker(engine, settings)
    finally:
        await engine.dispose()


async def new_association(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> int:
    async with sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, name)
        await motifs.ensure_default_motifs(db, assoc.id)
        return assoc.id


async def generate(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    association_id: int,
    sessions: int = SESSIONS,
    seed: int = 2026,
) -> int:
    async with sessionmaker.begin() as db:
        return await synthetic.generate(db, settings, association_id, sessions, seed=seed, now=NOW)


async def events(
    sessionmaker: async_sessionmaker[AsyncSession], association_id: int
) -> list[StatEvent]:
    async with sessionmaker() as db:
        rows = await db.scalars(
            select(StatEvent)
            .where(StatEvent.association_id == association_id)
            .order_by(StatEvent.id)
        )
        return list(rows)


def fingerprint(event: StatEvent) -> tuple[Any, ...]:
    return (
        event.occurred_at,
        event.kind,
        event.session_id,
        event.channel,
        event.media,
        event.duration_seconds,
        event.motif_id,
        event.reason,
        event.departement,
        event.theme,
        tuple(event.themes),
        tuple(event.organisations),
        event.outcome,
        event.autonomy,
        event.volunteer_id,
    )


@pytest.fixture
async def history(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[int, int, list[StatEvent]]:
    """(association id, events written, the events) of a generated year."""
    association_id = await new_association(sessionmaker, "Asso S")
    written = await generate(sessionmaker, settings, association_id)
    return association_id, written, await events(sessionmaker, association_id)


async def test_counts_match_and_the_same_seed_gives_the_same_history(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    association_id = await new_association(sessionmaker, "Asso D")
    written = await generate(sessionmaker, settings, association_id, SMALL)
    first = await events(sessionmaker, association_id)
    assert written == len(first)
    kinds = Counter(event.kind for event in first)
    assert kinds[EventKind.SHEET_FILED] == SMALL
    assert kinds[EventKind.SESSION_ENDED] == SMALL
    assert kinds[EventKind.BENEFICIARY_JOINED] == SMALL
    sheets = [e for e in first if e.kind == EventKind.SHEET_FILED]
    assert len({e.session_id for e in sheets}) == SMALL
    assert all(e.occurred_at < NOW for e in sheets)
    assert {e.channel for e in sheets} == {"link", "appointment", "drop_in", "callback"}
    # Volunteers: the association had none, a few demo ones were made and share the work.
    async with sessionmaker() as db:
        volunteers = set(
            await db.scalars(select(User.id).where(User.association_id == association_id))
        )
    assert len(volunteers) == len(synthetic.DEMO_VOLUNTEERS)
    assert {e.volunteer_id for e in sheets} == volunteers

    async with sessionmaker.begin() as db:
        assert await synthetic.has_history(db, association_id)
        assert await synthetic.delete_history(db, association_id) == written
        assert not await synthetic.has_history(db, association_id)
    await generate(sessionmaker, settings, association_id, SMALL)
    again = await events(sessionmaker, association_id)
    assert [fingerprint(e) for e in again] == [fingerprint(e) for e in first]

    async with sessionmaker.begin() as db:
        await synthetic.delete_history(db, association_id)
    await generate(sessionmaker, settings, association_id, SMALL, seed=7)
    other = await events(sessionmaker, association_id)
    assert [fingerprint(e) for e in other] != [fingerprint(e) for e in first]


async def test_history_is_realistic(history: tuple[int, int, list[StatEvent]]) -> None:
    """Seasons and week, départements by population, themes, organisations and outcomes."""
    _association_id, _written, rows = history
    check_seasons(rows)
    check_departements(rows)
    check_themes(rows)


def check_seasons(rows: list[StatEvent]) -> None:
    sheets = [e for e in rows if e.kind == EventKind.SHEET_FILED]
    by_month = Counter(e.occurred_at.month for e in sheets)
    assert by_month[8] < 0.6 * by_month[5]
    assert by_month[9] > by_month[8] * 2
    by_weekday = Counter(e.occurred_at.weekday() for e in sheets)
    assert by_weekday[6] < by_weekday[5] < by_weekday[0] / 2
    # Tax returns in spring: more argent_impots in May than in November.
    may = Counter(e.theme for e in sheets if e.occurred_at.month == 5)
    november = Counter(e.theme for e in sheets if e.occurred_at.month == 11)
    assert may["argent_impots"] / by_month[5] > november["argent_impots"] / by_month[11]


def check_departements(rows: list[StatEvent]) -> None:
    """Départements follow population; unmet demand marks the under-served ones."""
    sheets = [e for e in rows if e.kind == EventKind.SHEET_FILED]
    where = Counter(e.departement for e in sheets)
    assert where["59"] > where["48"]  # Nord > Lozère
    assert where["75"] > 3 * where["23"]  # Paris > Creuse
    assert 0.01 < where["99"] / SESSIONS < 0.06
    assert 0.02 < where[None] / SESSIONS < 0.09
    known = {d.code for d in geo.departements()}
    assert set(where) <= known | {"99", None}

    population = {d.code: d.population for d in geo.departements() if d.population}
    unmet = Counter(
        e.departement
        for e in rows
        if e.kind in (EventKind.NO_SLOT_FOUND, EventKind.QUEUE_LEFT, EventKind.CALLBACK_EXPIRED)
    )

    def per_capita(codes: set[str], counts: Counter[str | None]) -> float:
        return sum(counts[c] for c in codes) / sum(population[c] for c in codes)

    short = set(synthetic.UNDER_SERVED)
    rest = set(population) - short
    assert per_capita(short, unmet) > 3 * per_capita(rest, unmet)
    assert per_capita(short, where) < per_capita(rest, where)


def check_themes(rows: list[StatEvent]) -> None:
    sheets = [e for e in rows if e.kind == EventKind.SHEET_FILED]
    themes = Counter(e.theme for e in sheets)
    assert [theme for theme, _n in themes.most_common(2)] == ["social_sante", "argent_impots"]
    assert set(themes) <= set(taxonomy.THEMES)
    for sheet in sheets:
        assert sheet.theme == sheet.themes[0]
        assert set(sheet.organisations) <= set(taxonomy.ORGANISATIONS)
        allowed = set().union(*(synthetic.ORGANISATIONS[t] for t in sheet.themes))
        assert set(sheet.organisations) <= allowed and sheet.organisations
    only_taxes = [s for s in sheets if s.themes == ["argent_impots"]]
    assert Counter(o for s in only_taxes for o in s.organisations).most_common(1)[0][0] == "dgfip"
    outcomes = Counter(e.outcome for e in sheets)
    assert 0.54 < outcomes["resolved"] / SESSIONS < 0.66
    assert outcomes["partial"] > outcomes["follow_up"] > outcomes["oriented"]
    assert set(Counter(e.autonomy for e in sheets)) == set(taxonomy.AUTONOMY)
    durations = sorted(e.duration_seconds or 0 for e in sheets)
    assert 20 * 60 < durations[len(durations) // 2] < 30 * 60


async def test_history_holds_no_personal_data_and_fills_the_rollups(
    sessionmaker: async_sessionmaker[AsyncSession],
    history: tuple[int, int, list[StatEvent]],
) -> None:
    association_id, _written, rows = history
    reasons = {e.reason for e in rows} - {None}
    known_reasons = (
        {r.value for r in LeftReason}
        | set(callback_requests.OUTCOME_LABELS)
        | {"visio_link", "too_old", "unreachable"}
        | {room_vault.COPY_REASON}
        | {CHECK_FOUND, CHECK_NONE}  # rights checks, and the amount bands of what they found
        | {code for code, _low, _high in AMOUNT_BANDS}
    )
    # The vault's steps, like the real ones: categories are taxonomy codes or "non_precise".
    categories = {e.theme for e in rows if e.kind == EventKind.VAULT_DOCUMENT_ADDED}
    assert categories <= {*taxonomy.VAULT_CATEGORIES, taxonomy.VAULT_NON_PRECISE}
    assert taxonomy.VAULT_NON_PRECISE in categories and len(categories) > 3
    assert any(e.kind == EventKind.VAULT_DOCUMENT_SHOWN for e in rows)
    # Rights checks, as record_check leaves them: codes only, the same marker for all (no
    # session id of their own), about one session in six, a few benefits each.
    checks = [e for e in rows if e.kind == EventKind.RIGHTS_CHECKED]
    unclaimed = [e for e in rows if e.kind == EventKind.RIGHTS_UNCLAIMED]
    assert 0.08 * SESSIONS < len(checks) < 0.25 * SESSIONS
    assert {e.session_id for e in checks + unclaimed} == {synthetic.RIGHTS_MARKER}
    found = sum(1 for e in checks if e.reason == CHECK_FOUND)
    assert 0.3 < found / len(checks) < 0.6 and found <= len(unclaimed) <= 3 * found
    assert {e.theme for e in unclaimed} == set(BENEFITS)
    for event in unclaimed:
        bands = synthetic.RIGHTS_BANDS[event.theme or ""]
        assert event.reason in bands and (event.reason is None) == BENEFITS[event.theme].boolean
        facts = (event.duration_seconds, event.volunteer_id, event.outcome, event.themes)
        assert facts == (None, None, None, [])
    assert reasons <= known_reasons
    assert all(e.session_id and e.session_id.startswith(synthetic.MARKER) for e in rows)
    assert {e.kind for e in rows} <= {kind.value for kind in EventKind}
    # Nothing but events: no person behind them.
    async with sessionmaker() as db:
        for model in (Appointment, QueueEntry, CallbackRequest, HandoffSheet):
            assert await db.scalar(select(func.count()).select_from(model)) == 0
    # The rollups were rebuilt from the bulk insert.
    async with sessionmaker() as db:
        total = await db.scalar(
            select(func.sum(StatRollup.count)).where(
                StatRollup.association_id == association_id,
                StatRollup.kind == EventKind.SHEET_FILED.value,
                StatRollup.dim == "all",
                StatRollup.channel == "*",
                StatRollup.theme == "*",
            )
        )
        nord = await db.scalar(
            select(func.sum(StatRollup.count)).where(
                StatRollup.association_id == association_id,
                StatRollup.kind == EventKind.SHEET_FILED.value,
                StatRollup.dim == "dep",
                StatRollup.value == "59",
                StatRollup.channel == "*",
                StatRollup.theme == "*",
            )
        )
    assert total == SESSIONS
    assert nord == sum(1 for e in rows if e.kind == EventKind.SHEET_FILED and e.departement == "59")


async def test_existing_volunteers_are_used(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    association_id = await new_association(sessionmaker, "Asso V")
    async with sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, "Asso V")
        user = await accounts.create_user(
            db,
            association=assoc,
            email="seule@example.org",
            name="Seule",
            role=Role.VOLUNTEER,
            password=None,
        )
    await generate(sessionmaker, settings, association_id, sessions=50)
    sheets = [
        e for e in await events(sessionmaker, association_id) if e.kind == EventKind.SHEET_FILED
    ]
    assert {e.volunteer_id for e in sheets} == {user.id}


async def test_office_hours_and_days_are_those_of_the_deployments_zone(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    reunion = settings.model_copy(update={"timezone": "Indian/Reunion"})  # UTC+4, no DST
    association_id = await new_association(sessionmaker, "Asso R")
    await generate(sessionmaker, reunion, association_id, SMALL)
    rows = await events(sessionmaker, association_id)
    taken = [e for e in rows if e.kind == EventKind.QUEUE_TAKEN]  # at the session's start
    assert taken
    zone = ZoneInfo("Indian/Reunion")
    assert {e.occurred_at.astimezone(zone).hour for e in taken} <= set(synthetic.HOURS)
    # The rollups were rebuilt with the same zone: each sheet on its Réunion day.
    sheets = Counter(
        e.occurred_at.astimezone(zone).date() for e in rows if e.kind == EventKind.SHEET_FILED
    )
    async with sessionmaker() as db:
        days = await db.execute(
            select(StatRollup.day, StatRollup.count).where(
                StatRollup.association_id == association_id,
                StatRollup.kind == EventKind.SHEET_FILED.value,
                StatRollup.dim == "all",
                StatRollup.channel == "*",
                StatRollup.theme == "*",
            )
        )
        assert {day: count for day, count in days} == dict(sheets)


def test_allocate_splits_exactly() -> None:
    assert synthetic.allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(synthetic.allocate(1_000_003, [0.3, 1.2, 0.04, 2])) == 1_000_003
    assert synthetic.allocate(0, [1, 2]) == [0, 0]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERMANENCE_")}
    env["PERMANENCE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def test_cli_demo_with_sessions_twice_does_not_double_the_history(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    migrated = await asyncio.to_thread(_cli, data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    first = await asyncio.to_thread(_cli, data_dir, "demo", "--sessions", "500")
    assert first.returncode == 0, first.stderr
    assert "Historique synthétique : 500 assistances sur un an" in first.stdout
    assert "benevole@demo.invalid" in first.stdout
    second = await asyncio.to_thread(_cli, data_dir, "demo", "--sessions", "500")
    assert second.returncode == 0, second.stderr
    assert "Historique synthétique déjà présent" in second.stdout

    settings = load_settings({"PERMANENCE_DATA_DIR": str(data_dir)})  # what the CLI reads
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine, settings)() as db:
            sheets = await db.scalar(
                select(func.count())
                .select_from(StatEvent)
                .where(StatEvent.kind == EventKind.SHEET_FILED.value)
            )
            demo_volunteers = set(
                await db.scalars(select(User.id).where(User.role == Role.VOLUNTEER))
            )
            helpers = set(
                await db.scalars(
                    select(StatEvent.volunteer_id)
                    .where(StatEvent.kind == EventKind.SHEET_FILED.value)
                    .distinct()
                )
            )
    finally:
        await engine.dispose()
    assert sheets == 500
    assert helpers <= demo_volunteers  # the demo's own volunteers, no extra accounts

    forced = await asyncio.to_thread(_cli, data_dir, "demo", "--sessions", "200", "--force-history")
    assert forced.returncode == 0, forced.stderr
    assert "Historique synthétique : 200 assistances" in forced.stdout
