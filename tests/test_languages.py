"""The language of a helped person's pages: chosen from the browser, then by the switch, kept
in a cookie; staff pages stay French."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select

from server import i18n
from server.store.models import (
    AssistanceSession,
    CallbackRequest,
    CallbackStatus,
    OutboxMessage,
    Role,
)
from server.vault.retention import add_months
from tests.conftest import Account, Running, browser_session, login, make_account
from tests.test_callbacks import ask, make_request, post_form, reload, staff
from tests.test_callbacks import place as callbacks_place
from tests.test_handoff import end_assistance, file_sheet, join_as_beneficiary
from tests.test_vault_retention import make as make_vault
from tests.test_vault_retention import notices as vault_notices
from tests.test_vault_retention import purge as vault_purge
from tests.test_vault_retention import set_last_used


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "fr"),
        ("", "fr"),
        ("ar", "ar"),
        ("en-GB,en;q=0.9,fr;q=0.8", "en"),
        ("de-DE,de;q=0.9,uk;q=0.5,fr;q=0.4", "uk"),
        ("fa-IR", "fa-AF"),
        ("prs", "fa-AF"),
        ("fa-AF;q=0.2, es;q=0.3", "es"),
        ("fr;q=0, ro", "ro"),
        ("en;q=0", "fr"),
        ("*", "fr"),
        ("xx-YY, zz", "fr"),
        ("en;q=abc, es", "es"),
        ("ar;q=0.5;x=y", "ar"),
        (",,,;;;=", "fr"),
        ("a" * 5000, "fr"),
        ("de," * 100 + "en", "fr"),  # cut after 20 entries: a hostile header is not parsed whole
    ],
)
def test_accept_language_picks_our_best_language(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header).code == expected


def test_every_language_has_its_catalogue_name_and_direction() -> None:
    assert [language.code for language in i18n.LANGUAGES] == [
        "fr", "en", "ar", "fa-AF", "uk", "ro", "es"
    ]  # fmt: skip
    assert {language.code for language in i18n.LANGUAGES if language.rtl} == {"ar", "fa-AF"}
    assert i18n.language("FA_af") is i18n.BY_CODE["fa-AF"]
    assert i18n.language("de") is None
    assert i18n.stored_language(None) is i18n.FRENCH


def test_a_message_is_written_in_the_language_of_its_block() -> None:
    with i18n.use_language("en"):
        assert i18n.gettext("Langue") == "Language"
        with i18n.use_language("ar"):
            assert i18n.gettext("Langue") == "اللغة"
        assert i18n.current().code == "en"
    assert i18n.gettext("Langue") == "Langue"


def _html_lang(html: str) -> tuple[str, str]:
    match = re.search(r'<html lang="([^"]+)" dir="(ltr|rtl)">', html)
    assert match, html[:300]
    return match.group(1), match.group(2)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # pages only: one database
async def test_a_first_visit_follows_the_browser_and_the_switch_keeps_the_choice(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/"), headers={"Accept-Language": "ar,fr;q=0.5"}) as resp:
        html = await resp.text()
        assert resp.headers["Content-Language"] == "ar"
        assert "Accept-Language" in resp.headers["Vary"]
    assert _html_lang(html) == ("ar", "rtl")
    # The switch: every language named in itself, a link back to this page.
    for language in i18n.LANGUAGES:
        assert f'lang="{language.code}" hreflang="{language.code}"' in html
        assert f">{language.name}</a>" in html
    assert 'href="/langue/uk?next=/"' in html

    async with http.get(
        running.url("/langue/uk"), params={"next": "/aide"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/aide"
        assert "Max-Age=31536000" in resp.headers["Set-Cookie"]
    # The cookie wins over the browser's preference, page after page.
    await make_account(running, "v@example.org", Role.VOLUNTEER)  # the association exists
    for path in ("/aide", "/code", "/rendez-vous", "/rappel", "/coffre"):
        async with http.get(running.url(path), headers={"Accept-Language": "ar"}) as resp:
            assert resp.status == 200, path
            assert _html_lang(await resp.text()) == ("uk", "ltr"), path


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "aide", "/a\r\nX: y"]
)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # pages only: one database
async def test_the_switch_never_leaves_the_site(
    running: Running, http: aiohttp.ClientSession, target: str
) -> None:
    async with http.get(
        running.url("/langue/es"), params={"next": target}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # pages only: one database
async def test_an_unknown_language_is_a_plain_not_found(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/langue/xx"), allow_redirects=False) as resp:
        assert resp.status == 404
        assert "Set-Cookie" not in resp.headers or "lang=" not in resp.headers["Set-Cookie"]


async def test_staff_pages_stay_french_whatever_the_browser_says(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    async with http.get(running.url("/langue/ar"), allow_redirects=False):
        pass
    for path in ("/tableau", "/file", "/login"):
        async with http.get(running.url(path), headers={"Accept-Language": "ar"}) as resp:
            html = await resp.text()
            assert _html_lang(html) == ("fr", "ltr"), path
            assert "Content-Language" not in resp.headers
            assert 'class="lang-switch"' not in html


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # pages only: one database
async def test_an_unknown_address_answers_in_the_persons_language(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/nowhere"), headers={"Accept-Language": "en"}) as resp:
        assert resp.status == 404
        assert _html_lang(await resp.text()) == ("en", "ltr")


async def _outbox(running: Running) -> list[OutboxMessage]:
    async with running.sessionmaker() as db:
        return list(await db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_a_call_back_is_acknowledged_and_its_visio_link_sent_in_the_persons_language(
    running: Running, http: aiohttp.ClientSession
) -> None:
    association_id, _motif = await callbacks_place(running)
    async with http.get(running.url("/langue/es"), allow_redirects=False):
        pass
    status, _page, _url = await ask(http, running, association_id)
    assert status == 200
    async with running.sessionmaker() as db:
        request = (await db.scalars(select(CallbackRequest))).one()
    assert request.language == "es"
    with i18n.use_language("es"):
        acknowledged = i18n.gettext("Votre demande de rappel")
        waiting = i18n.gettext("Votre lien pour l'assistance en visio")
    assert acknowledged != "Votre demande de rappel"
    assert [m.subject for m in await _outbox(running) if m.channel == "email"] == [acknowledged]
    sms = [m.body for m in await _outbox(running) if m.channel == "sms"]
    assert sms and "demande de rappel enregistrée" not in sms[0]

    volunteer = await staff(running, "benevole@example.org")
    try:
        resp = await post_form(volunteer, running, "/rappels", f"/rappels/{request.id}/prendre")
        assert resp.status == 303
        resp = await post_form(
            volunteer, running, f"/rappels/{request.id}", f"/rappels/{request.id}/visio"
        )
        assert resp.status == 303
    finally:
        await volunteer.close()
    subjects = [m.subject for m in await _outbox(running) if m.channel == "email"]
    assert subjects[-1] == waiting
    async with running.sessionmaker() as db:
        session = await db.get_one(
            AssistanceSession, (await reload(running, request.id)).assistance_session_id
        )
    assert session.language == "es"  # the sheet's link will be written in Spanish too


async def test_the_sheet_link_is_sent_in_the_language_of_the_persons_room(
    running: Running, volunteer: Account
) -> None:
    request = await make_request(running, volunteer.user.association_id)
    async with running.sessionmaker.begin() as db:
        stored = await db.get_one(CallbackRequest, request.id)
        stored.language = "uk"
        stored.status = CallbackStatus.CLAIMED
        stored.claimed_by_id = volunteer.user.id
    http = await browser_session()
    try:
        await login(http, running, volunteer)
        resp = await post_form(
            http, running, f"/rappels/{request.id}", f"/rappels/{request.id}/visio"
        )
        assert resp.status == 303
        session_id = resp.headers["Location"].rsplit("/", 1)[-1]
        beneficiary = await browser_session()
        try:
            # The person's page is in Ukrainian: their socket says so, the session keeps it.
            async with beneficiary.get(running.url("/langue/uk"), allow_redirects=False):
                pass
            await join_as_beneficiary(beneficiary, running, session_id)
        finally:
            await beneficiary.close()
        await end_assistance(http, running, session_id)
        status, _page = await file_sheet(http, running, f"/assistance/{session_id}/fiche")
        assert status in (200, 303)
    finally:
        await http.close()
    with i18n.use_language("uk"):
        sms = i18n.gettext(
            "%(association)s : ce qui a été fait et la suite, sur votre fiche : %(link)s"
        )
    said = max(re.split(r"%\(\w+\)s", sms), key=len).strip()
    assert "fiche" not in said and said in (await _outbox(running))[-1].body


async def test_a_vaults_retention_notice_is_written_in_the_language_its_contact_was_given_in(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/langue/ro"), allow_redirects=False):
        pass
    made = await make_vault(running, http)  # its contact given on a Romanian page
    last_used = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    await set_last_used(running, made, last_used)
    deadline = add_months(last_used, running.settings.vault_retention_months)
    report = await vault_purge(running, deadline - timedelta(days=29))
    assert report.counts["vault_notices"] == 1
    with i18n.use_language("ro"):
        subject = i18n.gettext("Votre coffre-fort numérique sera bientôt supprimé")
    assert subject != "Votre coffre-fort numérique sera bientôt supprimé"
    assert [m.subject for m in await vault_notices(running) if m.channel == "email"] == [subject]
