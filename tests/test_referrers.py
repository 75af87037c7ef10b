"""Referrers over HTTP on the real server: invitation, own bookings only, no staff pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy import select

from server.store.models import Partner, Role, User
from tests.conftest import Account, Running, browser_session, csrf_from, login, make_account
from tests.test_agenda import awake_zone, book, open_all_week, page, post, quarter_before

STAFF_PAGES = ("/agenda", "/disponibilites", "/motifs", "/referents", "/benevoles")


async def test_an_invited_referrer_sets_a_password_and_sees_only_their_own_bookings(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, coordinator: Account
) -> None:
    await login(http, running, coordinator)
    status, text = await page(http, running, "/referents")
    assert status == 200
    token = csrf_from(text)
    form = {"name": "Inès Martin", "email": "ines@ccas.example.org", "partner": "CCAS de Lyon"}
    status, text, _location = await post(
        http, running, "/referents", {**form, "partner": ""}, token
    )
    assert status == 400 and "Le nom de la structure est obligatoire" in text
    status, text, _location = await post(http, running, "/referents", form, token)
    assert status == 200 and "Compte créé pour Inès Martin" in text
    match = re.search(r'value="(http[^"]+/invitation/[^"]+)"', text)
    assert match
    invitation = match.group(1).removeprefix(running.base_url)
    # A second referrer of the same structure (written differently) shares its partner row.
    second = {"name": "Paul", "email": "paul@ccas.example.org", "partner": " ccas de  lyon "}
    status, _text, _location = await post(http, running, "/referents", second, token)
    assert status == 200
    async with running.sessionmaker() as db:
        partners = (await db.scalars(select(Partner))).all()
        assert [p.name for p in partners] == ["CCAS de Lyon"]
        ines = await db.scalar(select(User).where(User.email == "ines@ccas.example.org"))
        assert ines is not None and ines.role == Role.REFERRER
        assert ines.partner_id == partners[0].id
    _status, text = await page(http, running, "/referents")
    assert "CCAS de Lyon" in text and "invitation envoyée" in text

    async with await browser_session() as referrer_http:
        status, text = await page(referrer_http, running, invitation)
        assert status == 200
        password = "un mot de passe assez long"
        status, _text, _location = await post(
            referrer_http,
            running,
            invitation,
            {"password": password, "password_confirm": password},
            csrf_from(text),
        )
        assert status == 303
        ines_account = Account(ines, "ines@ccas.example.org", password)
        await login(referrer_http, running, ines_account)

        now = datetime.now(UTC)
        tz = awake_zone(now)
        await open_all_week(running, volunteer, tz)
        other = await make_account(running, "autre.referent@example.org", Role.REFERRER)
        tomorrow = quarter_before(now, 0) + timedelta(days=1)
        await book(running, tomorrow, "Awa", now=now, referrer=ines)
        await book(running, tomorrow + timedelta(hours=1), "Bintou", now=now, referrer=other.user)
        await book(running, tomorrow + timedelta(hours=2), "Chloé", now=now)

        status, text = await page(referrer_http, running, "/mes-reservations")
        assert status == 200
        assert "Awa" in text and "Bintou" not in text and "Chloé" not in text
        assert "Prévu" in text and 'href="/rendez-vous"' in text
        assert "Prendre un rendez-vous pour une personne" in text
        assert "Mes réservations" in text and 'href="/agenda"' not in text  # the referrer's menu

    # Deactivated, the referrer can no longer log in.
    status, _text, _location = await post(
        http, running, f"/referents/{ines.id}/desactiver", {}, token
    )
    assert status == 303
    async with await browser_session() as again:
        async with again.get(running.url("/login")) as resp:
            login_token = csrf_from(await resp.text())
        async with again.post(
            running.url("/login"),
            data={"csrf_token": login_token, "email": ines_account.email, "password": password},
            allow_redirects=False,
        ) as resp:
            assert resp.status != 303
    status, _text, _location = await post(
        http, running, f"/referents/{volunteer.user.id}/desactiver", {}, token
    )
    assert status == 404  # /referents only manages referrers


async def test_a_referrer_is_refused_on_the_staff_pages(
    running: Running, http: aiohttp.ClientSession
) -> None:
    referrer = await make_account(running, "ines@ccas.example.org", Role.REFERRER)
    await login(http, running, referrer)
    status, text = await page(http, running, "/mes-reservations")
    assert status == 200
    token = csrf_from(text)
    for path in STAFF_PAGES:
        status, text = await page(http, running, path)
        assert status == 403, path
    some_appointment = "/agenda/00000000-0000-4000-8000-000000000000/demarrer"
    for path in ("/disponibilites", "/motifs", "/referents", some_appointment):
        status, _text, _location = await post(http, running, path, {}, token)
        assert status == 403, path


async def test_volunteers_cannot_manage_referrers_nor_see_referrer_pages(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    for path in ("/referents", "/mes-reservations"):
        status, _text = await page(http, running, path)
        assert status == 403, path


async def test_a_referrer_cannot_open_assistances(
    running: Running, http: aiohttp.ClientSession
) -> None:
    referrer = await make_account(running, "ines@ccas.example.org", Role.REFERRER)
    await login(http, running, referrer)
    status, text = await page(http, running, "/mes-reservations")
    status, _text = await page(http, running, "/tableau")
    assert status == 403
    status, _text, _location = await post(http, running, "/assistance", {}, csrf_from(text))
    assert status == 403
