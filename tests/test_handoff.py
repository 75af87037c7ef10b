"""Handoff sheets (fiches navette) through the real pages, SQLite and PostgreSQL: the form after
ending an assistance, French refusals that keep what was typed, one statistics event with coded
facts only, edits, the beneficiary's readings (pass cookie, link, queue place, manage link), the
referrer's and coordinator's, earlier sheets only when shared, call-backs, access refusals."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select, update
from yarl import URL

from server import assist, booking, callback_requests, contact, handoff
from server.callback_requests import CallbackForm
from server.motifs import ensure_default_motifs
from server.notify import appointments as notifications
from server.notify.outbox import appointment_key
from server.passes import QUEUE_COOKIE
from server.ratelimit import RATELIMIT_KEY
from server.stats.events import EventKind
from server.store.models import (
    Appointment,
    AssistanceSession,
    Association,
    CallbackRequest,
    HandoffSheet,
    OutboxMessage,
    QueueEntry,
    QueueStatus,
    Role,
    StatEvent,
    User,
    utcnow,
)
from server.tokens import sha256_hex
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    entered_room,
    login,
    make_account,
)
from tests.test_agenda import awake_zone, open_all_week, quarter_before

PARIS = ZoneInfo("Europe/Paris")
DONE_TEXT = "Mot de passe CAF refait ensemble, attestation téléchargée."
NEXT_TEXT = "Envoyer la photo de votre avis d'impôt à la CAF avant vendredi."
SHEET_LINK = re.compile(r"/fiche/([A-Za-z0-9_-]{20,})")
JOIN_LINK = re.compile(r"http://[^ ]+/j/[A-Za-z0-9_-]+(?:\?v=[A-Za-z0-9_-]+)?")


def text_of(page: str) -> str:
    """Page text with entities decoded, for French assertions."""
    return html.unescape(page)


def today() -> date:
    """Today where the sheets are dated (the settings' zone)."""
    return datetime.now(PARIS).date()


def sheet_data(**values: str | list[str]) -> dict[str, str | list[str]]:
    """The sheet form as a volunteer fills it."""
    data: dict[str, str | list[str]] = {
        "themes": ["argent_impots", "social_sante"],
        "organisations": ["caf", "dgfip"],
        "autonomy": "with_help",
        "outcome": "follow_up",
        "actions_done": DONE_TEXT,
        "next_steps": NEXT_TEXT,
        "orientation_partner": "Point Justice de Marseille",
        "orientation_contact": "04 91 00 00 00",
        "follow_up_on": (today() + timedelta(days=7)).isoformat(),
        "postal_code": "13008",
        "shared_with_volunteers": "1",
    }
    data.update(values)
    return data


def form_body(csrf: str, data: dict[str, str | list[str]]) -> list[tuple[str, str]]:
    """Form fields as pairs (checkboxes repeat their name)."""
    pairs = [("csrf_token", csrf)]
    for name, value in data.items():
        for item in [value] if isinstance(value, str) else value:
            pairs.append((name, item))
    return pairs


async def get(http: aiohttp.ClientSession, running: Running, path: str) -> tuple[int, str]:
    """GET without following redirects: status and decoded text."""
    async with http.get(running.url(path), allow_redirects=False) as resp:
        return resp.status, text_of(await resp.text())


async def file_sheet(
    http: aiohttp.ClientSession, running: Running, path: str, **values: str | list[str]
) -> tuple[int, str]:
    """Open the sheet form at `path`, fill it, send it: status and page text."""
    async with http.get(running.url(path)) as resp:
        assert resp.status == 200, await resp.text()
        csrf = csrf_from(await resp.text())
    async with http.post(
        running.url(path), data=form_body(csrf, sheet_data(**values)), allow_redirects=False
    ) as resp:
        return resp.status, text_of(await resp.text())


async def end_assistance(http: aiohttp.ClientSession, running: Running, session_id: str) -> str:
    """Click "Terminer l'assistance" in the room; where the browser is sent."""
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        csrf = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/end"),
        data={"csrf_token": csrf},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        return resp.headers["Location"]


async def join_as_beneficiary(
    http: aiohttp.ClientSession, running: Running, session_id: str
) -> None:
    """Open the session's join link: the browser gets the pass cookie; mark the person came."""
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        link = assist.link_for(running.settings, session)
        session.beneficiary_joined_at = utcnow() - timedelta(minutes=20)
        session.first_media_at = utcnow() - timedelta(minutes=19)
    async with http.get(link, allow_redirects=False) as resp:
        await entered_room(resp)


async def sheets(running: Running) -> list[HandoffSheet]:
    """Every stored sheet."""
    async with running.sessionmaker() as db:
        return list(await db.scalars(select(HandoffSheet)))


async def filed_events(running: Running) -> list[StatEvent]:
    """The `sheet_filed` statistics events."""
    async with running.sessionmaker() as db:
        rows = await db.scalars(select(StatEvent).where(StatEvent.kind == EventKind.SHEET_FILED))
        return list(rows)


async def all_event_values(running: Running) -> str:
    """Every value of every statistics event, as one text (to look for personal data)."""
    async with running.sessionmaker() as db:
        rows = await db.scalars(select(StatEvent))
        return " ".join(
            repr([getattr(event, c.key) for c in StatEvent.__table__.columns]) for event in rows
        )


async def staff(
    running: Running, email: str, role: Role = Role.VOLUNTEER, asso: str = "Asso A"
) -> tuple[Account, aiohttp.ClientSession]:
    """A logged-in browser of a new account: (account, browser)."""
    account = await make_account(running, email, role, asso)
    http = await browser_session()
    await login(http, running, account)
    return account, http


async def book_for(
    running: Running,
    volunteer: Account,
    *,
    days: int,
    phone: str = "06 12 34 56 78",
    referrer: User | None = None,
) -> booking.Booked:
    """An appointment in `days` days with this volunteer (the only one of the association)."""
    now = datetime.now(UTC)
    async with running.sessionmaker.begin() as db:
        association_id = volunteer.user.association_id
        motif = (await ensure_default_motifs(db, association_id))[0]
        return await booking.book(
            db,
            running.settings,
            association_id=association_id,
            motif_id=motif.id,
            kind="follow_up",
            starts_at=quarter_before(now, 0) + timedelta(days=days),
            contact=contact.ContactInfo(
                first_name="Awa", phone=phone, postal_code="13008"
            ).validated(),
            via="referrer" if referrer else "public",
            referrer=referrer,
            now=now,
        )


# -- Filing after an assistance ----------------------------------------------------------------


async def test_ending_an_assistance_opens_the_sheet_and_filing_records_one_coded_event(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    beneficiary = await browser_session()
    try:
        await join_as_beneficiary(beneficiary, running, session_id)
    finally:
        await beneficiary.close()
    assert await end_assistance(http, running, session_id) == f"/assistance/{session_id}/fiche"

    # Not filed yet: the dashboard lists it under "Fiches à remplir"; "Passer" is offered.
    status, page = await get(http, running, "/tableau")
    assert "Fiches à remplir" in page and f"/assistance/{session_id}/fiche" in page
    status, page = await get(http, running, f"/assistance/{session_id}/fiche")
    assert status == 200 and "Passer" in page and 'value="caf"' in page

    status, page = await file_sheet(http, running, f"/assistance/{session_id}/fiche")
    assert status == 200 and "Fiche enregistrée" in page, page
    assert SHEET_LINK.search(page)
    [sheet] = await sheets(running)
    assert sheet.assistance_session_id == session_id and sheet.channel == "link"
    assert sheet.themes == ["social_sante", "argent_impots"]  # the taxonomy's order
    assert sheet.organisations == ["caf", "dgfip"]
    assert (sheet.autonomy, sheet.outcome) == ("with_help", "follow_up")
    assert sheet.actions_done == DONE_TEXT and sheet.next_steps == NEXT_TEXT
    assert sheet.follow_up_on == today() + timedelta(days=7)
    assert sheet.postal_code == "13008" and sheet.shared_with_volunteers
    assert sheet.person_key is None  # a plain link says nothing about who the person is
    assert len(sheet.read_token_hash) == 64
    assert sheet.read_token_hash == sha256_hex(SHEET_LINK.search(page).group(1))  # type: ignore[union-attr]

    [event] = await filed_events(running)
    assert event.session_id == session_id and event.channel == "link"
    assert event.departement == "13"
    assert event.themes == ["social_sante", "argent_impots"] and event.theme == "social_sante"
    assert event.organisations == ["caf", "dgfip"]
    assert (event.outcome, event.autonomy) == ("follow_up", "with_help")
    assert event.volunteer_id == volunteer.user.id
    assert event.duration_seconds is not None and 18 * 60 <= event.duration_seconds <= 20 * 60
    everything = await all_event_values(running)
    for private in ("13008", "Point Justice", "04 91", "CAF refait", "avis d'impôt"):
        assert private not in everything

    # The dashboard no longer asks for it; a second save edits, without a second event.
    status, page = await get(http, running, "/tableau")
    assert "Fiches à remplir" not in page
    status, page = await get(http, running, f"/assistance/{session_id}/fiche")
    assert "Modifier la fiche" in page and NEXT_TEXT.replace("'", "&#39;") not in page
    assert "avant vendredi" in page  # the stored text fills the form
    status, page = await file_sheet(
        http, running, f"/assistance/{session_id}/fiche", outcome="resolved", next_steps=""
    )
    assert status == 200 and "Fiche modifiée" in page and not SHEET_LINK.search(page)
    [sheet] = await sheets(running)
    assert sheet.outcome == "resolved" and sheet.next_steps is None
    assert len(await filed_events(running)) == 1


async def test_bad_input_is_refused_in_french_and_keeps_what_was_typed(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    await end_assistance(http, running, session_id)
    path = f"/assistance/{session_id}/fiche"

    status, page = await file_sheet(http, running, path, themes=[], outcome="")
    assert status == 400
    assert "Cochez au moins un thème." in page and "Choisissez où en est la démarche." in page
    assert DONE_TEXT in page and 'value="caf" checked' in page and 'value="13008"' in page
    assert 'value="with_help" required checked' in page

    status, page = await file_sheet(http, running, path, postal_code="ABCDE")
    assert status == 400 and "Le code postal a 5 chiffres" in page and 'value="ABCDE"' in page
    past = (today() - timedelta(days=2)).isoformat()
    status, page = await file_sheet(http, running, path, follow_up_on=past)
    assert status == 400 and "La date de suivi est passée." in page
    far = (today() + timedelta(days=400)).isoformat()
    status, page = await file_sheet(http, running, path, follow_up_on=far)
    assert status == 400 and "plus d'un an" in page
    status, page = await file_sheet(http, running, path, follow_up_on="demain")
    assert status == 400 and "Date de suivi incomprise" in page
    status, page = await file_sheet(http, running, path, next_steps="x" * 1001)
    assert status == 400 and "trop long" in page
    status, page = await file_sheet(http, running, path, themes=["nope"], autonomy="maybe")
    assert status == 400 and "Dites comment la personne a fait." in page
    assert await sheets(running) == [] and await filed_events(running) == []

    # A postal code we cannot place still counts, under "99"; it is never in the event.
    status, page = await file_sheet(http, running, path, postal_code=" 99 999 ")
    assert status == 200, page
    [event] = await filed_events(running)
    assert event.departement == "99"
    assert "99999" not in await all_event_values(running)


# -- The beneficiary --------------------------------------------------------------------------


async def test_beneficiary_reads_the_sheet_with_the_pass_cookie_and_the_link(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    beneficiary = await browser_session()
    stranger = await browser_session()
    try:
        await join_as_beneficiary(beneficiary, running, session_id)
        await end_assistance(http, running, session_id)
        status, page = await get(beneficiary, running, "/b/fiche")
        assert status == 200 and "La fiche arrive bientôt" in page

        status, page = await file_sheet(http, running, f"/assistance/{session_id}/fiche")
        token = SHEET_LINK.search(page).group(1)  # type: ignore[union-attr]

        status, page = await get(beneficiary, running, "/b/fiche")
        assert status == 200 and NEXT_TEXT in page and DONE_TEXT in page
        assert "Argent, impôts" in page and "Impôts (DGFiP)" in page
        assert "Point Justice de Marseille" in page and "Imprimer" in page
        assert "window.print" not in page and "js/handoff.js" in page  # no inline script

        status, page = await get(stranger, running, f"/fiche/{token}")
        assert status == 200 and NEXT_TEXT in page
        for path in ("/b/fiche", "/fiche/" + "A" * 32, "/aide/fiche"):
            status, page = await get(stranger, running, path)
            assert status == 404 and "Cette fiche est introuvable" in page, path
            assert NEXT_TEXT not in page

        # Withdrawing the agreement, from the link (CSRF checked).
        async with stranger.post(
            running.url(f"/fiche/{token}/partage"), data={"share": "0"}, allow_redirects=False
        ) as resp:
            assert resp.status == 403
        status, page = await get(stranger, running, f"/fiche/{token}")
        async with stranger.post(
            running.url(f"/fiche/{token}/partage"),
            data={"share": "0", "csrf_token": csrf_from(page)},
        ) as resp:
            assert resp.status == 200
            assert "ne verront plus cette fiche" in text_of(await resp.text())
        [sheet] = await sheets(running)
        assert not sheet.shared_with_volunteers
    finally:
        await beneficiary.close()
        await stranger.close()


async def test_the_drop_in_person_reads_their_sheet_with_their_queue_cookie(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    token = "queue-token-" + "q" * 30
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(AssistanceSession)
            .where(AssistanceSession.id == session_id)
            .values(channel="drop_in")
        )
        db.add(
            QueueEntry(
                association_id=volunteer.user.association_id,
                postal_code="69003",
                token_hash=sha256_hex(token),
                status=QueueStatus.TAKEN,
                assistance_session_id=session_id,
            )
        )
    await end_assistance(http, running, session_id)
    status, page = await get(http, running, f"/assistance/{session_id}/fiche")
    assert 'value="69003"' in page  # prefilled from the queue place
    person = await browser_session()
    try:
        person.cookie_jar.update_cookies({QUEUE_COOKIE: token}, URL(running.base_url))
        status, page = await get(person, running, "/aide/fiche")
        assert status == 200 and "La fiche arrive bientôt" in page
        await file_sheet(http, running, f"/assistance/{session_id}/fiche", postal_code="69003")
        status, page = await get(person, running, "/aide/fiche")
        assert status == 200 and NEXT_TEXT in page
    finally:
        await person.close()
    [event] = await filed_events(running)
    assert event.channel == "drop_in" and event.departement == "69"


# -- Appointments: the person's link, the referrer, access ------------------------------------


async def test_appointment_sheet_is_sent_to_the_person_and_shown_to_its_referrer_only(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await open_all_week(running, volunteer, awake_zone(datetime.now(UTC)))
    referrer, referrer_http = await staff(running, "ref@example.org", Role.REFERRER)
    _other_ref, other_ref_http = await staff(running, "ref2@example.org", Role.REFERRER)
    _other_vol, other_vol_http = await staff(running, "sami@example.org")
    _coord, coord_http = await staff(running, "nadia@example.org", Role.COORDINATOR)
    _far_coord, far_coord_http = await staff(running, "zoe@example.org", Role.COORDINATOR, "B")
    try:
        booked = await book_for(running, volunteer, days=1, referrer=referrer.user)
        appointment, session_id = booked.appointment, booked.session.id
        await login(http, running, volunteer)
        status, page = await get(referrer_http, running, "/mes-reservations")
        assert "Voir la fiche" not in page
        await end_assistance(http, running, session_id)
        path = f"/assistance/{session_id}/fiche"
        status, page = await get(http, running, path)
        assert 'value="13008"' in page and "Awa" in page  # prefilled from the booking

        # Nobody else fills it: another volunteer, a coordinator, a referrer.
        for other, expected in ((other_vol_http, 404), (coord_http, 404), (referrer_http, 403)):
            status, _page = await get(other, running, path)
            assert status == expected
        status, page = await file_sheet(http, running, path, shared_with_volunteers="")
        assert status == 200 and "par SMS ou e-mail" in page

        [sheet] = await sheets(running)
        assert sheet.channel == "appointment"
        # Never linked to the person: they did not come through the link sent to their phone.
        assert sheet.person_key is None
        async with running.sessionmaker() as db:
            message = await db.scalar(
                select(OutboxMessage).where(
                    OutboxMessage.idempotency_key == f"sheet:{sheet.id}:sms"
                )
            )
        assert message is not None and message.recipient == "+33612345678"
        assert "/fiche/" in message.body and NEXT_TEXT not in message.body
        token = SHEET_LINK.search(message.body).group(1)  # type: ignore[union-attr]
        status, page = await get(other_ref_http, running, f"/fiche/{token}")
        assert status == 200 and NEXT_TEXT in page

        # The manage link shows "Voir ma fiche" and the sheet behind it.
        status, page = await get(
            other_ref_http, running, f"/rendez-vous/gerer/{booked.manage_token}"
        )
        assert f"/rendez-vous/gerer/{booked.manage_token}/fiche" in page
        status, page = await get(
            other_ref_http, running, f"/rendez-vous/gerer/{booked.manage_token}/fiche"
        )
        assert status == 200 and NEXT_TEXT in page

        # The referrer who booked sees it; another referrer, a volunteer do not.
        status, page = await get(referrer_http, running, "/mes-reservations")
        assert f"/mes-reservations/{appointment.id}/fiche" in page and "Voir la fiche" in page
        status, page = await get(
            referrer_http, running, f"/mes-reservations/{appointment.id}/fiche"
        )
        assert status == 200 and NEXT_TEXT in page and "Imprimer" in page
        assert "partage" not in page  # only the person gives or withdraws the agreement
        status, _page = await get(
            other_ref_http, running, f"/mes-reservations/{appointment.id}/fiche"
        )
        assert status == 404
        status, _page = await get(http, running, f"/mes-reservations/{appointment.id}/fiche")
        assert status == 403
        status, _page = await get(other_ref_http, running, "/mes-reservations/nope/fiche")
        assert status == 404

        # Coordinators read every sheet of their association, not another's; volunteers theirs.
        assert (await get(coord_http, running, f"/fiches/{sheet.id}"))[0] == 200
        assert (await get(far_coord_http, running, f"/fiches/{sheet.id}"))[0] == 404
        assert (await get(other_vol_http, running, f"/fiches/{sheet.id}"))[0] == 404
        assert (await get(http, running, f"/fiches/{sheet.id}"))[0] == 200
        assert (await get(referrer_http, running, f"/fiches/{sheet.id}"))[0] == 403
    finally:
        for client in (referrer_http, other_ref_http, other_vol_http, coord_http, far_coord_http):
            await client.close()


async def test_earlier_sheets_show_in_the_room_only_when_shared_and_of_the_same_association(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    zone = awake_zone(datetime.now(UTC))
    await open_all_week(running, volunteer, zone)
    far_volunteer, far_http = await staff(running, "far@example.org", asso="Asso B")
    await open_all_week(running, far_volunteer, zone)
    try:
        await login(http, running, volunteer)
        first = await book_for(running, volunteer, days=1)
        second = await book_for(running, volunteer, days=2)
        elsewhere = await book_for(running, far_volunteer, days=1)
        for booked in (first, second, elsewhere):
            # As when the person comes through the link sent by SMS to their phone.
            assert await prove_phone(running, booked.session.id, "+33612345678")
        await end_assistance(far_http, running, elsewhere.session.id)
        await file_sheet(
            far_http, running, f"/assistance/{elsewhere.session.id}/fiche", next_steps="Ailleurs."
        )
        await end_assistance(http, running, first.session.id)
        status, page = await file_sheet(
            http, running, f"/assistance/{first.session.id}/fiche", shared_with_volunteers=""
        )
        token = SHEET_LINK.search(page).group(1)  # type: ignore[union-attr]

        room = f"/assistance/{second.session.id}"
        status, page = await get(http, running, room)
        assert status == 200 and "earlier-sheets" not in page and "Ailleurs." not in page

        # The person agrees from their link: the next volunteer sees it, newest first.
        status, page = await get(http, running, f"/fiche/{token}")
        async with http.post(
            running.url(f"/fiche/{token}/partage"),
            data={"share": "1", "csrf_token": csrf_from(page)},
        ) as resp:
            assert resp.status == 200
        status, page = await get(http, running, room)
        assert "Fiches précédentes de la personne (1)" in page
        assert NEXT_TEXT in page and "À suivre" in page and "Ailleurs." not in page

        # Withdrawn: gone again.
        status, page = await get(http, running, f"/fiche/{token}")
        async with http.post(
            running.url(f"/fiche/{token}/partage"),
            data={"share": "0", "csrf_token": csrf_from(page)},
        ) as resp:
            assert resp.status == 200
        status, page = await get(http, running, room)
        assert "earlier-sheets" not in page and NEXT_TEXT not in page
    finally:
        await far_http.close()


async def prove_phone(running: Running, session_id: str, phone: str) -> bool:
    """Record what entering through the join link sent by SMS to `phone` records."""
    secret = running.settings.secret_key.get_secret_value()
    proof = contact.contact_proof(secret, session_id, "phone", phone)
    async with running.sessionmaker.begin() as db:
        return await handoff.verify_contact(db, running.settings, session_id, proof)


async def book_now_and_notify(
    running: Running, started: datetime, phone: str
) -> tuple[booking.Booked, str]:
    """An appointment that started at `started` (open now), booked and notified as the public
    form does: (booked, the confirmation SMS as written to the outbox)."""
    booked_at = started - timedelta(hours=2)
    async with running.sessionmaker.begin() as db:
        association = await db.scalar(select(Association).where(Association.name == "Asso A"))
        assert association is not None
        motif = (await ensure_default_motifs(db, association.id))[0]
        booked = await booking.book(
            db,
            running.settings,
            association_id=association.id,
            motif_id=motif.id,
            kind="follow_up",
            starts_at=started,
            contact=contact.ContactInfo(first_name="Awa", phone=phone),
            via="public",
            now=booked_at,
        )
        await notifications.appointment_booked(
            db, running.settings, booked, booked_at, sms_budget=running.app[RATELIMIT_KEY]
        )
    key = appointment_key(booked.appointment.id, "confirmation", "sms")
    async with running.sessionmaker() as db:
        sms = await db.scalar(
            select(OutboxMessage.body).where(OutboxMessage.idempotency_key == key)
        )
    assert sms is not None
    return booked, sms


async def enter(link: str) -> None:
    """A new browser opens a join link and enters the room."""
    async with await browser_session() as person, person.get(link, allow_redirects=False) as r:
        await entered_room(r)


async def enter_with_code(running: Running, code: str) -> None:
    """A new browser types the code on /code and enters the room."""
    async with await browser_session() as person:
        async with person.get(running.url("/code")) as resp:
            token = csrf_from(await resp.text())
        async with person.post(
            running.url("/code"), data={"csrf_token": token, "code": code}, allow_redirects=False
        ) as resp:
            await entered_room(resp)


async def test_earlier_sheets_are_linked_only_once_the_phone_is_proven_by_its_sms_link(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    """Anyone can book with someone else's number: that alone never shows the number's
    earlier sheets. Entering through the link sent by SMS to the number does."""
    now = datetime.now(UTC)
    zone = awake_zone(now)
    started = quarter_before(now, 15)
    await open_all_week(running, volunteer, zone)
    victim = "+33612345678"
    mine, sms = await book_now_and_notify(running, started, victim)
    link = JOIN_LINK.search(sms)
    assert link is not None and "?v=" in link.group(0), sms
    await enter(link.group(0))
    await login(http, running, volunteer)
    await end_assistance(http, running, mine.session.id)
    await file_sheet(http, running, f"/assistance/{mine.session.id}/fiche")  # shared
    [sheet] = await sheets(running)
    secret = running.settings.secret_key.get_secret_value()
    assert sheet.person_key == handoff.person_key(secret, victim)

    # A stranger books with the victim's number (another volunteer is free then) and comes in
    # with the code, or the plain link their confirmation page shows: nothing earlier shows.
    second, second_http = await staff(running, "sami@example.org")
    await open_all_week(running, second, zone)
    try:
        theirs, sms = await book_now_and_notify(running, started, victim)
        assert theirs.appointment.volunteer_id == second.user.id
        room = f"/assistance/{theirs.session.id}"
        await enter_with_code(running, theirs.code)
        await enter(theirs.join_url)
        await enter(theirs.join_url + "?v=AAAAAAAAAAAAAAAA")  # a forged mark
        status, page = await get(second_http, running, room)
        assert status == 200 and "earlier-sheets" not in page and NEXT_TEXT not in page

        # The number's owner comes through the link the SMS brought them: now it shows.
        link = JOIN_LINK.search(sms)
        assert link is not None
        await enter(link.group(0))
        status, page = await get(second_http, running, room)
        assert "Fiches précédentes de la personne (1)" in page and NEXT_TEXT in page
    finally:
        await second_http.close()


# -- Call-backs helped on the phone -----------------------------------------------------------


async def test_a_call_back_helped_on_the_phone_offers_the_sheet_to_its_volunteer(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    form = CallbackForm(
        phone="06 12 34 56 78", first_name="Awa", postal_code="13001", windows=("any",)
    ).validated("Europe/Paris", set())
    async with running.sessionmaker.begin() as db:
        association = await db.get_one(Association, volunteer.user.association_id)
        done = await callback_requests.submit(
            db, running.settings, association, form, utcnow(), sms_budget=running.app[RATELIMIT_KEY]
        )
        request_id = done.request.id
    await login(http, running, volunteer)
    _other, other_http = await staff(running, "sami@example.org")
    try:
        path = f"/rappels/{request_id}/fiche"
        assert (await get(http, running, path))[0] == 404  # not resolved yet
        status, page = await get(http, running, f"/rappels/{request_id}")
        async with http.post(
            running.url(f"/rappels/{request_id}/prendre"), data={"csrf_token": csrf_from(page)}
        ) as resp:
            page = text_of(await resp.text())
        async with http.post(
            running.url(f"/rappels/{request_id}/essai"),
            data={"csrf_token": csrf_from(page), "outcome": "helped"},
        ) as resp:
            page = text_of(await resp.text())
        assert "Remplir la fiche" in page and path in page
        status, page = await get(http, running, "/tableau")
        assert path in page  # also in "Fiches à remplir"

        assert (await get(other_http, running, path))[0] == 404
        status, page = await get(http, running, path)
        assert status == 200 and 'value="13001"' in page and "Retour" not in page
        status, page = await file_sheet(http, running, path, postal_code="13001")
        assert status == 200 and "Retour aux rappels" in page
        [sheet] = await sheets(running)
        assert sheet.callback_id == request_id and sheet.assistance_session_id is None
        assert sheet.channel == "callback" and sheet.person_key is not None
        [event] = await filed_events(running)
        assert event.channel == "callback" and event.departement == "13"
        assert event.session_id is None and event.duration_seconds is None
        async with running.sessionmaker() as db:
            keys = set(await db.scalars(select(OutboxMessage.idempotency_key)))
            stored = await db.get_one(CallbackRequest, request_id)
        assert f"sheet:{sheet.id}:sms" in keys and stored.status == "resolved"
        status, page = await get(http, running, f"/rappels/{request_id}")
        assert "La fiche de cet appel est remplie." in page
    finally:
        await other_http.close()


async def test_sheet_rules_without_http(running: Running, volunteer: Account) -> None:
    """person_key ignores e-mail case, prefers the phone; validation trims and orders codes."""
    key = running.settings.secret_key.get_secret_value()
    assert handoff.person_key(key, None, "Awa@Example.org") == handoff.person_key(
        key, None, "awa@example.org"
    )
    assert handoff.person_key(key, "+33612345678", "a@b.fr") == handoff.person_key(
        key, "+33612345678"
    )
    assert handoff.person_key(key) is None
    clean = handoff.SheetForm(
        themes=("logement", "papiers", "logement", "bogus"),
        autonomy="alone",
        outcome="oriented",
        next_steps="  Appeler\r\nle bailleur  ",
    ).validated(today())
    assert clean.themes == ["papiers", "logement"] and clean.next_steps == "Appeler\nle bailleur"
    async with running.sessionmaker() as db:
        count = await db.scalar(select(func.count()).select_from(Appointment))
    assert count == 0
