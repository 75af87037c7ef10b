"""Staff pages over HTTP on the real server: agenda, start, no-show, permanences, motifs, demo."""

from __future__ import annotations

import html
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select

from server import accounts, availability, booking, contact
from server.motifs import ensure_default_motifs
from server.store.models import Appointment, AppointmentStatus, Availability, Motif, User
from tests.conftest import (
    Account,
    Running,
    browser_session,
    csrf_from,
    login,
    make_account,
)

# One of these zones is always between 02:00 and 22:00 local: a permanence of the whole local
# day then holds "a quarter of an hour ago" and "tomorrow at the same time" whatever the hour.
ZONES = ("Europe/Paris", "Indian/Reunion", "America/Guadeloupe", "Pacific/Noumea")


def awake_zone(now: datetime) -> ZoneInfo:
    """A zone where it is day now (see ZONES), early enough that the tests' bookings up to
    three hours later still end before the permanences close at 23:55 (at 21:45 in Paris, a
    booking two hours later ran past midnight: a test failed every evening)."""
    return next(ZoneInfo(name) for name in ZONES if 2 <= now.astimezone(ZoneInfo(name)).hour <= 19)


async def open_all_week(running: Running, account: Account, tz: ZoneInfo) -> None:
    """Permanences every day 00:00–23:55 in `tz`."""
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, account.user.id)
        for weekday in range(7):
            await availability.add_availability(
                db,
                user,
                weekday=weekday,
                start_time=time(0),
                end_time=time(23, 55),
                timezone=tz.key,
            )


async def book(
    running: Running,
    starts_at: datetime,
    first_name: str,
    *,
    now: datetime,
    referrer: User | None = None,
    association: str = "Asso A",
) -> Appointment:
    """Book a follow-up through the domain, as the public pages do."""
    async with running.sessionmaker.begin() as db:
        association_id = (await accounts.get_or_create_association(db, association)).id
        motif = (await ensure_default_motifs(db, association_id))[0]
        booked = await booking.book(
            db,
            running.settings,
            association_id=association_id,
            motif_id=motif.id,
            kind="follow_up",
            starts_at=starts_at,
            contact=contact.ContactInfo(
                first_name=first_name,
                phone="06 12 34 56 78",
                needs=contact.Needs(interpreter_language="wolof"),
            ),
            via="referrer" if referrer else "public",
            referrer=referrer,
            now=now,
        )
    return booked.appointment


def quarter_before(now: datetime, minutes: int) -> datetime:
    """The quarter hour at or before `minutes` ago (every zone of ZONES has whole hours)."""
    moment = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    return moment - timedelta(minutes=moment.minute % 15)


async def page(http: aiohttp.ClientSession, running: Running, path: str) -> tuple[int, str]:
    """GET a page: status and text (entities decoded)."""
    async with http.get(running.url(path), allow_redirects=False) as resp:
        return resp.status, html.unescape(await resp.text())


async def post(
    http: aiohttp.ClientSession, running: Running, path: str, data: dict[str, str], token: str
) -> tuple[int, str, str]:
    """POST a form with its CSRF token: status, text and Location."""
    async with http.post(
        running.url(path), data={"csrf_token": token, **data}, allow_redirects=False
    ) as resp:
        return resp.status, html.unescape(await resp.text()), resp.headers.get("Location", "")


async def test_the_agenda_shows_only_the_volunteers_own_appointments(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, coordinator: Account
) -> None:
    other = await make_account(running, "sami@example.org")
    now = datetime.now(UTC)
    tz = awake_zone(now)
    await open_all_week(running, volunteer, tz)
    await open_all_week(running, other, tz)
    tomorrow = quarter_before(now, 0) + timedelta(days=1)
    # Two bookings of one slot: one for each volunteer, whoever the first one goes to.
    first = await book(running, tomorrow, "Awa", now=now)
    second = await book(running, tomorrow, "Bintou", now=now)
    mine, theirs = (first, second) if first.volunteer_id == volunteer.user.id else (second, first)
    assert {mine.volunteer_id, theirs.volunteer_id} == {volunteer.user.id, other.user.id}

    await login(http, running, volunteer)
    day = tomorrow.astimezone(tz).date().isoformat()
    status, text = await page(http, running, f"/agenda?jour={day}&vue=jour")
    assert status == 200
    assert mine.first_name in text and theirs.first_name not in text
    assert tomorrow.astimezone(tz).strftime("%H:%M") in text  # in the volunteer's own zone
    assert "CAF" in text and "Suivi" in text and "Interprète : wolof" in text
    status, text = await page(http, running, f"/agenda?jour={day}&vue=semaine")
    assert status == 200 and mine.first_name in text and theirs.first_name not in text
    status, _text = await page(http, running, f"/agenda?jour={day}&benevole={other.user.id}")
    assert status == 404

    async with await browser_session() as boss:
        await login(boss, running, coordinator)
        status, text = await page(boss, running, f"/agenda?jour={day}&benevole={other.user.id}")
        assert status == 200 and theirs.first_name in text and mine.first_name not in text
        assert "Démarrer" not in text  # only the appointment's volunteer opens its room


async def test_start_from_the_agenda_opens_the_appointments_assistance_room(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    now = datetime.now(UTC)
    tz = awake_zone(now)
    await open_all_week(running, volunteer, tz)
    started = quarter_before(now, 15)
    current = await book(running, started, "Awa", now=started - timedelta(hours=2))
    later = await book(running, started + timedelta(days=1), "Bintou", now=now)
    await login(http, running, volunteer)
    day = started.astimezone(tz).date().isoformat()
    status, text = await page(http, running, f"/agenda?jour={day}&vue=semaine")
    assert status == 200 and "Démarrer" in text
    token = csrf_from(text)

    status, _text, location = await post(
        http, running, f"/agenda/{current.id}/demarrer", {"jour": day}, token
    )
    assert status == 303 and location == f"/assistance/{current.assistance_session_id}"
    status, _text = await page(http, running, location)
    assert status == 200

    status, text, _location = await post(
        http, running, f"/agenda/{later.id}/demarrer", {"jour": day}, token
    )
    assert status == 400 and "Trop tôt" in text

    async with await browser_session() as stranger_http:
        stranger = await make_account(running, "autre@example.org", association="Asso B")
        await login(stranger_http, running, stranger)
        _status, text = await page(stranger_http, running, "/agenda")
        status, _text, _location = await post(
            stranger_http, running, f"/agenda/{current.id}/demarrer", {}, csrf_from(text)
        )
        assert status == 404


async def test_no_show_is_refused_before_the_start_and_recorded_after(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    now = datetime.now(UTC)
    tz = awake_zone(now)
    await open_all_week(running, volunteer, tz)
    started = quarter_before(now, 15)
    current = await book(running, started, "Awa", now=started - timedelta(hours=2))
    later = await book(running, started + timedelta(days=1), "Bintou", now=now)
    await login(http, running, volunteer)
    _status, text = await page(http, running, "/agenda")
    token = csrf_from(text)

    status, text, _location = await post(http, running, f"/agenda/{later.id}/absent", {}, token)
    assert status == 400 and "Le rendez-vous n'a pas encore commencé." in text
    day = started.astimezone(tz).date().isoformat()
    status, _text, location = await post(
        http, running, f"/agenda/{current.id}/absent", {"jour": day, "vue": "jour"}, token
    )
    assert status == 303 and location == f"/agenda?jour={day}&vue=jour"
    async with running.sessionmaker() as db:
        assert (await db.get_one(Appointment, current.id)).status == AppointmentStatus.NO_SHOW
        assert (await db.get_one(Appointment, later.id)).status == AppointmentStatus.BOOKED
    _status, text = await page(http, running, location)
    assert "Absent(e)" in text
    status, text, _location = await post(http, running, f"/agenda/{current.id}/absent", {}, token)
    assert status == 400 and "n'est plus prévu" in text


async def test_permanences_and_absences_are_added_and_deleted_and_bad_input_refused(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    status, text = await page(http, running, "/disponibilites")
    assert status == 200 and "La Réunion" in text and "Guadeloupe" in text
    token = csrf_from(text)
    form = {"weekday": "1", "start": "14:00", "end": "17:00", "timezone": "Indian/Reunion"}

    status, text, _location = await post(
        http, running, "/disponibilites", {**form, "end": "13:00"}, token
    )
    assert status == 400 and "L'heure de fin doit être après l'heure de début." in text
    status, text, _location = await post(
        http, running, "/disponibilites", {**form, "start": "2 pm"}, token
    )
    assert status == 400 and "Heure invalide" in text
    status, text, _location = await post(
        http, running, "/disponibilites", {**form, "timezone": "Mars/Olympus"}, token
    )
    assert status == 400 and "Fuseau horaire inconnu." in text
    status, _text, location = await post(http, running, "/disponibilites", form, token)
    assert status == 303 and location == "/disponibilites"
    status, text, _location = await post(
        http, running, "/disponibilites", {**form, "start": "16:00", "end": "18:00"}, token
    )
    assert status == 400 and "chevauche" in text

    async with running.sessionmaker() as db:
        rows = await availability.list_availabilities(db, volunteer.user.id)
    assert [(r.weekday, r.start_time, r.end_time, r.timezone) for r in rows] == [
        (1, time(14), time(17), "Indian/Reunion")
    ]
    _status, text = await page(http, running, "/disponibilites")
    assert "Mardi" in text and "14:00–17:00" in text
    status, _text, _location = await post(
        http, running, f"/disponibilites/{rows[0].id}/supprimer", {}, token
    )
    assert status == 303
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(Availability)) == 0

    today = datetime.now(ZoneInfo("Indian/Reunion")).date()
    absence = {"first_day": (today + timedelta(days=9)).isoformat(), "reason": "vacances"}
    status, text, _location = await post(
        http,
        running,
        "/disponibilites/absences",
        {**absence, "last_day": today.isoformat()},
        token,
    )
    assert status == 400 and "Le dernier jour doit être après le premier jour." in text
    status, _text, _location = await post(
        http,
        running,
        "/disponibilites/absences",
        {**absence, "last_day": (today + timedelta(days=20)).isoformat()},
        token,
    )
    assert status == 303
    async with running.sessionmaker() as db:
        absences = await availability.list_exceptions(db, volunteer.user.id)
    assert len(absences) == 1 and absences[0].reason == "vacances"
    _status, text = await page(http, running, "/disponibilites")
    assert "vacances" in text
    status, _text, _location = await post(
        http, running, f"/disponibilites/absences/{absences[0].id}/supprimer", {}, token
    )
    assert status == 303
    status, _text, _location = await post(
        http, running, f"/disponibilites/absences/{absences[0].id}/supprimer", {}, token
    )
    assert status == 404


async def test_motifs_are_managed_by_the_coordinator_only(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, coordinator: Account
) -> None:
    await login(http, running, volunteer)
    status, text = await page(http, running, "/motifs")
    assert status == 403
    _status, text = await page(http, running, "/agenda")
    status, _text, _location = await post(
        http, running, "/motifs", {"name": "Piraté", "first_visit_minutes": "60"}, csrf_from(text)
    )
    assert status == 403

    async with await browser_session() as boss:
        await login(boss, running, coordinator)
        status, text = await page(boss, running, "/motifs")
        assert status == 200 and "ameli / CPAM" in text  # the default list, at first visit
        token = csrf_from(text)
        form = {
            "name": "Chèque énergie",
            "description": "Demande en ligne",
            "first_visit_minutes": "45",
            "follow_up_minutes": "20",
        }
        status, text, _location = await post(
            boss, running, "/motifs", {**form, "first_visit_minutes": "quarante"}, token
        )
        assert status == 400 and "multiple de 5 minutes" in text
        status, text, _location = await post(
            boss, running, "/motifs", {**form, "name": "CAF"}, token
        )
        assert status == 400 and "Un motif porte déjà ce nom." in text
        status, _text, location = await post(boss, running, "/motifs", form, token)
        assert status == 303 and location == "/motifs"
        async with running.sessionmaker() as db:
            motif = await db.scalar(select(Motif).where(Motif.name == "Chèque énergie"))
        assert motif is not None and motif.first_visit_minutes == 45

        status, _text, _location = await post(
            boss, running, f"/motifs/{motif.id}", {**form, "follow_up_minutes": "25"}, token
        )
        assert status == 303
        status, _text, _location = await post(
            boss, running, f"/motifs/{motif.id}/desactiver", {}, token
        )
        assert status == 303
        async with running.sessionmaker() as db:
            changed = await db.get_one(Motif, motif.id)
            assert changed.follow_up_minutes == 25 and not changed.is_active
        _status, text = await page(boss, running, "/motifs")
        assert "désactivé" in text
        status, _text, _location = await post(
            boss, running, f"/motifs/{motif.id}/reactiver", {}, token
        )
        assert status == 303
        async with running.sessionmaker() as db:
            assert (await db.get_one(Motif, motif.id)).is_active
        status, _text, _location = await post(boss, running, "/motifs/999999/desactiver", {}, token)
        assert status == 404


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


def test_the_demo_adds_motifs_permanences_and_a_referrer_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    assert _cli(data_dir, "migrate").returncode == 0
    counts = []
    for _run in range(2):
        result = _cli(data_dir, "demo")
        assert result.returncode == 0, result.stderr
        assert "referent@demo.invalid" in result.stdout
        assert "demo-referent-2026" in result.stdout
        with sqlite3.connect(data_dir / "permanence.sqlite3") as conn:
            counts.append(
                [
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                    for table in ("users", "motifs", "availabilities", "partners")
                ]
            )
            zones = {row[0] for row in conn.execute("SELECT timezone FROM availabilities")}
            referrer = conn.execute(
                "SELECT u.role, p.name FROM users u JOIN partners p ON p.id = u.partner_id"
                " WHERE u.email = 'referent@demo.invalid'"
            ).fetchone()
    assert counts[0] == counts[1]
    assert counts[0][1] == 10 and counts[0][2] == 10 + 6 and counts[0][3] == 1
    assert zones == {"Europe/Paris", "Indian/Reunion"}
    assert referrer == ("referrer", "CCAS démo")
