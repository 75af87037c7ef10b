"""Matching a person with a volunteer who speaks their language (issue 17), against the real
server and database (SQLite and PostgreSQL): "Prendre le suivant" within the starvation rule
(QUEUE_LANGUAGE_MINUTES, time simulated by moving `queued_at` back), the queue's badges and
wait estimate, the language stored from the page's language, and the booking's slots and
volunteer."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import select, update

from server import accounts, api_tokens, availability, i18n
from server.dropin import places as dropin
from server.matching import FRENCH_ONLY, LanguageChoice
from server.motifs import ensure_default_motifs
from server.runtime import BOARD_KEY
from server.settings import Settings
from server.stats.events import EventKind
from server.store.models import (
    Appointment,
    QueueEntry,
    Role,
    StatEvent,
    User,
    WaitlistEntry,
    utcnow,
)
from tests.conftest import (
    PASSWORD,
    Account,
    Running,
    browser_session,
    csrf_from,
    login,
    make_account,
)

PARIS = ZoneInfo("Europe/Paris")
N = 10  # QUEUE_LANGUAGE_MINUTES, the default
ARABIC = LanguageChoice.of("ar", True)
SLOT_LINK = re.compile(r"/reserver\?[^\"]*?t=(\d+)")
with i18n.use_language("ar"):  # what the Arabic page says
    NO_SPEAKER = html.escape(
        i18n.gettext(
            "Aucun bénévole qui parle votre langue n'est libre sur ces 14 jours. "
            "Voici tous les horaires."
        )
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Behind a trusted proxy: each test household joins from its own address."""
    return settings.model_copy(update={"trust_proxy": True})


@dataclass
class Team:
    """Association A: a volunteer who speaks Arabic and one who speaks only French, both on
    duty every day all day (the queue is open)."""

    association_id: int
    arabic: User
    french: User


async def make_team(running: Running, hours: tuple[time, time] = (time(0), time(23, 55))) -> Team:
    speaker = await make_account(running, "karim@example.org")
    other = await make_account(running, "louise@example.org")
    async with running.sessionmaker.begin() as db:
        arabic = await db.get_one(User, speaker.user.id)
        french = await db.get_one(User, other.user.id)
        await accounts.set_languages(db, arabic, ["ar", "en"])
        for user in (arabic, french):
            for weekday in range(7):
                await availability.add_availability(
                    db, user, weekday=weekday, start_time=hours[0], end_time=hours[1]
                )
    return Team(speaker.user.association_id, speaker.user, other.user)


async def join(
    running: Running, team: Team, name: str, language: LanguageChoice = FRENCH_ONLY
) -> str:
    async with running.sessionmaker.begin() as db:
        joined = await dropin.join(
            db, running.settings, team.association_id, None, name, None, utcnow(), language=language
        )
    return joined.entry.id


async def age(running: Running, entry_id: str, minutes: float) -> None:
    """Pretend the person joined ``minutes`` ago."""
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(QueueEntry)
            .where(QueueEntry.id == entry_id)
            .values(queued_at=utcnow() - timedelta(minutes=minutes))
        )


async def take_next(running: Running, volunteer: User) -> str | None:
    """ "Prendre le suivant" by this volunteer: the first name of the person taken."""
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.id)
        taken = await dropin.take_next(db, running.settings, user, utcnow())
        return taken.first_name if taken is not None else None


# -- "Prendre le suivant" --------------------------------------------------------------------------


async def test_a_speaker_gets_the_person_who_asked_before_an_earlier_french_speaker(
    running: Running,
) -> None:
    team = await make_team(running)
    await join(running, team, "Jean")
    await age(running, await join(running, team, "Amina", ARABIC), 0)
    await age(running, await join(running, team, "Paul"), 0)  # after Amina
    assert await take_next(running, team.arabic) == "Amina"
    # The volunteer without Arabic still gets everyone else, in order.
    assert await take_next(running, team.french) == "Jean"
    assert await take_next(running, team.french) == "Paul"
    assert await take_next(running, team.french) is None


async def test_someone_who_waited_n_minutes_comes_before_a_match(running: Running) -> None:
    """The starvation guard: a French speaker who has waited N minutes goes first, even for a
    volunteer who speaks the language someone later asked for."""
    team = await make_team(running)
    jean = await join(running, team, "Jean")
    await join(running, team, "Amina", ARABIC)
    await age(running, jean, N + 0.5)
    assert await take_next(running, team.arabic) == "Jean"
    assert await take_next(running, team.arabic) == "Amina"


async def test_a_match_jumps_only_people_who_waited_less_than_n_minutes(
    running: Running,
) -> None:
    """Overdue people come first, oldest first (whatever they asked); then the matches."""
    team = await make_team(running)
    jean = await join(running, team, "Jean")
    lea = await join(running, team, "Léa")
    await join(running, team, "Amina", ARABIC)
    await age(running, jean, N + 2)
    await age(running, lea, N - 1)
    assert await take_next(running, team.arabic) == "Jean"
    assert await take_next(running, team.arabic) == "Amina"
    assert await take_next(running, team.arabic) == "Léa"


async def test_a_volunteer_without_the_language_gets_the_person_only_after_n_minutes(
    running: Running,
) -> None:
    team = await make_team(running)
    amina = await join(running, team, "Amina", ARABIC)
    assert await take_next(running, team.french) is None  # kept for a speaker
    await age(running, amina, N - 1)
    assert await take_next(running, team.french) is None
    await age(running, amina, N + 1)
    assert await take_next(running, team.french) == "Amina"


async def test_an_overdue_person_who_asked_comes_first_for_anyone(running: Running) -> None:
    team = await make_team(running)
    jean = await join(running, team, "Jean")
    amina = await join(running, team, "Amina", ARABIC)
    await age(running, jean, N + 1)
    await age(running, amina, N + 3)  # joined before Jean
    assert await take_next(running, team.french) == "Amina"


async def test_a_volunteer_may_take_the_person_from_the_list_at_any_time(
    running: Running,
) -> None:
    team = await make_team(running)
    amina = await join(running, team, "Amina", ARABIC)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, team.french.id)
        taken = await dropin.take(db, running.settings, user, amina, utcnow())
    assert taken.first_name == "Amina" and taken.taken_by_id == team.french.id


async def test_a_transfer_still_comes_first(running: Running) -> None:
    team = await make_team(running)
    await join(running, team, "Amina", ARABIC)
    jean = await join(running, team, "Jean")
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, team.french.id)
        await dropin.transfer(db, user, jean, team.arabic.id, utcnow())
    assert await take_next(running, team.arabic) == "Jean"
    assert await take_next(running, team.arabic) == "Amina"


async def test_asking_for_french_or_an_unknown_language_asks_for_nothing(
    running: Running,
) -> None:
    assert LanguageChoice.of("fr", True) == LanguageChoice("fr", False)
    assert LanguageChoice.of("xx", "1") == LanguageChoice("fr", False)
    assert LanguageChoice.of("fa-af", "1") == LanguageChoice("fa-AF", True)
    team = await make_team(running)
    await join(running, team, "Jean", LanguageChoice.of("fr", True))
    assert await take_next(running, team.french) == "Jean"


async def test_with_zero_minutes_the_queue_is_first_come_first_served(
    running: Running,
) -> None:
    team = await make_team(running)
    small = running.settings.model_copy(update={"queue_language_minutes": 0})
    await join(running, team, "Jean")
    await join(running, team, "Amina", ARABIC)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, team.arabic.id)
        taken = await dropin.take_next(db, small, user, utcnow())
    assert taken is not None and taken.first_name == "Jean"


# -- The queue's pages -----------------------------------------------------------------------------


async def _arabic_browser(running: Running) -> aiohttp.ClientSession:
    """A browser whose person chose Arabic on the switch (the `lang` cookie)."""
    http = await browser_session()
    async with http.get(running.url("/langue/ar?next=/"), allow_redirects=False) as resp:
        assert resp.status == 303
    return http


async def _join_by_form(
    running: Running, http: aiohttp.ClientSession, address: str, **fields: str
) -> str:
    headers = {"X-Forwarded-For": address}
    async with http.get(running.url("/aide"), headers=headers) as resp:
        page = await resp.text()
        assert resp.status == 200, page
    data = {"csrf_token": csrf_from(page), "motif": "", "first_name": "Amina", **fields}
    async with http.post(
        running.url("/aide"), data=data, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    return page


async def test_the_queue_place_keeps_the_page_language_and_the_ask(running: Running) -> None:
    team = await make_team(running)
    arabic = await _arabic_browser(running)
    french = await browser_session()
    by_header = await browser_session()
    try:
        page = await _join_by_form(running, arabic, "10.0.0.1", language_wanted="1")
        assert "language_wanted" in page  # the box is offered in Arabic
        # In French the box is not shown, and a forged one asks for nothing.
        page = await _join_by_form(running, french, "10.0.0.2", language_wanted="1")
        assert 'name="language_wanted"' not in page
        # The browser's preference counts when no language was chosen.
        by_header.headers.update({"Accept-Language": "uk-UA,uk;q=0.9"})
        await _join_by_form(running, by_header, "10.0.0.3")
    finally:
        for http in (arabic, french, by_header):
            await http.close()
    async with running.sessionmaker() as db:
        rows = list(await db.scalars(select(QueueEntry).order_by(QueueEntry.queued_at)))
        joined = list(
            await db.scalars(
                select(StatEvent)
                .where(StatEvent.kind == EventKind.QUEUE_JOINED.value)
                .order_by(StatEvent.id)
            )
        )
    assert [(r.language, r.language_wanted) for r in rows] == [
        ("ar", True),
        ("fr", False),
        ("uk", False),
    ]
    assert [(e.language, e.language_wanted) for e in joined] == [
        ("ar", True),
        ("fr", False),
        ("uk", False),
    ]
    assert await take_next(running, team.arabic) == "Amina"
    async with running.sessionmaker() as db:
        taken = await db.scalar(
            select(StatEvent).where(StatEvent.kind == EventKind.QUEUE_TAKEN.value)
        )
    assert taken is not None and (taken.language, taken.language_wanted) == ("ar", True)


async def _queue_page(running: Running, volunteer: User) -> str:
    http = await browser_session()
    try:
        await login(http, running, Account(volunteer, volunteer.email, PASSWORD))
        async with http.get(running.url("/file")) as resp:
            assert resp.status == 200
            return html.unescape(await resp.text())
    finally:
        await http.close()


async def test_volunteers_see_the_ask_marked_when_they_speak_it(running: Running) -> None:
    team = await make_team(running)
    await join(running, team, "Amina", ARABIC)
    await join(running, team, "Jean")
    view = await running.app[BOARD_KEY].volunteer_payload(team.association_id)
    asked = {person["first_name"]: person for person in view["waiting"]}
    assert (asked["Amina"]["language"], asked["Amina"]["language_name"]) == ("ar", "arabe")
    assert asked["Jean"]["language"] is None
    speaker_page = await _queue_page(running, team.arabic)
    other_page = await _queue_page(running, team.french)
    badge = "Demande un bénévole parlant arabe"
    assert badge in speaker_page and badge in other_page
    assert f"{badge} · vous la parlez" in speaker_page
    assert f"{badge} · vous la parlez" not in other_page
    assert '"languages": ["en", "ar"]' in speaker_page  # queue.js marks the pushed rows


async def test_the_wait_estimate_of_someone_who_asked_counts_the_speakers_on_duty(
    running: Running,
) -> None:
    team = await make_team(running)
    board = running.app[BOARD_KEY]
    amina = await join(running, team, "Amina", ARABIC)
    jean = await join(running, team, "Jean")
    handling = running.settings.queue_handling_minutes
    # Only the French-only volunteer is on duty: nobody speaks Arabic, the guard gives the wait.
    await board.presence.volunteer_joined(team.association_id, team.french.id, "Louise", "s1")
    alone = await board.position_for(team.association_id, amina)
    assert alone is not None and not alone["language_only"]
    assert alone["estimate_minutes"] == max(N, dropin.estimate_minutes(1, 1, handling))
    # With the Arabic speaker on duty too, it counts them only (one speaker), and says so.
    await board.presence.volunteer_joined(team.association_id, team.arabic.id, "Karim", "s2")
    matched = await board.position_for(team.association_id, amina)
    assert matched is not None and matched["language_only"]
    assert matched["estimate_minutes"] == dropin.estimate_minutes(1, 1, handling)
    other = await board.position_for(team.association_id, jean)
    assert other is not None and not other["language_only"]
    assert other["estimate_minutes"] == dropin.estimate_minutes(2, 2, handling)


# -- Booking ---------------------------------------------------------------------------------------


@dataclass
class Agenda:
    association_id: int
    motif_id: int
    arabic: User
    french: User


async def make_agenda(
    running: Running, arabic_hours: tuple[int, int], french_hours: tuple[int, int]
) -> Agenda:
    """The Arabic speaker and the French-only volunteer hold permanences every day at these
    hours (Paris time)."""
    speaker = await make_account(running, "karim@example.org")
    other = await make_account(running, "louise@example.org")
    async with running.sessionmaker.begin() as db:
        arabic = await db.get_one(User, speaker.user.id)
        french = await db.get_one(User, other.user.id)
        await accounts.set_languages(db, arabic, ["ar"])
        motifs = await ensure_default_motifs(db, arabic.association_id)
        for user, (start, end) in ((arabic, arabic_hours), (french, french_hours)):
            for weekday in range(7):
                await availability.add_availability(
                    db, user, weekday=weekday, start_time=time(start), end_time=time(end)
                )
    return Agenda(arabic.association_id, motifs[0].id, speaker.user, other.user)


async def _slots(
    running: Running, http: aiohttp.ClientSession, agenda: Agenda, **query: str
) -> tuple[list[int], str]:
    day = (utcnow().astimezone(PARIS) + timedelta(days=2)).date().isoformat()
    params = {"a": str(agenda.association_id), "from": day, **query}
    async with http.get(
        running.url(f"/rendez-vous/motif/{agenda.motif_id}"), params=params
    ) as resp:
        page = await resp.text()
        assert resp.status == 200, page
    return [int(t) for t in SLOT_LINK.findall(page)], html.unescape(page)


def _hour(t: int) -> int:
    return datetime.fromtimestamp(t, PARIS).hour


async def _book(
    running: Running, http: aiohttp.ClientSession, agenda: Agenda, t: int, **extra: str
) -> Appointment:
    async with http.get(
        running.url(f"/rendez-vous/motif/{agenda.motif_id}/reserver"),
        params={"a": str(agenda.association_id), "t": str(t), **extra},
    ) as resp:
        page = await resp.text()
        assert resp.status == 200, page
    data = {
        "csrf_token": csrf_from(page),
        "a": str(agenda.association_id),
        "motif": str(agenda.motif_id),
        "t": str(t),
        "tz": "Europe/Paris",
        "kind": "first",
        "first_name": "Amina",
        "phone": "06 12 34 56 78",
        **extra,
    }
    async with http.post(
        running.url("/rendez-vous/reserver"), data=data, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    async with running.sessionmaker() as db:
        found = await db.scalar(
            select(Appointment).where(Appointment.starts_at == datetime.fromtimestamp(t, UTC))
        )
    assert found is not None
    return found


async def test_the_slots_are_those_of_speakers_and_the_appointment_goes_to_one(
    running: Running,
) -> None:
    agenda = await make_agenda(running, (8, 12), (14, 18))
    http = await _arabic_browser(running)
    try:
        everything, page = await _slots(running, http, agenda)
        assert 'name="language_wanted"' in page  # offered on an Arabic page
        assert {_hour(t) for t in everything} & {8, 9} and {_hour(t) for t in everything} & {14, 15}
        matched, page = await _slots(running, http, agenda, language_wanted="1")
        assert matched and all(8 <= _hour(t) < 12 for t in matched)
        assert NO_SPEAKER not in page
        assert "language_wanted=1" in page  # carried into the slot links
        booked = await _book(running, http, agenda, matched[0], language_wanted="1")
    finally:
        await http.close()
    assert booked.volunteer_id == agenda.arabic.id
    assert (booked.language, booked.language_wanted) == ("ar", True)
    async with running.sessionmaker() as db:
        stat = await db.scalar(
            select(StatEvent).where(StatEvent.kind == EventKind.APPOINTMENT_BOOKED.value)
        )
    assert stat is not None and (stat.language, stat.language_wanted) == ("ar", True)


async def test_when_both_are_free_the_speaker_gets_every_booking_that_asked(
    running: Running,
) -> None:
    agenda = await make_agenda(running, (8, 18), (8, 18))
    http = await _arabic_browser(running)
    try:
        matched, _page = await _slots(running, http, agenda, language_wanted="1")
        # Three slots hours apart (a visit and its buffer never overlap the next), each free
        # with both volunteers.
        chosen = [t for t in matched if datetime.fromtimestamp(t, PARIS).minute == 0][:9:3]
        assert len(chosen) == 3
        booked = [await _book(running, http, agenda, t, language_wanted="1") for t in chosen]
    finally:
        await http.close()
    assert {a.volunteer_id for a in booked} == {agenda.arabic.id}


async def test_without_a_speaker_every_slot_is_offered_and_said_so(running: Running) -> None:
    agenda = await make_agenda(running, (8, 12), (14, 18))
    async with running.sessionmaker.begin() as db:
        await accounts.set_languages(db, await db.get_one(User, agenda.arabic.id), ["en"])
    http = await _arabic_browser(running)
    try:
        everything, _page = await _slots(running, http, agenda)
        offered, page = await _slots(running, http, agenda, language_wanted="1")
        assert offered == everything and NO_SPEAKER in page
        booked = await _book(running, http, agenda, offered[-1], language_wanted="1")
    finally:
        await http.close()
    assert (booked.language, booked.language_wanted) == ("ar", True)


async def test_french_pages_offer_no_box_and_ignore_a_forged_one(running: Running) -> None:
    agenda = await make_agenda(running, (8, 12), (14, 18))
    http = await browser_session()
    try:
        everything, page = await _slots(running, http, agenda)
        assert 'name="language_wanted"' not in page
        forged, _page = await _slots(running, http, agenda, language_wanted="1")
        assert forged == everything
        booked = await _book(running, http, agenda, everything[-1], language_wanted="1")
    finally:
        await http.close()
    assert (booked.language, booked.language_wanted) == ("fr", False)


async def test_the_waiting_list_keeps_the_language(running: Running) -> None:
    agenda = await make_agenda(running, (8, 12), (14, 18))
    http = await _arabic_browser(running)
    try:
        async with http.get(running.url("/code")) as resp:
            page = await resp.text()
        async with http.post(
            running.url("/rendez-vous/attente"),
            data={
                "csrf_token": csrf_from(page),
                "a": str(agenda.association_id),
                "motif": str(agenda.motif_id),
                "first_name": "Amina",
                "phone": "06 12 34 56 78",
            },
        ) as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await http.close()
    async with running.sessionmaker() as db:
        entry = await db.scalar(select(WaitlistEntry))
        stat = await db.scalar(
            select(StatEvent).where(StatEvent.kind == EventKind.WAITLIST_JOINED.value)
        )
    assert entry is not None and entry.language == "ar"
    assert stat is not None and stat.language == "ar"


async def test_the_api_books_in_the_language_given(running: Running) -> None:
    agenda = await make_agenda(running, (8, 18), (8, 18))
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, referrer.user.id)
        _row, token = await api_tokens.create_token(db, user, "logiciel", ["bookings:write"])
    start = (utcnow().astimezone(PARIS) + timedelta(days=2)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    body: dict[str, Any] = {
        "motif_id": agenda.motif_id,
        "starts_at": start.isoformat(),
        "first_name": "Amina",
        "phone": "06 12 34 56 78",
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            running.url("/api/v1/bookings"), json={**body, "language": "xx"}, headers=headers
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_language"
        async with http.post(
            running.url("/api/v1/bookings"),
            json={**body, "language": "ar", "language_wanted": True},
            headers=headers,
        ) as resp:
            assert resp.status == 201, await resp.text()
        later = {**body, "starts_at": (start + timedelta(hours=2)).isoformat()}
        async with http.post(running.url("/api/v1/bookings"), json=later, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
    async with running.sessionmaker() as db:
        rows = list(await db.scalars(select(Appointment).order_by(Appointment.starts_at)))
    assert [(a.language, a.language_wanted) for a in rows] == [("ar", True), ("fr", False)]
    assert rows[0].volunteer_id == agenda.arabic.id
