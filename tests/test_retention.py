"""Retention: personal data past PERMANENCE_RETENTION_MONTHS is purged (by the worker and by
`permanence purge`), statistics stay. Real databases (SQLite and PostgreSQL), real CLI."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts, motifs, retention
from server.db import make_sessionmaker
from server.notify import Notifier
from server.settings import Settings, load_settings
from server.store.engine import make_engine
from server.store.models import (
    Appointment,
    AssistanceSession,
    CallbackAttempt,
    CallbackRequest,
    CallbackStatus,
    HandoffSheet,
    OutboxMessage,
    OutboxStatus,
    QueueEntry,
    QueueStatus,
    RightsCheck,
    Role,
    StatEvent,
    StatRollup,
    VisitKind,
    WaitlistEntry,
)
from server.worker import Worker

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=400)  # past the default 12 months
RECENT = NOW - timedelta(days=30)


def _hash() -> str:
    return secrets.token_hex(32)


@dataclass
class Person:
    """One person's records in every table holding personal data."""

    appointment: str
    waitlist: int
    outbox: int
    queue: str
    callback: str
    attempt: int
    session: str
    sheet: str


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A sessionmaker on the test database (created by the settings fixture)."""
    engine = make_engine(settings.database_url)
    try:
        yield make_sessionmaker(engine, settings)
    finally:
        await engine.dispose()


@pytest.fixture
async def place(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int, int]:
    """(association id, volunteer id, motif id)."""
    async with sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, "Asso R")
        user = await accounts.create_user(
            db,
            association=assoc,
            email="vol@example.org",
            name="Vol",
            role=Role.VOLUNTEER,
            password=None,
        )
        [motif, *_rest] = await motifs.ensure_default_motifs(db, assoc.id)
        return assoc.id, user.id, motif.id


async def make_person(
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
    at: datetime,
    *,
    follow_up_on: date | None = None,
) -> Person:
    """Someone last in contact at ``at``: an appointment, a waitlist entry, an e-mail, a queue
    entry, a call-back with one attempt, a session and its handoff sheet."""
    association_id, volunteer_id, motif_id = place
    async with sessionmaker.begin() as db:
        session = AssistanceSession(
            association_id=association_id,
            volunteer_id=volunteer_id,
            token_salt="s",
            join_token_hash=_hash(),
            beneficiary_name="Josiane",
            created_at=at,
            expires_at=at + timedelta(hours=4),
            ended_at=at + timedelta(minutes=30),
        )
        db.add(session)
        await db.flush()
        appointment = Appointment(
            association_id=association_id,
            volunteer_id=volunteer_id,
            motif_id=motif_id,
            kind=VisitKind.FIRST,
            starts_at=at,
            ends_at=at + timedelta(hours=1),
            first_name="Josiane",
            phone="+33612345678",
            email="josiane@example.org",
            postal_code="59000",
            description="Mon compte CAF est bloqué",
            needs={"interpreter_language": "arabe", "hearing": True, "first_time_computer": False},
            manage_token_hash=_hash(),
            assistance_session_id=session.id,
            created_at=at - timedelta(days=3),
        )
        db.add(appointment)
        await db.flush()
        waitlist = WaitlistEntry(
            association_id=association_id,
            motif_id=motif_id,
            appointment_id=appointment.id,
            first_name="Josiane",
            phone="+33612345678",
            email="josiane@example.org",
            created_at=at - timedelta(days=3),
        )
        outbox = OutboxMessage(
            idempotency_key=_hash(),
            channel="email",
            recipient="josiane@example.org",
            subject="Votre rendez-vous",
            body="Bonjour Josiane",
            attachments=[{"filename": "rdv.ics", "content": "BEGIN:VCALENDAR"}],
            status=OutboxStatus.SENT,
            appointment_id=appointment.id,
            created_at=at - timedelta(days=3),
            send_after=at - timedelta(days=3),
            sent_at=at - timedelta(days=3),
        )
        queue = QueueEntry(
            association_id=association_id,
            motif_id=motif_id,
            first_name="Josiane",
            postal_code="59000",
            token_hash=_hash(),
            status=QueueStatus.TAKEN,
            created_at=at,
            queued_at=at,
            last_seen_at=at,
            ended_at=at + timedelta(minutes=5),
        )
        callback = CallbackRequest(
            association_id=association_id,
            motif_id=motif_id,
            first_name="Josiane",
            phone="+33612345678",
            email="josiane@example.org",
            postal_code="59000",
            message="Rappelez-moi le matin",
            cancel_token_hash=_hash(),
            status=CallbackStatus.RESOLVED,
            outcome="helped",
            created_at=at - timedelta(days=1),
            closed_at=at,
        )
        db.add_all([waitlist, outbox, queue, callback])
        await db.flush()
        attempt = CallbackAttempt(
            callback_id=callback.id, volunteer_id=volunteer_id, outcome="helped", created_at=at
        )
        sheet = HandoffSheet(
            association_id=association_id,
            volunteer_id=volunteer_id,
            assistance_session_id=session.id,
            channel="appointment",
            themes=["social_sante"],
            organisations=["caf"],
            autonomy="with_help",
            outcome="follow_up",
            actions_done="Mot de passe CAF réinitialisé avec Josiane",
            orientation_partner="CCAS de Lille, Mme Martin",
            orientation_contact="03 20 00 00 00",
            next_steps="Envoyer l'attestation",
            follow_up_on=follow_up_on,
            postal_code="59000",
            shared_with_volunteers=True,
            person_key=_hash(),
            read_token_hash=_hash(),
            created_at=at,
            updated_at=at,
        )
        db.add_all([attempt, sheet])
        await db.flush()
        db.add(
            RightsCheck(
                association_id=association_id,
                volunteer_id=volunteer_id,
                assistance_session_id=session.id,
                handoff_sheet_id=sheet.id,
                period=f"{at:%Y-%m}",
                model_version="176.1.8",
                departement="59",
                answers={"postal_code": "59000", "housing": "hosted"},
                keep_answers=True,  # the person agreed: they go with the sheet
                results=[{"code": "rsa", "verdict": "likely", "amount": 569, "reason": "likely"}],
                on_sheet=True,
                created_at=at,
                updated_at=at,
                settled_at=at,
            )
        )
        db.add(
            StatEvent(
                occurred_at=at,
                kind="sheet_filed",
                association_id=association_id,
                channel="appointment",
                departement="59",
                theme="social_sante",
                themes=["social_sante"],
                organisations=["caf"],
                outcome="follow_up",
                autonomy="with_help",
                volunteer_id=volunteer_id,
            )
        )
        await db.flush()
        return Person(
            appointment.id,
            waitlist.id,
            outbox.id,
            queue.id,
            callback.id,
            attempt.id,
            session.id,
            sheet.id,
        )


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, **kwargs: Any
) -> retention.PurgeReport:
    async with sessionmaker() as db:
        return await retention.purge(db, settings, NOW, **kwargs)


async def snapshot(
    sessionmaker: async_sessionmaker[AsyncSession], person: Person
) -> dict[str, Any]:
    """Every personal column of a person's records (None for a deleted row)."""
    async with sessionmaker() as db:
        a = await db.get_one(Appointment, person.appointment)
        w = await db.get(WaitlistEntry, person.waitlist)
        o = await db.get(OutboxMessage, person.outbox)
        q = await db.get_one(QueueEntry, person.queue)
        c = await db.get_one(CallbackRequest, person.callback)
        s = await db.get_one(AssistanceSession, person.session)
        h = await db.get_one(HandoffSheet, person.sheet)
        attempt = await db.get(CallbackAttempt, person.attempt)
        return {
            "appointment": (a.first_name, a.phone, a.email, a.postal_code, a.description, a.needs),
            "appointment_facts": (a.status, a.motif_id, a.starts_at, a.assistance_session_id),
            "waitlist": w and (w.first_name, w.phone, w.email),
            "outbox": o and (o.recipient, o.subject, o.body, o.attachments),
            "queue": (q.first_name, q.postal_code),
            "queue_facts": (q.status, q.motif_id, q.ended_at),
            "callback": (c.first_name, c.phone, c.email, c.postal_code, c.message),
            "callback_facts": (c.status, c.outcome, c.closed_at),
            "attempt": attempt and attempt.outcome,
            "session": s.beneficiary_name,
            "sheet": (
                h.actions_done,
                h.orientation_partner,
                h.orientation_contact,
                h.next_steps,
                h.postal_code,
                h.person_key,
                h.shared_with_volunteers,
                h.purged_at,
            ),
            "sheet_facts": (h.themes, h.organisations, h.autonomy, h.outcome, h.channel),
        }


async def statistics(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[list[Any], ...]:
    """Every stat_events and stat_rollups row, as plain tuples."""
    async with sessionmaker() as db:
        events = (await db.execute(select(StatEvent.__table__).order_by(StatEvent.id))).all()
        rollups = (await db.execute(select(StatRollup.__table__))).all()
    return [tuple(row) for row in events], sorted(tuple(map(str, row)) for row in rollups)


async def test_purge_removes_old_personal_data_and_keeps_recent_records_and_statistics(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    old = await make_person(sessionmaker, place, OLD)
    recent = await make_person(sessionmaker, place, RECENT)
    recent_before = await snapshot(sessionmaker, recent)
    old_before = await snapshot(sessionmaker, old)
    stats_before = await statistics(sessionmaker)

    report = await purge(sessionmaker, settings)

    assert report.counts == {
        "appointments": 1,
        "waitlist": 1,
        "outbox": 1,
        "queue_entries": 1,
        "callback_requests": 1,
        "assistance_sessions": 1,
        "handoff_sheets": 1,
        "notification_files": 0,
        "vault_notices": 0,
        "vaults": 0,
        "trustee_codes": 0,
        "vault_recovery_requests": 0,
        "vault_orphan_blobs": 0,
        # The old sheet's rights check goes with the sheet (settled long ago: no new count).
        "rights_checks_settled": 0,
        "rights_answers_forgotten": 0,
        "rights_checks": 1,
    }
    async with sessionmaker() as db:
        kept = (await db.scalars(select(RightsCheck.handoff_sheet_id))).all()
    assert kept == [recent.sheet]
    after = await snapshot(sessionmaker, old)
    assert after["appointment"] == ("", None, None, None, None, {})
    assert after["waitlist"] is None
    assert after["outbox"] is None
    assert after["queue"] == (None, None)
    assert after["callback"] == (None, "", None, None, None)
    assert after["session"] is None
    *cleared, purged_at = after["sheet"]
    assert cleared == [None, None, None, None, None, None, False]
    assert purged_at == NOW
    # Coded facts stay: they carry no personal data.
    for facts in ("appointment_facts", "queue_facts", "callback_facts", "sheet_facts", "attempt"):
        assert after[facts] == old_before[facts]
    # A recent contact keeps everything.
    assert await snapshot(sessionmaker, recent) == recent_before
    # Statistics events and their rollups are untouched.
    assert await statistics(sessionmaker) == stats_before


async def test_a_follow_up_date_still_ahead_keeps_an_old_sheet(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    ahead = await make_person(sessionmaker, place, OLD, follow_up_on=NOW.date() + timedelta(10))
    report = await purge(sessionmaker, settings)
    assert report.counts["handoff_sheets"] == 0
    sheet = (await snapshot(sessionmaker, ahead))["sheet"]
    assert sheet[0] == "Mot de passe CAF réinitialisé avec Josiane" and sheet[-1] is None
    # The rest of that person's old records go.
    assert report.counts["appointments"] == 1


async def test_dry_run_reports_and_changes_nothing(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    old = await make_person(sessionmaker, place, OLD)
    before = await snapshot(sessionmaker, old)
    report = await purge(sessionmaker, settings, dry_run=True)
    assert report.dry_run and report.counts["appointments"] == 1 and report.total == 8
    assert await snapshot(sessionmaker, old) == before
    assert "  Rendez-vous : 1 à anonymiser" in retention.describe(report)


async def test_purge_works_in_chunks_and_a_second_run_finds_nothing(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    people = [await make_person(sessionmaker, place, OLD - timedelta(days=i)) for i in range(5)]
    report = await purge(sessionmaker, settings, chunk_size=2)
    assert report.counts["appointments"] == 5 and report.counts["handoff_sheets"] == 5
    first = [await snapshot(sessionmaker, person) for person in people]
    again = await purge(sessionmaker, settings, chunk_size=2)
    assert again.total == 0
    assert [await snapshot(sessionmaker, person) for person in people] == first
    lines = retention.describe(report)
    assert "  Rendez-vous : 5 anonymisés" in lines
    assert "  Inscriptions en liste d'attente : 5 supprimées" in lines


async def test_retention_months_setting_moves_the_cutoff(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    await make_person(sessionmaker, place, NOW - timedelta(days=45))
    await make_person(sessionmaker, place, NOW - timedelta(days=20))
    short = settings.model_copy(update={"retention_months": 1})
    report = await purge(sessionmaker, short)
    assert report.cutoff == datetime(2026, 10, 25, 10, tzinfo=UTC)
    assert report.counts["appointments"] == 1


def test_months_before_clamps_to_the_end_of_the_month() -> None:
    assert retention.months_before(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, tzinfo=UTC
    )
    assert retention.months_before(datetime(2026, 1, 15, tzinfo=UTC), 12) == datetime(
        2025, 1, 15, tzinfo=UTC
    )


async def test_old_notification_files_are_deleted(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    mail = settings.data_dir / "mail"
    mail.mkdir(parents=True)
    old, recent = mail / "old-1.eml", mail / "recent-2.eml"
    for path in (old, recent):
        path.write_text("To: josiane@example.org\n")
    os.utime(old, (OLD.timestamp(), OLD.timestamp()))
    os.utime(recent, (RECENT.timestamp(), RECENT.timestamp()))
    assert (await purge(sessionmaker, settings, dry_run=True)).counts["notification_files"] == 1
    assert old.exists()
    assert (await purge(sessionmaker, settings)).counts["notification_files"] == 1
    assert not old.exists() and recent.exists()


async def test_the_worker_runs_the_purge_after_its_start_up_delay(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    place: tuple[int, int, int],
) -> None:
    old = await make_person(sessionmaker, place, OLD)
    notifier = Notifier.from_settings(settings)
    worker = Worker(
        sessionmaker,
        notifier,
        poll_seconds=60,
        settings=settings,
        clock=lambda: NOW,
        retention_delay=timedelta(0),
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.purged.wait(), 30)
    finally:
        worker.stop()
        await task
        await notifier.close()
    assert worker.last_purge is not None and worker.last_purge.counts["appointments"] == 1
    assert (await snapshot(sessionmaker, old))["session"] is None


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERMANENCE_")}
    env["PERMANENCE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_cli_purge_dry_run_then_purge(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    migrated = await asyncio.to_thread(_cli, data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    settings = load_settings({"PERMANENCE_DATA_DIR": str(data_dir)})  # what the CLI reads
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine, settings)
    try:
        async with sessionmaker.begin() as db:
            assoc = await accounts.get_or_create_association(db, "Asso CLI")
            user = await accounts.create_user(
                db,
                association=assoc,
                email="v@example.org",
                name="V",
                role=Role.VOLUNTEER,
                password=None,
            )
            [motif, *_rest] = await motifs.ensure_default_motifs(db, assoc.id)
        # "Old" relative to the real clock the CLI uses.
        long_ago = datetime.now(UTC) - timedelta(days=400)
        old = await make_person(sessionmaker, (assoc.id, user.id, motif.id), long_ago)
        before = await snapshot(sessionmaker, old)

        dry = await asyncio.to_thread(_cli, data_dir, "purge", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "Simulation" in dry.stdout
        assert "Rendez-vous : 1 à anonymiser" in dry.stdout
        assert "Fiches navette : 1 à anonymiser" in dry.stdout
        assert await snapshot(sessionmaker, old) == before

        done = await asyncio.to_thread(_cli, data_dir, "purge")
        assert done.returncode == 0, done.stderr
        assert "Rendez-vous : 1 anonymisé" in done.stdout
        assert "Messages (e-mails, SMS) : 1 supprimé" in done.stdout
        assert (await snapshot(sessionmaker, old))["appointment"][0] == ""
    finally:
        await engine.dispose()
