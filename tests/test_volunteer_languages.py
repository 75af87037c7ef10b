"""Volunteers declare the languages they speak on `/profil` (real server, SQLite and
PostgreSQL): saved through the CSRF-checked form, a bad code refused with nothing stored, other
roles and anonymous visitors refused, the coordinator's list showing them."""

from __future__ import annotations

import html

import aiohttp
import pytest

from server import accounts, i18n
from server.accounts import AccountError
from server.store.models import Role, User
from tests.conftest import Account, Running, browser_session, csrf_from, login, make_account


async def spoken(running: Running, account: Account) -> list[str]:
    async with running.sessionmaker() as db:
        return await accounts.languages_of(db, account.user.id)


async def _profile(http: aiohttp.ClientSession, running: Running) -> str:
    async with http.get(running.url("/profil")) as resp:
        assert resp.status == 200
        return await resp.text()


async def _save(
    http: aiohttp.ClientSession, running: Running, codes: list[str], token: str | None = None
) -> aiohttp.ClientResponse:
    if token is None:
        token = csrf_from(await _profile(http, running))
    data = [("csrf_token", token), *(("languages", code) for code in codes)]
    async with http.post(running.url("/profil"), data=data, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def test_a_volunteer_saves_the_languages_they_speak(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    page = html.unescape(await _profile(http, running))
    # Every language but French, by its French name and its own.
    for label in ("Anglais (English)", "Arabe (العربية)", "Dari (دری)", "Ukrainien (Українська)"):
        assert label in page
    assert "Français" not in page.split('id="profile-form"')[1]
    assert 'href="/profil"' in page  # the staff menu's "Mon profil"
    resp = await _save(http, running, ["ar", "en"])
    assert resp.status == 303 and resp.headers["Location"].startswith("/profil")
    assert await spoken(running, volunteer) == ["en", "ar"]
    page = await _profile(http, running)
    assert 'value="ar" checked' in page and 'value="es" checked' not in page
    async with http.get(running.url(resp.headers["Location"])) as saved:
        assert "Vos langues sont enregistrées" in html.unescape(await saved.text())
    # Ticking nothing clears them.
    assert (await _save(http, running, [])).status == 303
    assert await spoken(running, volunteer) == []


@pytest.mark.parametrize("bad", ["xx", "fr", "ar-" + "x" * 40])
async def test_an_unknown_language_is_refused_and_nothing_is_stored(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, bad: str
) -> None:
    await login(http, running, volunteer)
    await _save(http, running, ["uk"])
    token = csrf_from(await _profile(http, running))
    async with http.post(
        running.url("/profil"),
        data=[("csrf_token", token), ("languages", "ar"), ("languages", bad)],
    ) as resp:
        assert resp.status == 400
        assert "Cette langue n&#39;est pas dans la liste." in await resp.text()
    assert await spoken(running, volunteer) == ["uk"]


async def test_saving_needs_the_csrf_token(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    await _profile(http, running)
    assert (await _save(http, running, ["ar"], token="forged")).status == 403
    async with http.post(running.url("/profil"), data={"languages": "ar"}) as resp:
        assert resp.status == 403
    assert await spoken(running, volunteer) == []


async def test_referrers_and_anonymous_visitors_have_no_profile(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    async with http.get(running.url("/profil"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    async with http.post(
        running.url("/profil"), data={"languages": "ar"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    other = await browser_session()
    try:
        await login(other, running, referrer)
        async with other.get(running.url("/profil")) as resp:
            assert resp.status == 403
        async with other.get(running.url("/mes-reservations")) as resp:
            assert 'href="/profil"' not in await resp.text()
        async with other.get(running.url("/code")) as resp:
            token = csrf_from(await resp.text())
        async with other.post(
            running.url("/profil"), data={"csrf_token": token, "languages": "ar"}
        ) as resp:
            assert resp.status == 403
    finally:
        await other.close()
    async with running.sessionmaker() as db:
        assert await accounts.languages_of(db, referrer.user.id) == []
        user = await db.get_one(User, referrer.user.id)
        with pytest.raises(AccountError):
            await accounts.set_languages(db, user, ["ar"])


async def test_the_coordinator_sees_each_volunteers_languages(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, coordinator: Account
) -> None:
    other = await make_account(running, "sami@example.org")
    async with running.sessionmaker.begin() as db:
        await accounts.set_languages(db, await db.get_one(User, volunteer.user.id), ["es", "ar"])
    await login(http, running, coordinator)
    async with http.get(running.url("/benevoles")) as resp:
        assert resp.status == 200
        page = html.unescape(await resp.text())
    assert "Langues parlées" in page
    assert '<td class="languages">arabe, espagnol</td>' in page
    row = page.split(other.email)[1].split("</tr>")[0]
    assert '<td class="languages">—</td>' in row


async def test_a_coordinator_declares_their_own_languages_too(
    running: Running, http: aiohttp.ClientSession, coordinator: Account
) -> None:
    await login(http, running, coordinator)
    assert (await _save(http, running, ["fa-AF"])).status == 303
    assert await spoken(running, coordinator) == ["fa-AF"]


def test_every_language_but_french_can_be_declared_by_its_french_name() -> None:
    """Every language of server/i18n.py but French is declared by its French name."""
    assert tuple(lang.code for lang in i18n.LANGUAGES if lang.code != "fr") == accounts.SPEAKABLE
    assert accounts.language_name("fa-AF") == "dari"
