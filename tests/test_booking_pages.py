"""Public booking through the real HTTP forms (SQLite and PostgreSQL): the whole flow, French
refusals that write nothing, 200 concurrent bookings of one slot, cancel, move, join gating."""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select, update

from server import availability
from server.motifs import ensure_default_motifs
from server.ratelimit import RATELIMIT_KEY
from server.stats.events import EventKind
from server.store.models import (
    Appointment,
    AppointmentStatus,
    AppointmentUnit,
    AssistanceSession,
    OutboxMessage,
    Role,
    StatEvent,
    User,
    VisitKind,
    WaitlistEntry,
    utcnow,
)
from server.web.views.booking import BOOKINGS_PER_IP
from tests.conftest import (
    Account,
    Running,
    browser_session,
    csrf_from,
    entered_room,
    login,
    make_account,
)
from tests.peers import refusal

PARIS = ZoneInfo("Europe/Paris")
TAKEN = "Ce créneau vient d'être pris"
SLOT_LINK = re.compile(r"/reserver\?[^\"]*?t=(\d+)")


@dataclass
class Place:
    """An association with motifs and volunteers holding a permanence every day."""

    association_id: int
    motif_id: int
    volunteers: list[User]


async def make_place(running: Running, volunteers: int = 3) -> Place:
    """`volunteers` volunteers of "Asso A", each on duty every day 08:00–20:00 Paris time."""
    users = [
        (await make_account(running, f"benevole{index}@example.org")).user
        for index in range(volunteers)
    ]
    async with running.sessionmaker.begin() as db:
        motifs = await ensure_default_motifs(db, users[0].association_id)
        for user in users:
            for weekday in range(7):
                await availability.add_availability(
                    db, user, weekday=weekday, start_time=time(8), end_time=time(20)
                )
    return Place(users[0].association_id, motifs[0].id, users)


def text_of(page: str) -> str:
    """Page text with entities decoded, for French assertions."""
    return html.unescape(page)


async def slot_times(
    http: aiohttp.ClientSession, running: Running, place: Place, days_ahead: int = 2, **query: str
) -> list[int]:
    """The bookable starts (epoch seconds) the slots page offers from `days_ahead` days on."""
    day = (utcnow().astimezone(PARIS) + timedelta(days=days_ahead)).date().isoformat()
    params = {"a": str(place.association_id), "depuis": day, **query}
    async with http.get(running.url(f"/rendez-vous/motif/{place.motif_id}"), params=params) as resp:
        assert resp.status == 200
        return [int(t) for t in SLOT_LINK.findall(await resp.text())]


async def form_token(
    http: aiohttp.ClientSession, running: Running, place: Place, t: int, tz: str = "Europe/Paris"
) -> str:
    """Open the booking form of a slot (which sets the CSRF cookie) and return its token."""
    async with http.get(
        running.url(f"/rendez-vous/motif/{place.motif_id}/reserver"),
        params={"a": str(place.association_id), "t": str(t), "tz": tz},
    ) as resp:
        assert resp.status == 200
        return csrf_from(await resp.text())


def fields(place: Place, t: int, token: str, **values: str) -> dict[str, str]:
    """The booking form as a person fills it."""
    data = {
        "csrf_token": token,
        "a": str(place.association_id),
        "motif": str(place.motif_id),
        "t": str(t),
        "tz": "Europe/Paris",
        "type": "first",
        "first_name": "Awa",
        "phone": "06 12 34 56 78",
        "email": "awa@example.org",
        "postal_code": "75011",
        "description": "Je dois refaire ma déclaration CAF, mot de passe perdu.",
        "interpreter_language": "",
        "site_web": "",
    }
    data.update(values)
    return data


async def book(
    http: aiohttp.ClientSession, running: Running, place: Place, t: int, **values: str
) -> tuple[int, str, str]:
    """Submit the form; (status, page text, final URL)."""
    token = await form_token(http, running, place, t, values.get("tz", "Europe/Paris"))
    async with http.post(
        running.url("/rendez-vous/reserver"), data=fields(place, t, token, **values)
    ) as resp:
        return resp.status, text_of(await resp.text()), str(resp.url)


async def count(running: Running, model: type[object]) -> int:
    """Rows of a table."""
    async with running.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_home_has_a_big_booking_button(running: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(running.url("/")) as resp:
        page = await resp.text()
    assert 'href="/rendez-vous"' in page and "Prendre rendez-vous" in page


async def test_whole_flow_motif_slots_form_confirmation_ics_manage(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running)
    async with http.get(running.url("/rendez-vous")) as resp:
        page = text_of(await resp.text())
    assert resp.status == 200 and "Pour quelle démarche ?" in page and "CAF" in page
    assert f"/rendez-vous/motif/{place.motif_id}" in page
    times = await slot_times(http, running, place)
    assert times, "the slots page offers slots"
    status, page, url = await book(http, running, place, times[0])
    assert status == 200 and "/rendez-vous/gerer/" in url, page
    assert "Rendez-vous confirmé" in page and "utilisable 15 minutes avant" in page
    when = datetime.fromtimestamp(times[0], UTC).astimezone(PARIS)
    assert when.strftime("%H:%M") in page
    join = re.search(r'id="join-link" href="([^"]+)"', page)
    code = re.search(r'id="join-code">(\d{4} \d{4})<', page)
    assert join and join.group(1).startswith(running.url("/j/")) and code
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
        assert appointment.booked_via == "public" and appointment.referrer_id is None
        assert appointment.starts_at == datetime.fromtimestamp(times[0], UTC)
        assert appointment.phone == "+33612345678" and appointment.postal_code == "75011"
    manage = url.split("?")[0]
    async with http.get(manage + "/rendez-vous.ics") as resp:
        assert resp.status == 200 and resp.content_type == "text/calendar"
        ics = await resp.text()
    assert "BEGIN:VEVENT" in ics and "STATUS:CONFIRMED" in ics
    assert "mot de passe" not in ics  # the description stays out of the calendar file
    async with http.get(manage) as resp:
        again = text_of(await resp.text())
    assert "Votre rendez-vous" in again and "Annuler le rendez-vous" in again


async def test_times_show_in_the_zone_the_visitor_picks(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    reunion = ZoneInfo("Indian/Reunion")
    times = await slot_times(http, running, place, tz="Indian/Reunion")
    status, page, _url = await book(http, running, place, times[0], tz="Indian/Reunion")
    assert status == 200, page
    local = datetime.fromtimestamp(times[0], UTC).astimezone(reunion).strftime("%H:%M")
    assert local in page and "La Réunion" in page
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
    assert appointment.display_timezone == "Indian/Reunion"


async def test_bad_input_gets_french_messages_and_writes_nothing(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    cases = [
        ({"phone": "06 12 AB", "email": ""}, "numéro de téléphone n'est pas valide"),
        ({"phone": "", "email": ""}, "Donnez un numéro de téléphone ou une adresse e-mail"),
        ({"email": "awa@", "phone": ""}, "adresse e-mail n'est pas valide"),
        ({"description": "x" * 1001}, "Votre message est trop long"),
        ({"first_name": "http://spam.example"}, "Écrivez votre prénom en lettres"),
        ({"postal_code": "7501"}, "Le code postal a 5 chiffres"),
        ({"site_web": "http://spam.example"}, "n'a pas pu être enregistrée"),
    ]
    for values, message in cases:
        status, page, _url = await book(http, running, place, t, **values)
        assert status == 400 and message in page, (values, page[-2000:])
        assert 'value="Awa"' in page or "first_name" in values  # what was typed is kept
    past = int((utcnow() - timedelta(hours=2)).timestamp())
    status, page, _url = await book(http, running, place, past)
    assert status == 400 and "Ce créneau est déjà passé" in page
    off_grid = t + 7 * 60
    status, page, _url = await book(http, running, place, off_grid)
    assert status == 400 and "Personne n'est disponible à cet horaire" in page
    async with http.post(
        running.url("/rendez-vous/reserver"), data=fields(place, t, "forged")
    ) as resp:
        assert resp.status == 403 and "Le formulaire a expiré" in text_of(await resp.text())
    for model in (Appointment, AppointmentUnit, AssistanceSession, OutboxMessage):
        assert await count(running, model) == 0, model


async def test_booking_rate_limit_answers_in_french_and_writes_nothing(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    limiter = running.app[RATELIMIT_KEY]
    while await limiter.hit(BOOKINGS_PER_IP, "127.0.0.1"):
        pass  # as if this address had just made its 20 bookings of the hour
    status, page, _url = await book(http, running, place, t)
    assert status == 429 and "Trop de demandes depuis cette connexion" in page
    assert await count(running, Appointment) == 0


async def test_200_concurrent_http_bookings_of_one_slot_give_exactly_its_capacity(
    running: Running,
) -> None:
    place = await make_place(running, volunteers=3)
    async with await browser_session() as http:
        t = (await slot_times(http, running, place))[0]
    sessions = [await browser_session() for _ in range(200)]
    try:
        tokens = await asyncio.gather(*(form_token(http, running, place, t) for http in sessions))
        start = asyncio.Event()

        async def attempt(http: aiohttp.ClientSession, token: str, index: int) -> tuple[int, str]:
            await start.wait()
            data = fields(place, t, token, email=f"awa{index}@example.org")
            async with http.post(running.url("/rendez-vous/reserver"), data=data) as resp:
                return resp.status, text_of(await resp.text())

        tasks = [
            asyncio.ensure_future(attempt(http, token, i))
            for i, (http, token) in enumerate(zip(sessions, tokens, strict=True))
        ]
        await asyncio.sleep(0)
        start.set()
        answers = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(http.close() for http in sessions))
    booked = [page for status, page in answers if status == 200 and "Rendez-vous confirmé" in page]
    taken = [page for status, page in answers if status == 409 and TAKEN in page]
    assert len(booked) == 3 and len(taken) == 197, {s for s, _p in answers}
    async with running.sessionmaker() as db:
        rows = (await db.scalars(select(Appointment))).all()
    assert len(rows) == 3 and len({row.volunteer_id for row in rows}) == 3
    # The slot is now full: the page no longer offers it.
    async with await browser_session() as http:
        assert t not in await slot_times(http, running, place)


async def test_cancel_frees_the_slot_and_a_replayed_link_says_it_is_cancelled(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    status, page, url = await book(http, running, place, t)
    assert status == 200
    manage = url.split("?")[0]
    assert t not in await slot_times(http, running, place)
    async with http.post(
        manage + "/annuler", data={"csrf_token": csrf_from(page)}, allow_redirects=True
    ) as resp:
        done = text_of(await resp.text())
    assert resp.status == 200 and "Ce rendez-vous est annulé" in done
    assert t in await slot_times(http, running, place)  # free again at once
    async with http.post(manage + "/annuler", data={"csrf_token": csrf_from(page)}) as resp:
        replay = text_of(await resp.text())
    assert resp.status == 409 and "Ce rendez-vous est déjà annulé" in replay
    async with http.get(manage + "/deplacer") as resp:
        assert "Ce rendez-vous est déjà annulé" in text_of(await resp.text())
    async with http.get(running.url("/rendez-vous/gerer/not-a-real-token")) as resp:
        assert resp.status == 404 and "Ce lien ne marche pas" in text_of(await resp.text())
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
        assert appointment.status == AppointmentStatus.CANCELLED
        assert await db.scalar(select(func.count()).select_from(AppointmentUnit)) == 0


async def test_reschedule_moves_the_booking_and_keeps_the_manage_link(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    times = await slot_times(http, running, place)
    _status, _page, url = await book(http, running, place, times[0])
    manage = url.split("?")[0]
    async with http.get(manage + "/deplacer") as resp:
        move_page = await resp.text()
    offered = [int(v) for v in re.findall(r'name="t" value="(\d+)"', move_page)]
    assert times[0] not in offered and offered
    new = offered[-1]
    async with http.post(
        manage + "/deplacer", data={"csrf_token": csrf_from(move_page), "t": str(new)}
    ) as resp:
        moved = text_of(await resp.text())
    assert resp.status == 200 and str(resp.url).startswith(manage)
    new_local = datetime.fromtimestamp(new, UTC).astimezone(PARIS).strftime("%H:%M")
    assert "Rendez-vous confirmé" in moved and new_local in moved
    async with running.sessionmaker() as db:
        rows = (await db.scalars(select(Appointment).order_by(Appointment.created_at))).all()
    assert [row.status for row in rows] == [AppointmentStatus.CANCELLED, AppointmentStatus.BOOKED]
    assert rows[1].starts_at == datetime.fromtimestamp(new, UTC)
    assert times[0] in await slot_times(http, running, place)
    # Moving onto a time that is not offered changes nothing.
    async with http.post(
        manage + "/deplacer", data={"csrf_token": csrf_from(move_page), "t": str(new + 420)}
    ) as resp:
        assert resp.status == 409 and "Personne n'est disponible" in text_of(await resp.text())
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(Appointment)) == 2


async def test_waitlist_from_the_manage_page_and_when_no_slot_exists(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    _status, page, url = await book(http, running, place, t)
    manage = url.split("?")[0]
    async with http.post(manage + "/attente", data={"csrf_token": csrf_from(page)}) as resp:
        assert "si une place plus tôt se libère" in text_of(await resp.text())
    # An association whose volunteers have no permanence: no slot, the waitlist is offered.
    other = await make_account(running, "seule@example.org", association="Asso B")
    async with running.sessionmaker.begin() as db:
        motifs = await ensure_default_motifs(db, other.user.association_id)
    params = {"a": str(other.user.association_id)}
    async with http.get(running.url(f"/rendez-vous/motif/{motifs[0].id}"), params=params) as resp:
        empty = text_of(await resp.text())
    assert "Pas de rendez-vous libre" in empty and "Me prévenir" in empty
    async with http.post(
        running.url("/rendez-vous/attente"),
        data={
            "csrf_token": csrf_from(empty),
            "a": str(other.user.association_id),
            "motif": str(motifs[0].id),
            "first_name": "Léa",
            "phone": "0690 12 34 56",
            "site_web": "",
        },
    ) as resp:
        assert resp.status == 200 and "Nous vous prévenons" in text_of(await resp.text())
    async with running.sessionmaker() as db:
        entries = (await db.scalars(select(WaitlistEntry).order_by(WaitlistEntry.id))).all()
        no_slot = await db.scalar(
            select(func.count())
            .select_from(StatEvent)
            .where(StatEvent.kind == EventKind.NO_SLOT_FOUND)
        )
    assert [e.first_name for e in entries] == ["Awa", "Léa"] and entries[1].phone == "+590690123456"
    assert no_slot


async def test_a_referrer_books_for_the_person_they_accompany(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    referrer = await make_account(running, "assistante@ccas.example.org", Role.REFERRER)
    await login(http, running, referrer)
    async with http.get(running.url("/rendez-vous")) as resp:
        assert "pour la personne que vous accompagnez" in text_of(await resp.text())
    t = (await slot_times(http, running, place))[0]
    status, page, _url = await book(http, running, place, t)
    assert status == 200 and "pour la personne que vous accompagnez" in page
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
    assert appointment.booked_via == "referrer" and appointment.referrer_id == referrer.user.id


async def _shift(running: Running, minutes_from_now: int) -> None:
    """Move the one appointment so that it starts `minutes_from_now` from now."""
    starts = utcnow() + timedelta(minutes=minutes_from_now)
    async with running.sessionmaker.begin() as db:
        appointment = (await db.scalars(select(Appointment))).one()
        await db.execute(
            update(Appointment)
            .where(Appointment.id == appointment.id)
            .values(starts_at=starts, ends_at=starts + timedelta(hours=1))
        )


async def test_join_link_and_code_open_only_from_15_minutes_before(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    _status, page, url = await book(http, running, place, t)
    join = re.search(r'id="join-link" href="([^"]+)"', page)
    code = re.search(r'id="join-code">(\d{4} \d{4})<', page)
    assert join and code
    await _shift(running, 16)
    async with await browser_session() as early:
        async with early.get(join.group(1), allow_redirects=False) as resp:
            waiting = text_of(await resp.text())
            assert resp.status == 200 and "vp_benef" not in resp.headers.get("Set-Cookie", "")
        assert "Votre rendez-vous est le" in waiting and "Revenez à partir de" in waiting
        async with early.get(running.url("/code")) as resp:
            token = csrf_from(await resp.text())
        # Before its window the code is not in the live code space: the answer is that of a
        # code nobody holds (status and page), so guessing codes finds no booked appointment.
        answers = []
        for typed in (code.group(1), "9" * running.settings.code_digits):
            async with early.post(
                running.url("/code"),
                data={"csrf_token": token, "code": typed},
                allow_redirects=False,
            ) as resp:
                # The CSRF token is masked afresh in every page: leave it out of the comparison.
                body = re.sub(r'value="[^"]{40,}"', 'value=""', await resp.text())
                answers.append((resp.status, body))
                assert "vp_benef" not in resp.headers.get("Set-Cookie", "")
        assert answers[0] == answers[1] and answers[0][0] == 400
        assert "Revenez" not in answers[0][1]
        async with early.get(running.url("/b"), allow_redirects=False) as resp:
            assert resp.status == 404  # no pass was given
    await _shift(running, 14)
    async with await browser_session() as on_time:
        async with on_time.get(join.group(1), allow_redirects=False) as resp:
            await entered_room(resp)
        async with on_time.get(running.url("/code")) as resp:
            token = csrf_from(await resp.text())
        async with on_time.post(
            running.url("/code"),
            data={"csrf_token": token, "code": code.group(1)},
            allow_redirects=False,
        ) as resp:
            await entered_room(resp)
    # Cancelled: the link says so plainly, and lets no one in.
    await _shift(running, 120)
    manage = url.split("?")[0]
    async with http.post(manage + "/annuler", data={"csrf_token": csrf_from(page)}) as resp:
        assert resp.status == 200
    async with (
        await browser_session() as late,
        late.get(join.group(1), allow_redirects=False) as resp,
    ):
        assert resp.status == 410
        assert "Ce rendez-vous a été annulé" in text_of(await resp.text())
        assert "vp_benef" not in resp.headers.get("Set-Cookie", "")


async def test_code_and_phone_recover_a_lost_manage_link_and_retire_the_old_one(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    status, page, url = await book(http, running, place, t, phone="06 12 34 56 78")
    assert status == 200
    old_manage = url.split("?")[0]
    code = re.search(r'id="join-code">(\d{4} \d{4})<', page)
    assert code is not None
    six = code.group(1)

    async with http.get(running.url("/rendez-vous/retrouver")) as resp:
        token = csrf_from(await resp.text())
    # A wrong phone gets the same neutral answer as a wrong code.
    for wrong in (
        {"code": six, "phone": "06 99 99 99 99"},
        {"code": "0" * running.settings.code_digits, "phone": "0612345678"},
    ):
        async with http.post(
            running.url("/rendez-vous/retrouver"), data={"csrf_token": token, **wrong}
        ) as resp:
            assert resp.status == 400
            assert "Nous ne trouvons pas de rendez-vous" in text_of(await resp.text())
    async with http.post(
        running.url("/rendez-vous/retrouver"),
        data={"csrf_token": token, "code": six, "phone": "+33 6 12 34 56 78"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        new_manage = running.url(resp.headers["Location"].split("?")[0])
    assert new_manage != old_manage
    async with http.get(new_manage + "?retrouve=1") as resp:
        assert resp.status == 200
        assert "l'ancien ne marche plus" in text_of(await resp.text())
    async with http.get(old_manage) as resp:
        assert resp.status == 404


async def test_a_search_without_slots_is_counted_once_as_unmet_demand(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with running.sessionmaker.begin() as db:
        motif = (await ensure_default_motifs(db, volunteer.user.association_id))[0]
    later = (utcnow().astimezone(PARIS) + timedelta(days=30)).date().isoformat()
    url = running.url(f"/rendez-vous/motif/{motif.id}")
    for params in ({}, {"depuis": later}):
        async with http.get(url, params=params) as resp:
            assert resp.status == 200
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind))).all()
    assert kinds.count(EventKind.NO_SLOT_FOUND.value) == 1


async def test_slot_pages_read_from_and_kind_and_the_french_names_of_links_already_sent(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    day = (utcnow().astimezone(PARIS) + timedelta(days=5)).date()
    url = running.url(f"/rendez-vous/motif/{place.motif_id}")
    pages = {}
    for name, query in {
        "english": {"from": day.isoformat(), "kind": "follow_up"},
        "french": {"depuis": day.isoformat(), "type": "follow_up"},
        "neither": {},
    }.items():
        async with http.get(url, params={"a": str(place.association_id), **query}) as resp:
            assert resp.status == 200
            pages[name] = text_of(await resp.text())
    starts = [int(t) for t in SLOT_LINK.findall(pages["english"])]
    assert starts and datetime.fromtimestamp(min(starts), UTC).astimezone(PARIS).date() == day
    assert SLOT_LINK.findall(pages["french"]) == SLOT_LINK.findall(pages["english"])
    follow_up = "<strong>J'ai déjà eu un rendez-vous"
    assert follow_up in pages["english"] and follow_up in pages["french"]
    assert follow_up not in pages["neither"]

    status, _page, _url = await book(http, running, place, starts[0], kind="follow_up", type="")
    assert status == 200
    async with running.sessionmaker() as db:
        booked = await db.scalar(select(Appointment))
    assert booked is not None and booked.kind == VisitKind.FOLLOW_UP


async def test_moves_are_limited_so_nobody_can_flood_a_phone_with_confirmations(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    times = await slot_times(http, running, place)
    _status, page, url = await book(http, running, place, times[0])
    manage = url.split("?")[0]
    statuses = []
    for target in (times[1], times[0], times[1], times[0]):
        async with http.post(
            manage + "/deplacer", data={"csrf_token": csrf_from(page), "t": str(target)}
        ) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    async with running.sessionmaker() as db:
        booked = await db.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(Appointment.status == AppointmentStatus.BOOKED)
        )
    assert booked == 1


async def test_a_landline_alone_is_refused_because_it_gets_no_reminder(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    status, page, _url = await book(http, running, place, t, phone="01 45 67 89 12", email="")
    assert status == 400
    assert "Ce numéro est un fixe" in page
    assert await count(running, Appointment) == 0


async def test_impossible_ids_and_dates_get_a_page_not_a_crash(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/rendez-vous/motif/99999999999999999999")) as resp:
        assert resp.status == 404
    await login(http, running, volunteer)
    for query in ("jour=9999-12-31", "jour=0001-01-01&vue=semaine"):
        async with http.get(running.url(f"/agenda?{query}")) as resp:
            assert resp.status == 200


async def test_a_non_browser_client_cannot_enter_an_appointment_early_either(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    t = (await slot_times(http, running, place))[0]
    _status, page, _url = await book(http, running, place, t)
    join = re.search(r'id="join-link" href="[^"]+/j/([^"]+)"', page)
    assert join
    token = join.group(1)
    await _shift(running, 16)
    assert (await refusal(running, auth={"join_token": token}))["code"] == "forbidden"
    bearer = {"Authorization": f"Bearer {token}"}
    async with http.get(running.url("/api/ice-servers"), headers=bearer) as resp:
        assert resp.status == 403
    await _shift(running, 14)
    async with http.get(running.url("/api/ice-servers"), headers=bearer) as resp:
        assert resp.status == 200


async def test_a_moved_booking_keeps_its_waitlist_wish_and_says_moved_on_the_old_link(
    running: Running, http: aiohttp.ClientSession
) -> None:
    place = await make_place(running, volunteers=1)
    times = await slot_times(http, running, place)
    _status, page, url = await book(http, running, place, times[1])
    old_join = re.search(r'id="join-link" href="([^"]+)"', page)
    assert old_join
    manage = url.split("?")[0]
    async with http.post(manage + "/attente", data={"csrf_token": csrf_from(page)}) as resp:
        assert resp.status == 200
    async with http.post(
        manage + "/deplacer", data={"csrf_token": csrf_from(page), "t": str(times[2])}
    ) as resp:
        assert resp.status == 200
    async with running.sessionmaker() as db:
        old, new = (await db.scalars(select(Appointment).order_by(Appointment.created_at))).all()
        entry = (await db.scalars(select(WaitlistEntry))).one()
        confirmation = (
            await db.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.appointment_id == new.id,
                    OutboxMessage.idempotency_key.contains(":confirmation:"),
                    OutboxMessage.channel == "email",
                )
            )
        ).one()
    assert old.moved_to_id == new.id
    assert entry.appointment_id == new.id and entry.earlier_than == new.starts_at
    # The new confirmation also removes the old time from the person's calendar.
    methods = sorted(a["content_type"] for a in confirmation.attachments)
    assert methods == ["text/calendar; method=CANCEL", "text/calendar; method=PUBLISH"]
    async with http.get(old_join.group(1)) as resp:
        assert resp.status == 410
        assert "Ce rendez-vous a été déplacé" in text_of(await resp.text())
