"""Flooding the public forms (issue 11, defect 4) against the real server and database: live
queue places and bookings capped per client (IPv4 address or IPv6 /64, through the proxy's
X-Forwarded-For) and per phone, the volunteers' bulk "retirer" over the socket and as a form,
and the proof of work (ALTCHA) asked once a family's global budget is spent: refused without a
solution, accepted with one, refused when replayed; the widget's files served from our origin.
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from html import unescape
from typing import Any

import aiohttp
import pytest
from altcha import Challenge, Payload, solve_challenge
from sqlalchemy import select, update

from server.dropin import places as dropin
from server.metrics import REGISTRY
from server.settings import Settings
from server.store.models import (
    Appointment,
    AppointmentStatus,
    QueueEntry,
    QueueStatus,
    UsedChallenge,
    utcnow,
)
from signaling.dropin import NAMESPACE
from tests.conftest import Account, Running, browser_session, csrf_from, login
from tests.peers import connect_peer
from tests.test_booking_pages import Place, fields, make_place, slot_times
from tests.test_dropin import join_directly, open_all_week, queue_cookie, volunteer_peer

PREFIX = "2001:db8:4:7"  # one home's /64
CHALLENGE_RE = re.compile(r'<script type="application/json" id="vp-pow">(.*?)</script>', re.S)


SMALL_BUDGETS = {
    "budget_queue_joins": "1/hour",
    "budget_bookings": "1/hour",
    "budget_callback_requests": "1/hour",
}
# The slower mode starts after one join, one booking and one call-back request.
under_pressure = pytest.mark.parametrize("budgets", [SMALL_BUDGETS], ids=["pressure"])


@pytest.fixture
def budgets() -> dict[str, str]:
    """Global budgets of the app under test: the defaults (tests under pressure override it)."""
    return {}


@pytest.fixture
def settings(settings: Settings, budgets: dict[str, str]) -> Settings:
    """Behind a trusted proxy (addresses come from X-Forwarded-For), with small proofs of work
    so that the tests solve them in a moment."""
    return settings.model_copy(update={"trust_proxy": True, "pow_max_counter": 20, **budgets})


def text_of(page: str) -> str:
    return " ".join(unescape(page).split())


async def join_from(
    running: Running, http: aiohttp.ClientSession, address: str, **fields: str
) -> tuple[int, str]:
    """One browser at ``address`` fills /aide and sends it; (status, page text)."""
    headers = {"X-Forwarded-For": address}
    async with http.get(running.url("/aide"), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        token = csrf_from(await resp.text())
    data = {"csrf_token": token, "motif": "", "first_name": "", "postal_code": "", **fields}
    async with http.post(
        running.url("/aide"), data=data, headers=headers, allow_redirects=False
    ) as resp:
        return resp.status, text_of(await resp.text())


def counted(name: str, **labels: str) -> float:
    """A counter's value in this process (the tests compare before and after)."""
    return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0


def challenge_in(page: str) -> dict[str, Any]:
    """The proof-of-work challenge a page carries (fails if it has none)."""
    match = CHALLENGE_RE.search(page)
    assert match, "the page carries no proof-of-work challenge"
    challenge: dict[str, Any] = json.loads(unescape(match.group(1)))["challenge"]
    return challenge


def solved(challenge: dict[str, Any]) -> str:
    """The ALTCHA payload a browser would send for ``challenge``."""
    solution = solve_challenge(Challenge.from_dict(challenge))
    assert solution is not None
    return Payload(Challenge.from_dict(challenge), solution).to_base64()


async def live_places(running: Running) -> list[QueueEntry]:
    async with running.sessionmaker() as db:
        return list(
            await db.scalars(select(QueueEntry).where(QueueEntry.status == QueueStatus.WAITING))
        )


# -- Live places per client ------------------------------------------------------------------


async def test_one_ipv6_prefix_cannot_hold_more_places_than_the_cap(
    running: Running, volunteer: Account
) -> None:
    """Three browsers of one /64 (three addresses): two places, the third is refused with a
    French message; another /64 and an IPv4 address still get in; a place given up frees one."""
    await open_all_week(running, volunteer)
    browsers = [await browser_session() for _ in range(5)]
    try:
        first = await join_from(running, browsers[0], f"{PREFIX}::1")
        second = await join_from(running, browsers[1], f"{PREFIX}:aaaa::2")
        third = await join_from(running, browsers[2], f"{PREFIX}:ffff:ffff:ffff:3")
        assert first[0] == 303 and second[0] == 303
        assert third[0] == 429, third
        assert counted("permanence_client_cap_refused", cap="too_many_places") >= 1
        assert "Depuis cette connexion, 2 personnes attendent déjà" in third[1]
        other = await join_from(running, browsers[3], "2001:db8:4:8::1")
        ipv4 = await join_from(running, browsers[4], "203.0.113.7")
        assert other[0] == 303 and ipv4[0] == 303
        rows = await live_places(running)
        assert len(rows) == 4
        # Only a keyed hash of the client is kept: no address in the row.
        hashes = {row.client_key_hash for row in rows}
        assert len(hashes) == 3 and all(h and len(h) == 64 for h in hashes)
        assert not any(PREFIX in (h or "") or "203.0.113" in (h or "") for h in hashes)

        # The first gives up their place: the third gets in.
        async with browsers[0].get(running.url("/aide/attente")) as resp:
            token = csrf_from(await resp.text())
        async with browsers[0].post(
            running.url("/aide/quitter"), data={"csrf_token": token}
        ) as resp:
            assert resp.status == 200
        again = await join_from(running, browsers[2], f"{PREFIX}:ffff:ffff:ffff:3")
        assert again[0] == 303, again
    finally:
        for http in browsers:
            await http.close()


async def test_a_person_taken_frees_their_place_in_the_count(
    running: Running, volunteer: Account
) -> None:
    """The cap counts people waiting: once a volunteer takes one, the next of the same
    connection (a family, a France Services office) may wait."""
    await open_all_week(running, volunteer)
    browsers = [await browser_session() for _ in range(3)]
    try:
        assert (await join_from(running, browsers[0], "198.51.100.9"))[0] == 303
        assert (await join_from(running, browsers[1], "198.51.100.9"))[0] == 303
        status, page = await join_from(running, browsers[2], "198.51.100.9")
        assert status == 429 and "attendent déjà" in page
        async with running.sessionmaker.begin() as db:
            assert await dropin.take_next(db, running.settings, volunteer.user, utcnow())
        assert (await join_from(running, browsers[2], "198.51.100.9"))[0] == 303
    finally:
        for http in browsers:
            await http.close()


# -- Bulk "retirer" ---------------------------------------------------------------------------


async def test_volunteer_removes_several_people_over_the_socket(
    running: Running, volunteer: Account
) -> None:
    """`remove` with ids takes exactly those out (their page is told `removed`), `remove` with
    minutes takes everyone who joined since; someone being helped stays with their volunteer."""
    await open_all_week(running, volunteer)
    association = volunteer.user.association_id
    old = await join_directly(running, association, 2)
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(QueueEntry)
            .where(QueueEntry.id.in_(old))
            .values(queued_at=utcnow() - timedelta(hours=1))
        )
    page_http = await browser_session()
    peer, http = await volunteer_peer(running, volunteer)
    try:
        status, _page = await join_from(running, page_http, "192.0.2.10")
        assert status == 303
        waiting = await connect_peer(
            running, cookie=queue_cookie(page_http, running), welcome=False, namespace=NAMESPACE
        )
        await waiting.expect("position")
        recent = await join_directly(running, association, 3)
        async with running.sessionmaker.begin() as db:
            helped = await dropin.take(db, running.settings, volunteer.user, recent[0], utcnow())
        mine = [e.id for e in await live_places(running) if e.id not in old + recent]
        assert len(mine) == 1

        answer = await peer.call("remove", {"entry_ids": [mine[0], recent[1]]})
        assert answer == {"ok": True, "removed": 2}
        assert await waiting.expect("removed") == {"reason": "removed"}

        answer = await peer.call("remove", {"since_minutes": 30, "reason": "gone"})
        assert answer == {"ok": True, "removed": 1}  # recent[2]; recent[0] is being helped
        async with running.sessionmaker() as db:
            rows = {e.id: e for e in await db.scalars(select(QueueEntry))}
        assert rows[mine[0]].status == QueueStatus.GONE and rows[mine[0]].end_reason == "removed"
        assert rows[recent[1]].end_reason == "removed"
        assert rows[recent[2]].status == QueueStatus.GONE and rows[recent[2]].end_reason == "gone"
        assert rows[helped.id].status == QueueStatus.TAKEN
        assert all(rows[i].status == QueueStatus.WAITING for i in old)

        # Malformed or empty requests are refused with a clear code, never a crash.
        assert (await peer.call("remove", {}))["code"] == "malformed"
        bad = await peer.call("remove", {"entry_ids": ["x"], "since_minutes": 5})
        assert bad["code"] == "malformed"
        assert (await peer.call("remove", {"since_minutes": 0}))["code"] == "malformed"
        # A waiting page may not remove anyone.
        assert (await waiting.call("remove", {"since_minutes": 5}))["code"] == "forbidden"
        await waiting.close()
    finally:
        await peer.close()
        await http.close()
        await page_http.close()


async def test_volunteer_removes_ticked_people_and_the_last_minutes_with_the_form(
    running: Running, volunteer: Account, http: aiohttp.ClientSession
) -> None:
    """Without JavaScript: the ticked rows, then "everyone of the last N minutes"."""
    await open_all_week(running, volunteer)
    ids = await join_directly(running, volunteer.user.association_id, 4)
    await login(http, running, volunteer)
    async with http.get(running.url("/file")) as resp:
        page = await resp.text()
    assert 'form="bulk-remove"' in page and 'id="bulk-remove"' in page
    token = csrf_from(page)
    data = aiohttp.FormData()
    for key, value in (
        ("csrf_token", token),
        ("reason", "removed"),
        ("scope", "selected"),
        ("entry_id", ids[0]),
        ("entry_id", ids[2]),
        ("since_minutes", "10"),
    ):
        data.add_field(key, value)
    async with http.post(running.url("/file/retirer"), data=data, allow_redirects=False) as resp:
        assert resp.status == 303
    left = {e.id for e in await live_places(running)}
    assert left == {ids[1], ids[3]}

    form = {"csrf_token": token, "reason": "removed", "scope": "recent", "since_minutes": "²"}
    async with http.post(running.url("/file/retirer"), data=form) as resp:
        assert resp.status == 400
        assert "entre 1 et 1440" in text_of(await resp.text())
    form["since_minutes"] = "5"
    async with http.post(running.url("/file/retirer"), data=form, allow_redirects=False) as resp:
        assert resp.status == 303
    assert await live_places(running) == []
    # Nothing ticked: said plainly.
    async with http.post(
        running.url("/file/retirer"), data={"csrf_token": token, "scope": "selected"}
    ) as resp:
        assert resp.status == 400
        assert "Cochez les personnes à retirer." in text_of(await resp.text())


async def test_only_volunteers_remove(running: Running, http: aiohttp.ClientSession) -> None:
    """Anonymous visitors are sent to the login page, whatever they post."""
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/file/retirer"),
        data={"csrf_token": token, "scope": "recent", "since_minutes": "60"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303 and "/login" in resp.headers["Location"]


# -- Proof of work under pressure -------------------------------------------------------------


@under_pressure
async def test_under_pressure_joining_needs_a_fresh_proof_of_work(
    running: Running, volunteer: Account
) -> None:
    """Once the queue's budget is spent: no solution → 400 with a French explanation and a
    challenge; a valid solution → in; the same solution again → refused; a forged one too."""
    await open_all_week(running, volunteer)
    replays = counted("permanence_pow_checked", family="queue_joins", result="pow_replayed")
    browsers = [await browser_session() for _ in range(5)]
    try:
        # While the budget lasts the page carries no widget (nothing more to load on 3G).
        async with browsers[0].get(running.url("/aide")) as resp:
            assert "altcha" not in (await resp.text()).lower()
        # The budget is one join an hour: the first spends it.
        first = await join_from(running, browsers[0], "192.0.2.1")
        assert first[0] == 303
        async with browsers[1].get(running.url("/aide")) as resp:
            page = await resp.text()
        challenge = challenge_in(page)
        assert "<noscript>" in page and "il lui faut JavaScript" in text_of(page)
        assert '<altcha-widget id="pow-widget" name="altcha">' in page

        status, page = await join_from(running, browsers[1], "192.0.2.2")
        assert status == 400
        assert "petite vérification automatique" in page
        payload = solved(challenge_in(page))

        status, page = await join_from(running, browsers[2], "192.0.2.3", altcha=payload)
        assert status == 303, page
        # The same solution from another browser: refused, said in French.
        status, page = await join_from(running, browsers[3], "192.0.2.4", altcha=payload)
        assert status == 400 and "Cette vérification a déjà servi" in page
        after = counted("permanence_pow_checked", family="queue_joins", result="pow_replayed")
        assert after == replays + 1
        # Forged: a solution of another key, garbage, or a tampered challenge.
        tampered = json.loads(base64.b64decode(solved(challenge)))
        tampered["challenge"]["parameters"]["cost"] = 1
        for forged in (
            "garbage",
            base64.b64encode(b"[1, 2]").decode(),
            base64.b64encode(json.dumps(tampered).encode()).decode(),
            "A" * 5000,
        ):
            status, page = await join_from(running, browsers[4], "192.0.2.5", altcha=forged)
            assert status == 400 and "n'a pas marché ou a expiré" in page, forged[:40]
        async with running.sessionmaker() as db:
            used = list(await db.scalars(select(UsedChallenge)))
        assert len(used) == 1
    finally:
        for http in browsers:
            await http.close()


async def test_the_widget_files_come_from_our_origin_gzipped(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The ALTCHA widget's script, stylesheet and Worker (npm `altcha`, external build) are
    served by the app itself, compressed for 3G, like the Socket.IO client; no other file of
    the package is."""
    for path, content_type in (
        ("/static/vendor/altcha/altcha.min.js", "text/javascript"),
        ("/static/vendor/altcha/altcha.css", "text/css"),
        ("/static/vendor/altcha/pbkdf2.js", "text/javascript"),
        ("/static/vendor/socket.io.esm.min.js", "text/javascript"),
    ):
        async with http.get(
            running.url(path), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as resp:
            assert resp.status == 200, path
            assert resp.content_type == content_type, path
            assert resp.headers.get("Content-Encoding") == "gzip", path
    for path in ("/static/vendor/altcha/altcha.js", "/static/vendor/altcha/../package.json"):
        async with http.get(running.url(path)) as resp:
            assert resp.status == 404, path


@under_pressure
async def test_under_pressure_a_call_back_request_needs_a_proof_of_work(
    running: Running, volunteer: Account, http: aiohttp.ClientSession
) -> None:
    """The call-back form: refused without a solution (the phone's daily count untouched),
    accepted with one."""
    second = await browser_session()
    try:
        for index, client in enumerate((http, second)):
            async with client.get(running.url("/rappel")) as resp:
                page = await resp.text()
            form = {
                "csrf_token": csrf_from(page),
                "phone": f"06 12 34 56 7{index}",
                "first_name": "Awa",
                "windows": "morning",
            }
            async with client.post(running.url("/rappel"), data=form) as resp:
                status, page = resp.status, text_of(await resp.text())
            if index == 0:
                assert status == 200, page  # the budget was not spent yet
                continue
            assert status == 400 and "petite vérification automatique" in page
            form["altcha"] = solved(challenge_in(page))
            async with client.post(running.url("/rappel"), data=form) as resp:
                assert resp.status == 200, await resp.text()
                assert "/rappel/annuler/" in str(resp.url)
    finally:
        await second.close()


# -- Bookings per client and per phone --------------------------------------------------------


async def book_from(
    http: aiohttp.ClientSession,
    running: Running,
    place: Place,
    t: int,
    address: str,
    **values: str,
) -> tuple[int, str]:
    """One browser at ``address`` opens the booking form of slot ``t`` and sends it."""
    headers = {"X-Forwarded-For": address}
    async with http.get(
        running.url(f"/rendez-vous/motif/{place.motif_id}/reserver"),
        params={"a": str(place.association_id), "t": str(t), "tz": "Europe/Paris"},
        headers=headers,
    ) as resp:
        assert resp.status == 200
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/rendez-vous/reserver"),
        data=fields(place, t, token, **values),
        headers=headers,
    ) as resp:
        return resp.status, text_of(await resp.text())


def spaced(times: list[int], gap: int = 3 * 3600) -> list[int]:
    """Slots far enough apart that one volunteer can take them all."""
    chosen: list[int] = []
    for t in sorted(times):
        if not chosen or t - chosen[-1] >= gap:
            chosen.append(t)
    return chosen


async def test_public_bookings_are_capped_per_client_and_per_phone(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """A script booking slot after slot with fake names from one /64 stops at
    BOOKING_MAX_PER_CLIENT; one phone stops at BOOKING_MAX_PER_PHONE from any address; a
    cancelled booking frees its place in the count."""
    place = await make_place(running, volunteers=3)
    settings = running.settings
    times = spaced(await slot_times(http, running, place))
    assert len(times) >= 12
    script = [
        await book_from(
            http,
            running,
            place,
            t,
            f"{PREFIX}::{index + 1:x}",
            first_name="Faux" + "abcdefghij"[index],
            phone=f"06 12 34 56 {index:02d}",
            email="",
        )
        for index, t in enumerate(times[: settings.booking_max_per_client + 1])
    ]
    assert [status for status, _ in script[:-1]] == [200] * settings.booking_max_per_client
    status, page = script[-1]
    assert status == 429, page
    assert "Depuis cette connexion, 6 rendez-vous sont déjà pris" in page
    async with running.sessionmaker() as db:
        rows = list(await db.scalars(select(Appointment)))
    assert len(rows) == settings.booking_max_per_client
    assert all(row.client_key_hash and len(row.client_key_hash) == 64 for row in rows)

    # One phone from several addresses.
    later = times[settings.booking_max_per_client + 1 :]
    same_phone = [
        await book_from(http, running, place, t, f"198.51.100.{index + 1}", phone="06 98 76 54 32")
        for index, t in enumerate(later[: settings.booking_max_per_phone + 1])
    ]
    assert [status for status, _ in same_phone[:-1]] == [200] * settings.booking_max_per_phone
    status, page = same_phone[-1]
    assert status == 429 and "Ce numéro a déjà 3 rendez-vous à venir" in page, page

    # A cancelled appointment no longer counts.
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(Appointment)
            .where(Appointment.phone == "+33698765432")
            .values(status=AppointmentStatus.CANCELLED)
        )
    status, page = await book_from(
        http, running, place, later[-1], "198.51.100.99", phone="06 98 76 54 32"
    )
    assert status == 200, page


@under_pressure
async def test_under_pressure_booking_needs_a_proof_of_work(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Past the bookings' budget the form carries a challenge; without its solution the
    booking is refused (nothing booked), with it the booking is made."""
    place = await make_place(running, volunteers=1)
    times = spaced(await slot_times(http, running, place))
    assert (await book_from(http, running, place, times[0], "192.0.2.1"))[0] == 200
    status, page = await book_from(http, running, place, times[1], "192.0.2.2", phone="0611111111")
    assert status == 400 and "petite vérification automatique" in page
    async with running.sessionmaker() as db:
        assert len(list(await db.scalars(select(Appointment)))) == 1
    status, page = await book_from(
        http,
        running,
        place,
        times[1],
        "192.0.2.2",
        phone="0611111111",
        altcha=solved(challenge_in(page)),
    )
    assert status == 200, page
    async with running.sessionmaker() as db:
        assert len(list(await db.scalars(select(Appointment)))) == 2
